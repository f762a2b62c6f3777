//! `reshard apply` and `reshard resume`. Not implemented yet.

use std::path::PathBuf;

use super::{Format, ProgressMode};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub plan: PathBuf,
    pub catalog: String,
    pub dry_run: bool,
    pub format: Format,
    pub batch_size: usize,
    pub parallel: usize,
    pub progress: ProgressMode,
    pub yes: bool,
    pub create_tables: bool,
    pub allow_existing: bool,
}

#[derive(Debug, Clone)]
pub struct ResumeOptions {
    pub job: Option<String>,
    pub catalog: String,
    pub progress: ProgressMode,
    pub parallel: Option<usize>,
}

pub fn run(opts: ApplyOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("apply is not implemented yet"))
}

pub fn resume(opts: ResumeOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("resume is not implemented yet"))
}
