//! `reshard status` and `reshard jobs`. Not implemented yet.

use super::Format;

#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub job: Option<String>,
    pub catalog: String,
    pub format: Format,
}

#[derive(Debug, Clone)]
pub struct JobsOptions {
    pub catalog: String,
    pub format: Format,
}

pub fn run(opts: StatusOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("status is not implemented yet"))
}

pub fn jobs(opts: JobsOptions) -> i32 {
    let _ = opts;
    super::report(anyhow::anyhow!("jobs is not implemented yet"))
}
