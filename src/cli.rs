//! Command-line parsing. `main` turns these clap structs into the typed options that the
//! handlers in `commands` take; handlers never see clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;

mod job_args;
mod suggest_args;
pub use job_args::{CancelArgs, RollbackArgs, SyncArgs};
pub use suggest_args::{SuggestArgs, ToKindArg};

#[derive(Parser, Debug)]
#[command(
    name = "reshard",
    version,
    about = "Plan and carry out online resharding of application-sharded databases",
    long_about = "Plan and carry out online resharding of application-sharded databases.\n\n\
        Try it first: `reshard demo`, an online reshard of an embedded cluster (seconds, nothing to \
        install).\n\n\
        Workflow: `reshard plan` diffs two partition maps into a reviewed JSON plan; \
        `reshard apply --dry-run` checks it against the shards in CI; `reshard apply` copies \
        the moving rows as a resumable job; `reshard status` and `reshard resume` follow it.",
    after_help = "Exit codes: 0 done; 1 failed (resumable) or different (plan --check); \
        2 bad input or refused; 3 verification mismatch; 130 interrupted.\n\
        Durations take a unit (ms, s, m, h), combined as in 1m30s; at most 1 hour."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start here: a whole online reshard on an embedded SQLite cluster, under a live writer
    #[command(long_about = DEMO_ABOUT)]
    Demo(DemoArgs),
    /// Diff two partition maps into a migration plan (pure: reads two files, touches no database)
    Plan(PlanArgs),
    /// Measure the shards of a map (read-only) and write the next map: split hot ranges at
    /// their data's median, grow a ring, or grow a modulus; with the reasons
    Suggest(SuggestArgs),
    /// Print the shard that owns each key under a map, or live from the catalog
    Route(RouteArgs),
    /// Carry out a plan as a resumable job (or check it with --dry-run)
    Apply(ApplyArgs),
    /// Continue an interrupted, failed or paused job from its recorded progress
    Resume(ResumeArgs),
    /// Show a job's state and per-move progress
    Status(StatusArgs),
    /// List jobs in the catalog
    Jobs(JobsArgs),
    /// Compare a job's moved rows at source and destination by chunked checksums (exit 3 on a
    /// mismatch), repair them, or audit the finished layout
    Verify(VerifyArgs),
    /// Finish a job whose moves have all flipped: delete old copies, drop capture, switch the map
    Complete(CompleteArgs),
    /// Flip a job's flipped moves back to their old owners (fenced, nothing lost)
    Rollback(RollbackArgs),
    /// Undo a job before any flip: remove triggers and logs, copied rows and created tables
    Cancel(CancelArgs),
    /// Keep reverse sync (new owners -> old owners) running until Ctrl-C
    Sync(SyncArgs),
    /// Pause a job that is copying or cutting over, at its next safe point (resume continues it)
    Pause(PauseArgs),
    /// Cut over a job started with `apply --switch manual`, which has been catching up
    Switch(SwitchArgs),
    /// Show a job's history: every state change, request, flip and fence, with times
    Log(LogArgs),
    /// Run the catalog's job with other workers: parallel copies, cutovers, reverse sync, requests
    Worker(WorkerArgs),
    /// Change a running job's throttles (rate cap, load and lag limits), or show them
    Throttle(ThrottleArgs),
}

/// `reshard demo --help`, wrapped by hand to fit 100 columns (clap here does not wrap).
const DEMO_ABOUT: &str = "\
Runs a complete online reshard on this machine, with nothing to install or configure, and checks
that it lost nothing.

Four SQLite shards (s0..s3) on a sha1 consistent-hash ring hold --rows rows: users (sharded by id)
and their posts (sharded by user_id, so a user's posts move with the user). A background writer
updates, inserts and deletes users and posts through reshard::Router the whole time, as an
application would. reshard plans adding a fifth shard (s4) to the ring, prints the plan and
applies it online: change capture, the copy (progress bars), catch-up, and for each move a short
fence, a drain, a row comparison and the routing flip; the fence durations are shown. Once every
move has flipped, the writer stops, each move is verified by chunked SHA-1 checksums and the job
is completed (the moved rows are deleted from their old shards).

Then every shard is read directly: rows per shard before and after; the writer's tally (writes
acknowledged, and those that met a fence and were retried); the check that every acknowledged
write sits at its key's owner with its last value (lost: 0); and the audit that every row is on
its owner under the new map, with the row counts the writer's tally predicts.

Exit 0 only when all of that holds; 3 when a check failed (the files are then kept); 2 for bad
flags. With the default 200,000 rows it takes well under a minute in a release build
(cargo run --release -- demo) on a 2-core machine; a debug build is a few times slower.";

#[derive(Args, Debug)]
#[command(
    after_help = "Files (in --dir, or a new temporary directory that is removed at the end \
        unless --keep):\n  \
        s0.db .. s4.db    the shards (SQLite, WAL mode)\n  \
        catalog.db        reshard's catalog: routing, the job, its moves, events, reports\n  \
        old.json new.json the maps (4-node and 5-node rings); plan.json the plan\n  \
        demo.json         the results: job id, writer tally, checks, expected row counts\n\n\
        Poke at a kept run (the catalog URL is printed at the end):\n  \
        reshard jobs --catalog sqlite://DIR/catalog.db\n  \
        reshard status JOB --catalog sqlite://DIR/catalog.db\n  \
        reshard route 1 2 3 --catalog sqlite://DIR/catalog.db    # live owner of user keys\n  \
        reshard plan --from DIR/old.json --to DIR/new.json --svg ring.svg\n  \
        sqlite3 DIR/s4.db 'SELECT COUNT(*) FROM posts'"
)]
pub struct DemoArgs {
    /// Put the files here (created if missing; must be empty if it exists)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Rows in all: a quarter users, the rest their posts (3 per user)
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub rows: u64,
    /// Keep the files at the end (always kept when a check fails)
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The request is recorded in the catalog; the process running the job (apply or \
    resume, on any machine)\nsees it within a second, finishes the batch in flight and stops: \
    the job is then `paused`, and\n`reshard resume JOB` continues it from its cursors. A job \
    that no process is running is paused at once.\nExit codes: 0 paused; 2 refused (the job is \
    not copying or cutting over) or bad input; 1 failed."
)]
pub struct PauseArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Return once the request is recorded, without waiting for the job to stop
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The request is recorded in the catalog; the process running the job (which \
    keeps catching up\nuntil then) sees it within a second and cuts every move over as `apply` \
    would. With no process\nrunning the job, `reshard resume JOB` carries the switch out. \
    With --move, only the moves named\nflip; the others keep catching up until a later \
    switch names them (or names none: every move).\n\
    Exit codes: 0 switched (or recorded); 2 refused (not a manual job, or nothing to switch) or \
    bad input; 1 failed."
)]
pub struct SwitchArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Let only this move flip (repeat for more; a later switch adds to it). Default: every
    /// move
    #[arg(long = "move", value_name = "MOVE")]
    pub moves: Vec<String>,
    /// Change nothing: show what each fence would do and its predicted drain time
    #[arg(long, conflicts_with = "no_wait")]
    pub dry_run: bool,
    /// Return once the request is recorded, without waiting for the flips
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Before deleting anything, complete applies the new owners' pending changes to \
    the old owners and verifies every move\n(row counts and chunked checksums, up to 3 passes so \
    that rows caught mid-write settle). A difference\nthat persists stops it with exit 3 and \
    nothing deleted. See docs/online.md."
)]
pub struct CompleteArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Delete the old copies without verifying them first: if the new owner lost rows (a
    /// bypassed delete, another job's cleanup), they are then gone for good
    #[arg(long)]
    pub skip_verify_risking_data_loss: bool,
    /// When a `reshard worker` (or `reshard sync`) serves the job, record the request for it
    /// and return at once instead of waiting until it is carried out
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for a table lock by each statement that removes triggers, logs and guards
    /// (with a unit: 1s, 500ms); see `reshard apply --help`. Default: the value the job was started
    /// with (`apply --lock-timeout`), else 1s
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub progress: StepProgress,
}

impl From<CompleteArgs> for commands::online::JobOptions {
    fn from(a: CompleteArgs) -> Self {
        commands::online::JobOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            max_fence: "2s".into(),
            move_id: None,
            verify: !a.skip_verify_risking_data_loss,
            lock_timeout: None,
            no_wait: a.no_wait,
            json: a.progress.json(),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned text for people
    Text,
    /// JSON for tooling
    Json,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reshard plan --from plans/ring-add/old.json --to plans/ring-add/new.json\n  \
    reshard plan --from old.json --to new.json -o plan.json\n  \
    reshard plan --from old.json --to new.json --check plan.json   # CI: exit 1 if stale"
)]
pub struct PlanArgs {
    /// The current partition map (JSON)
    #[arg(long, value_name = "OLD.json")]
    pub from: PathBuf,
    /// The partition map to move to (JSON)
    #[arg(long, value_name = "NEW.json")]
    pub to: PathBuf,
    /// Write the plan JSON to this file (the text summary still goes to stdout)
    #[arg(short = 'o', long, value_name = "PLAN.json", conflicts_with = "check")]
    pub output: Option<PathBuf>,
    /// What to print on stdout: a table for reviewers, or the plan JSON
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Recompute the plan and compare it with this file: exit 0 when identical, 1 when not
    #[arg(long, value_name = "PLAN.json")]
    pub check: Option<PathBuf>,
    /// Also draw the plan as an SVG picture for reviewers (rings as circles, ranges as bars,
    /// modulo as a grid of residue classes; moving keys marked in red)
    #[arg(long, value_name = "FILE.svg", conflicts_with = "check")]
    pub svg: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reshard route --map plans/ring-add/new.json 42 1001\n  \
    seq 1 1000000 | reshard route --map new.json > owners.tsv\n  \
    reshard route --catalog sqlite://reshard.db 42 1001          # live owner during a job\n  \
    reshard route --catalog postgres://host/reshard --format json 42\n  \
    coproc ROUTE { reshard route --catalog postgres://host/reshard --follow; }   # bash: a live router\n\n\
    Output: KEY<TAB>SHARD per key (with --catalog: KEY<TAB>SHARD<TAB>VERSION); with --format json,\n\
    one JSON object per line: {\"key\": 42, \"shard\": \"s1\", \"version\": 3} (version only with --catalog).\n\
    With --follow, a key that cannot be routed answers KEY<TAB>error: WHY ({\"key\": .., \"error\": ..})."
)]
pub struct RouteArgs {
    /// Route with this map file
    #[arg(long, value_name = "MAP.json")]
    pub map: Option<PathBuf>,
    /// Route as the catalog does now: a job's flipped moves go to their new owner, everything
    /// else to its old one (the routing applications follow with reshard::Router). Without
    /// --map or --catalog: RESHARD_CATALOG, else sqlite://reshard.db, as for every command.
    /// --map wins over both
    #[arg(long, env = "RESHARD_CATALOG", value_name = "URL")]
    pub catalog: Option<String>,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Keys to route; with none, keys are read from standard input, one per line
    /// (negative integers need no `--`; other keys starting with `-` go after `--`)
    #[arg(allow_negative_numbers = true)]
    pub keys: Vec<String>,
    /// Stay connected: answer each stdin line as soon as it is read (flushed at once), checking
    /// the routing version at most every 100 ms as applications' routers do, until end of input
    #[arg(long, conflicts_with_all = ["keys", "map"])]
    pub follow: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SwitchArg {
    /// Cut each move over as soon as it has caught up
    Auto,
    /// Keep catching up; flip after `reshard switch JOB`
    Manual,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Bars on a terminal, plain lines otherwise
    Auto,
    /// Progress bars, redrawn in place
    Bars,
    /// A line per move every two seconds and one per step, for logs
    Plain,
    /// One JSON object per line, for tooling
    Json,
}

/// `--progress` of the commands whose steps are reported as lines, with no bars.
#[derive(Args, Debug)]
pub struct StepProgress {
    /// How each step is reported on stderr: `auto`, `plain` and `bars` print a line per step
    /// (these commands have no bars), `json` one JSON object per line and nothing else
    /// (docs/progress.md)
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

impl StepProgress {
    pub fn json(&self) -> bool {
        matches!(self.progress, ProgressArg::Json)
    }
}

#[derive(Args, Debug)]
pub struct CatalogArg {
    /// The catalog database holding routing, jobs and progress
    #[arg(
        long,
        env = "RESHARD_CATALOG",
        default_value = crate::catalog::DEFAULT_CATALOG,
        value_name = "URL"
    )]
    pub catalog: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reshard apply plan.json --dry-run            # CI: preflight and estimate, writes nothing\n  \
    reshard apply plan.json --create-tables --yes\n  \
    reshard status && reshard resume"
)]
pub struct ApplyArgs {
    /// The plan made by `reshard plan`
    #[arg(value_name = "PLAN.json")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Preflight and estimate only; writes nothing anywhere. Exit 0 when apply would start
    #[arg(long)]
    pub dry_run: bool,
    /// What --dry-run prints (only with --dry-run: apply itself reports through --progress)
    #[arg(long, value_enum, default_value_t = FormatArg::Text, requires = "dry_run")]
    pub format: FormatArg,
    /// Rows read by the first batch of each table (later ones adapt: --batch-time); progress
    /// is recorded after every batch
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch_size: usize,
    /// Moves copied at the same time, and cut over at the same time (one per source shard;
    /// 1 cuts over one move at a time)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub parallel: usize,
    /// How progress is shown, always on stderr (stdout keeps the results)
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Create tables missing at a destination from the source's definition (columns, primary
    /// key, indexes); refused when the source table has CHECK constraints, which it does not copy
    #[arg(long)]
    pub create_tables: bool,
    /// Proceed even when rows of the moving keys already exist at a destination
    #[arg(long)]
    pub allow_existing: bool,
    /// Longest time a cutover may refuse writes to a move's keys (with a unit: 2s, 500ms, 1m30s); past it
    /// the fence is lowered, catch-up resumes and the cutover is retried
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub max_fence: String,
    /// Create the job and return at once, leaving it to `reshard worker` processes on the
    /// catalog (see `reshard worker --help`)
    #[arg(long)]
    pub no_wait: bool,
    /// Once every move has flipped, complete the job (otherwise it waits in dual write)
    #[arg(long, conflicts_with = "switch")]
    pub complete: bool,
    /// When to flip: `auto` cuts each move over once caught up; `manual` copies and keeps
    /// catching up, and flips only after `reshard switch JOB` (at a time you pick)
    #[arg(long, value_enum, default_value_t = SwitchArg::Auto)]
    pub switch: SwitchArg,
    /// Longest wait for a table lock by each statement that installs or removes triggers,
    /// logs and guards, or sets a fence (e.g. 1s, 500ms; MariaDB rounds up to whole seconds).
    /// An application transaction left open on a table would otherwise stall reshard's DDL,
    /// and every write queued behind it, indefinitely. On a timeout reshard prints who holds
    /// the lock, waits (200 ms doubling to 2 s) so queued writes get through, and tries again,
    /// 10 attempts in all; then the job stops as failed and `reshard resume` continues it.
    /// Recorded with the job: resume, complete, rollback, cancel and sync use it unless given
    /// their own
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub lock_timeout: String,
    /// Rate cap: rows per second the job's copy reads at its sources plus change-log entries
    /// its catch-up and reverse sync apply, over all its moves (default: no cap). Cutover
    /// fences are never slowed. Recorded with the job; `reshard throttle JOB` changes it while
    /// the job runs
    #[arg(long, value_name = "N")]
    pub max_rows_per_sec: Option<u64>,
    /// Load limit: the job's copy, catch-up and reverse sync wait while a shard it reads or
    /// writes has more active sessions than N (PostgreSQL: active backends of the shard's
    /// database; MariaDB: Threads_running; SQLite: none). Cutover fences never wait.
    /// Recorded with the job; `reshard throttle JOB` changes it
    #[arg(long, value_name = "N")]
    pub max_load: Option<u64>,
    /// Lag limit: the job's copy, catch-up and reverse sync wait while a replica (listed in
    /// the map, `{"url", "replicas"}`) of a shard it reads or writes lags more than this,
    /// measured by a heartbeat row reshard writes on the primary. 0s turns it off. Cutover
    /// fences never wait. Recorded with the job; `reshard throttle JOB` changes it
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub max_lag: String,
    /// Adaptive batches: after each copy batch, the next is sized toward taking this long
    /// (at most doubling or halving, between 10 and 50,000 rows), starting from --batch-size,
    /// so that no statement runs long on a busy shard whatever its rows weigh. 0s keeps
    /// --batch-size fixed. `reshard throttle JOB` changes it
    #[arg(
        long,
        env = "RESHARD_BATCH_TIME",
        default_value = "500ms",
        value_name = "DURATION"
    )]
    pub batch_time: String,
    /// Where the copy reads its pages: `primary`, or `replica` to spare the primary, from the
    /// first replica the map lists for the source (`{"url", "replicas"}`) that has replayed
    /// past the point where capture was installed (it is waited for until then, at most 10
    /// min, never read early). Catch-up, cutover and verification always read the primary
    #[arg(long, value_enum, default_value_t = ReadFromArg::Primary)]
    pub read_from: ReadFromArg,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadFromArg {
    /// Read every copy page from the source shard itself
    Primary,
    /// Read copy pages from a replica of the source once it has replayed past capture's
    /// install point
    Replica,
}

#[derive(Args, Debug)]
#[command(
    after_help = "The throttles are stored with the job, in the catalog: the process running the job \
    reads it within a\nsecond, and later runs of the job keep it. With no option, shows the \
    job's throttles and whether\nthey hold it back now.\n  reshard throttle --max-rows-per-sec 5000   \
    # at most 5,000 rows/s from now on\n  reshard throttle --max-rows-per-sec 0      # no cap\n  \
    reshard throttle --max-load 30             # wait while a shard has over 30 active sessions\n  \
    reshard throttle --max-lag 10s             # wait while a replica lags over 10 s\n\
    Exit codes: 0 done; 2 bad input, or no such job; 1 failed."
)]
pub struct ThrottleArgs {
    /// The job (default: the catalog's unfinished job; there is at most one)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Rows per second the job's copy, catch-up and reverse sync may go through, over all its
    /// moves; 0 lifts the cap
    #[arg(long, value_name = "N")]
    pub max_rows_per_sec: Option<u64>,
    /// Hold the job's copy, catch-up and reverse sync while a shard it reads or writes has more
    /// active sessions than N (see `reshard apply --help`); 0 lifts the limit
    #[arg(long, value_name = "N")]
    pub max_load: Option<u64>,
    /// Hold the job's copy, catch-up and reverse sync while a replica of a shard it reads or
    /// writes lags more than this (with a unit: 5s, 800ms); 0s turns it off
    #[arg(long, value_name = "DURATION")]
    pub max_lag: Option<String>,
    /// Size copy batches toward taking this long (with a unit: 500ms, 2s); 0s fixes the size
    #[arg(long, value_name = "DURATION")]
    pub batch_time: Option<String>,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The job to resume (default: the most recent unfinished job)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// How progress is shown, always on stderr (stdout keeps the results)
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Moves copied, and cut over, at the same time (default: the job's)
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Mark the job running and return at once, leaving it to `reshard worker` processes
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for a table lock by each statement that installs or removes triggers,
    /// logs and guards, or sets a fence (with a unit: 1s, 500ms); see `reshard apply --help`.
    /// Default: the value the job was started with (`apply --lock-timeout`), else 1s
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Start one or more workers on a catalog, then hand them a job:\n  \
    reshard worker --catalog postgres://cat/reshard &        # on each machine\n  \
    reshard apply plan.json --yes --no-wait --catalog ...    # create the job and return\n  \
    reshard status --catalog ...                             # who holds what\n  \
    reshard complete JOB --catalog ...                       # asked of the serving worker\n\n\
    Each move's copy is a task that one worker leases; the other work (setup, catch-up and \
    cutovers,\nreverse sync in dual write, complete, rollback, cancel) is done by the one worker \
    holding the job's\nlease. A worker that dies loses its leases after --lease-ttl (at once \
    for a dead process on the same\nhost); another worker continues from the recorded cursors. \
    Ctrl-C stops a worker after its batch in\nflight and leaves the job to the others. A SQLite \
    catalog serves the workers of one machine;\nworkers on several machines share a PostgreSQL \
    catalog. See docs/online.md (\"Workers\")."
)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// How long a lease lives without renewal (renewed every third of it): how soon another
    /// worker takes over the work of one that died
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub lease_ttl: String,
    /// How long a worker with nothing to do waits before looking again
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub idle: String,
    /// Copy tasks (moves) this worker copies at once
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub parallel: usize,
    /// Serve Prometheus (OpenMetrics) text at http://ADDR/metrics: rows and bytes copied, the
    /// backlog per move and direction, fence durations, copy tasks by state, errors by kind
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The job to show (default: the most recent)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reshard log                       # the most recent job\n  \
    reshard log J --follow            # new events as they happen, until the job completes or is \
    cancelled\n  reshard log J --format json | jq  # one JSON object per line: id, at, move, kind, detail"
)]
pub struct LogArgs {
    /// The job (default: the most recent)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Keep printing new events (every 500 ms) until the job is completed or cancelled
    #[arg(long)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    pub catalog: CatalogArg,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  reshard verify JOB                 # every move; resumable by chunk\n  \
    reshard verify JOB --move m2 --format json\n  \
    reshard verify JOB --repair        # rewrite differing rows (source wins), verify again\n  \
    reshard verify JOB --audit         # after completion: every row on its owner, counts kept\n  \
    reshard verify JOB --audit --expect-rows users=1000 --expect-rows orders=5000\n\n\
    Exit codes: 0 match; 3 mismatch (or audit problems); 2 bad input; 1 failed."
)]
pub struct VerifyArgs {
    /// The job whose moves to verify (default: the most recent job)
    pub job: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArg,
    /// Verify only this move (repeatable)
    #[arg(long = "move", value_name = "ID")]
    pub moves: Vec<String>,
    /// Copy the differing and missing rows again from the source, delete the move's extra
    /// destination rows, then verify once more
    #[arg(long)]
    pub repair: bool,
    /// After completion: every row of every table on its owner under the new map and nowhere
    /// else, and the row count per table equal to the count at job start
    #[arg(long)]
    pub audit: bool,
    /// With --audit: the expected row count of a table (a writer's tally), instead of the
    /// count recorded at job start
    #[arg(long, value_name = "TABLE=N")]
    pub expect_rows: Vec<String>,
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Fixed rows per chunk (default: adapted toward --chunk-ms per chunk)
    #[arg(long, value_name = "N")]
    pub chunk_rows: Option<usize>,
    /// Target time per chunk, in milliseconds
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub chunk_ms: u64,
    /// Primary keys listed per kind of difference and table
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_listed: usize,
    /// Paces the comparison to spare the shards: at most N source rows read per second (the
    /// job's own cap does not apply to this command; default: no cap)
    #[arg(long, value_name = "N")]
    pub max_rows_per_sec: Option<u64>,
    /// How to show rows compared so far (on stderr): bars on a terminal, else a line every 2 s
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

impl From<FormatArg> for commands::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => commands::Format::Text,
            FormatArg::Json => commands::Format::Json,
        }
    }
}

impl From<ProgressArg> for commands::ProgressMode {
    fn from(p: ProgressArg) -> Self {
        match p {
            ProgressArg::Auto => commands::ProgressMode::Auto,
            ProgressArg::Bars => commands::ProgressMode::Bars,
            ProgressArg::Plain => commands::ProgressMode::Plain,
            ProgressArg::Json => commands::ProgressMode::Json,
        }
    }
}

/// `--lock-timeout` as given to the command, parsed before any I/O. `apply` sets it
/// process-wide at once ([`crate::lockwait`]: the backends read it where they run); the
/// commands acting on an existing job set it once they have read the job's own.
fn lock_timeout(command: &Command) -> Result<Option<std::time::Duration>, i32> {
    let given = match command {
        Command::Apply(a) => Some(&a.lock_timeout),
        Command::Resume(a) => a.lock_timeout.as_ref(),
        Command::Complete(a) => a.lock_timeout.as_ref(),
        Command::Rollback(a) => a.lock_timeout.as_ref(),
        Command::Cancel(a) => a.lock_timeout.as_ref(),
        Command::Sync(a) => a.lock_timeout.as_ref(),
        _ => None,
    };
    given
        .map(|s| commands::online::parse_duration("--lock-timeout", s))
        .transpose()
        .map_err(|e| commands::report(e.into()))
}

/// Runs the parsed command and returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    use commands::*;
    let lock_timeout = match lock_timeout(&cli.command) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match cli.command {
        Command::Demo(a) => demo::run(demo::DemoOptions {
            dir: a.dir,
            rows: a.rows,
            keep: a.keep,
        }),
        Command::Plan(a) => plan::run(plan::PlanOptions {
            from: a.from,
            to: a.to,
            output: a.output,
            format: a.format.into(),
            check: a.check,
            svg: a.svg,
        }),
        Command::Suggest(a) => suggest::run(a.into_options()),
        Command::Route(a) => route::run(route::RouteOptions {
            source: match (a.map, a.catalog) {
                (Some(map), _) => route::RouteSource::Map(map),
                (None, Some(url)) => route::RouteSource::Catalog(url),
                (None, None) => route::RouteSource::Catalog(crate::catalog::DEFAULT_CATALOG.into()),
            },
            keys: a.keys,
            format: a.format.into(),
            follow: a.follow,
        }),
        Command::Apply(a) => apply::run(apply::ApplyOptions {
            plan: a.plan,
            catalog: a.catalog.catalog,
            dry_run: a.dry_run,
            format: a.format.into(),
            batch_size: a.batch_size,
            parallel: a.parallel,
            progress: a.progress.into(),
            yes: a.yes,
            create_tables: a.create_tables,
            allow_existing: a.allow_existing,
            max_fence: a.max_fence,
            complete: a.complete,
            switch_manual: a.switch == SwitchArg::Manual,
            max_rows_per_sec: a.max_rows_per_sec,
            max_load: a.max_load,
            max_lag: a.max_lag,
            batch_time: a.batch_time,
            read_from_replica: a.read_from == ReadFromArg::Replica,
            no_wait: a.no_wait,
            lock_timeout: {
                let d = lock_timeout.unwrap_or(crate::lockwait::DEFAULT_TIMEOUT);
                crate::lockwait::set_timeout(d);
                d
            },
        }),
        Command::Resume(a) => apply::resume(apply::ResumeOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            progress: a.progress.into(),
            parallel: a.parallel,
            lock_timeout,
            no_wait: a.no_wait,
        }),
        Command::Status(a) => status::run(status::StatusOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            format: a.format.into(),
        }),
        Command::Jobs(a) => status::jobs(status::JobsOptions {
            catalog: a.catalog.catalog,
            format: a.format.into(),
        }),
        Command::Verify(a) => verify::run(verify::VerifyOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            moves: a.moves,
            repair: a.repair,
            audit: a.audit,
            expect_rows: a.expect_rows,
            format: a.format.into(),
            chunk_rows: a.chunk_rows,
            chunk_ms: a.chunk_ms,
            max_listed: a.max_listed,
            max_rows_per_sec: a.max_rows_per_sec,
            progress: a.progress.into(),
        }),
        Command::Complete(a) => online::run(online::Action::Complete, job(a.into(), lock_timeout)),
        Command::Rollback(a) => online::run(online::Action::Rollback, job(a.into(), lock_timeout)),
        Command::Cancel(a) => online::run(online::Action::Cancel, job(a.into(), lock_timeout)),
        Command::Sync(a) => online::run(online::Action::Sync, job(a.into(), lock_timeout)),
        Command::Throttle(a) => throttle::run(throttle::ThrottleOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            max_rows_per_sec: a.max_rows_per_sec,
            max_load: a.max_load,
            max_lag: a.max_lag,
            batch_time: a.batch_time,
        }),
        Command::Pause(a) => pause::run(pause::PauseOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            wait: !a.no_wait,
        }),
        Command::Worker(a) => worker::run(worker::WorkerOptions {
            catalog: a.catalog.catalog,
            lease_ttl: a.lease_ttl,
            idle: a.idle,
            parallel: a.parallel,
            metrics: a.metrics,
        }),
        Command::Log(a) => log::run(log::LogOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            format: a.format.into(),
            follow: a.follow,
        }),
        Command::Switch(a) => switch::run(switch::SwitchOptions {
            job: a.job,
            catalog: a.catalog.catalog,
            moves: a.moves,
            dry_run: a.dry_run,
            wait: !a.no_wait,
        }),
    }
}

/// A job command's options with its `--lock-timeout`, parsed in [`dispatch`].
fn job(
    o: commands::online::JobOptions,
    lock_timeout: Option<std::time::Duration>,
) -> commands::online::JobOptions {
    commands::online::JobOptions { lock_timeout, ..o }
}
