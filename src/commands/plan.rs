//! `reshard plan`. Not implemented yet.

use std::path::PathBuf;

use super::Format;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub from: PathBuf,
    pub to: PathBuf,
    pub output: Option<PathBuf>,
    pub format: Format,
    pub check: Option<PathBuf>,
}

pub fn run(opts: PlanOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("plan is not implemented yet"))
}
