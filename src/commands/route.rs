//! `reshard route --map`. Not implemented yet.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub map: PathBuf,
    pub keys: Vec<String>,
}

pub fn run(opts: RouteOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("route is not implemented yet"))
}
