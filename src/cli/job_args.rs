//! The options of the commands that act on a running job's moves: rollback, cancel, sync.
//! Each has its own group, so that `--help` lists only what the command uses.

use clap::Args;

use super::{CatalogArg, StepProgress};
use crate::commands;

#[derive(Args, Debug)]
#[command(
    after_help = "See docs/online.md for the lifecycle: apply -> dual_write -> complete, \
    or rollback/cancel."
)]
pub struct RollbackArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Longest time a move's keys stay fenced during the rollback (with a unit: 2s, 500ms, 1m30s)
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub max_fence: String,
    /// Roll back only this move (default: every flipped move)
    #[arg(long = "move", value_name = "ID")]
    pub move_id: Option<String>,
    /// When a `reshard worker` (or `reshard sync`) serves the job, record the request for it
    /// and return at once instead of waiting until it is carried out
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for a table lock by each statement that installs or removes triggers,
    /// logs and guards, or sets a fence (with a unit: 1s, 500ms); see `reshard apply --help`.
    /// Default: the value the job was started with (`apply --lock-timeout`), else 1s
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub progress: StepProgress,
}

#[derive(Args, Debug)]
#[command(
    after_help = "See docs/online.md for the lifecycle: apply -> dual_write -> complete, \
    or rollback/cancel."
)]
pub struct CancelArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// When a `reshard worker` (or `reshard sync`) serves the job, record the request for it
    /// and return at once instead of waiting until it is carried out
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for a table lock by each statement that removes triggers, logs and guards
    /// (with a unit: 1s, 500ms); see `reshard apply --help`. Default: the value the job was
    /// started with (`apply --lock-timeout`), else 1s
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub progress: StepProgress,
}

#[derive(Args, Debug)]
#[command(
    after_help = "See docs/online.md for the lifecycle: apply -> dual_write -> complete, \
    or rollback/cancel."
)]
pub struct SyncArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Longest wait for a table lock by each statement that sets a fence while serving a
    /// request (with a unit: 1s, 500ms); see `reshard apply --help`. Default: the value the job
    /// was started with (`apply --lock-timeout`), else 1s
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub progress: StepProgress,
}

impl From<RollbackArgs> for commands::online::JobOptions {
    fn from(a: RollbackArgs) -> Self {
        commands::online::JobOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            max_fence: a.max_fence,
            move_id: a.move_id,
            verify: true,
            lock_timeout: None,
            no_wait: a.no_wait,
            json: a.progress.json(),
        }
    }
}

impl From<CancelArgs> for commands::online::JobOptions {
    fn from(a: CancelArgs) -> Self {
        commands::online::JobOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            max_fence: "2s".into(),
            move_id: None,
            verify: true,
            lock_timeout: None,
            no_wait: a.no_wait,
            json: a.progress.json(),
        }
    }
}

impl From<SyncArgs> for commands::online::JobOptions {
    fn from(a: SyncArgs) -> Self {
        commands::online::JobOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            // A rollback asked of the sync process runs with the default bound: a request
            // records no bound of its own (as before sync had its own options).
            max_fence: "2s".into(),
            move_id: None,
            verify: true,
            lock_timeout: None,
            no_wait: false,
            json: a.progress.json(),
        }
    }
}
