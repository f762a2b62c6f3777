//! The sqlite backend. Not implemented yet.

use std::sync::Arc;

use anyhow::Result;

use super::Backend;

pub async fn connect(shard: &str, _url: &str) -> Result<Arc<dyn Backend>> {
    anyhow::bail!("shard {shard}: the sqlite backend is not implemented yet")
}
