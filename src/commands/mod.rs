//! Command handlers. Each takes typed options, validates all input before any I/O, and returns
//! the process exit code.

pub mod apply;
pub mod demo;
pub mod online;
pub mod pause;
pub mod plan;
pub mod route;
pub mod status;
pub mod switch;
pub mod verify;

use crate::error::exit_code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bars,
    Plain,
    Json,
}

/// Prints an error the way every command does and returns its documented exit code.
pub fn report(err: anyhow::Error) -> i32 {
    eprintln!("reshard: {err:#}");
    exit_code(&err)
}

/// Runs an async handler on a fresh runtime; commands that need no I/O never start one.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(anyhow::Error::new(e).context("starting the async runtime")),
    };
    crate::backend::closing::enable();
    let r = rt.block_on(f);
    rt.block_on(crate::backend::closing::close_all());
    match r {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

/// Like [`block_on`], for handlers whose success carries a value (such as "would start").
pub fn block_on_value<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))?;
    crate::backend::closing::enable();
    let r = rt.block_on(f);
    rt.block_on(crate::backend::closing::close_all());
    r
}

/// Opens the catalog for a command that acts on an existing job, refusing one that does not
/// exist (a mistyped URL must never create an empty catalog).
pub async fn open_existing(url: &str) -> anyhow::Result<crate::catalog::Catalog> {
    use crate::catalog::{Access, Catalog};
    let Some(ro) = Catalog::open(url, Access::ReadOnly).await? else {
        return Err(crate::error::InputError::one(format!(
            "--catalog: {} holds no jobs (it does not exist)",
            crate::shard_url::redact(url)
        ))
        .into());
    };
    ro.close().await;
    Catalog::open_rw(url).await
}
