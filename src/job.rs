//! The job and per-move state machines. The catalog stores these states as text; every change
//! goes through [`crate::catalog::Catalog`] in one transaction with its event row.
//!
//! A job is a plan being carried out. Each of its moves advances on its own:
//!
//! ```text
//! move:  pending -> copying -> copied -> catching_up -> fencing -> flipped -> completed
//!                                        catching_up <- fencing   (fence lowered: over budget,
//!                                                                  crash, mismatch)
//!        flipped -> rolling_back -> catching_up  (rollback: flipped back)
//!        rolling_back -> flipped                 (rollback abandoned or crashed)
//! job:   running -> dual_write | interrupted | failed;  interrupted | failed -> running (resume)
//!        dual_write -> completing -> completed
//!        (any state with a flipped move, before completing) -> rolled_back, in the transaction
//!        that flips a move back;  rolled_back -> running (resume cuts over again)
//!        (any state before a flip) -> cancelling -> cancelled
//!        running -> paused (`reshard pause`, at the next safe point);  paused -> running (resume)
//! ```
//! `copied` is the job state of issue 3's offline jobs; online jobs go on to `dual_write`.
//!
//! The job state is derived from its moves when a run ends: `copied` when every move is copied,
//! otherwise `interrupted` (signal) or `failed` (an error, recorded in `last_error`).

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Interrupted,
    Failed,
    /// Every move's rows are at their destination. Issue 4 continues from here.
    Copied,
    /// Every move has flipped; the new owners are authoritative and their changes flow back to
    /// the old owners until `complete` (or `rollback`).
    DualWrite,
    /// Rolled back after a flip: routing is the old map again; `resume` cuts over anew,
    /// `cancel` removes everything.
    RolledBack,
    Completing,
    Completed,
    Cancelling,
    Cancelled,
    /// Stopped at an operator's request (`reshard pause`) at a safe point, until `resume`.
    Paused,
}

impl JobState {
    pub const ALL: [JobState; 11] = [
        JobState::Running,
        JobState::Interrupted,
        JobState::Failed,
        JobState::Copied,
        JobState::DualWrite,
        JobState::RolledBack,
        JobState::Completing,
        JobState::Completed,
        JobState::Cancelling,
        JobState::Cancelled,
        JobState::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::Failed => "failed",
            JobState::Copied => "copied",
            JobState::DualWrite => "dual_write",
            JobState::RolledBack => "rolled_back",
            JobState::Completing => "completing",
            JobState::Completed => "completed",
            JobState::Cancelling => "cancelling",
            JobState::Cancelled => "cancelled",
            JobState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// Whether `resume` may pick the job up. `running` is resumable too: its worker may have
    /// died; the lease decides whether it really still runs.
    pub fn resumable(self) -> bool {
        matches!(
            self,
            JobState::Running
                | JobState::Interrupted
                | JobState::Failed
                | JobState::RolledBack
                | JobState::Paused
        )
    }

    /// Whether the job is over: nothing of it remains that a later job could collide with
    /// (a rolled-back job is over only once cancelled).
    pub fn finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled)
    }

    /// The command that takes an unfinished job to its end, given whether any / every move
    /// has flipped. For the message that refuses a second job while this one is unfinished.
    pub fn finish_hint(self, job: &str, any_flipped: bool, all_flipped: bool) -> String {
        use JobState::*;
        match self {
            Completed | Cancelled => format!("job {job} is already {self}"),
            Completing => format!("reshard complete {job}"),
            Cancelling => format!("reshard cancel {job}"),
            DualWrite => format!("reshard complete {job} (or reshard rollback {job}, then cancel)"),
            _ if all_flipped => {
                format!("reshard complete {job} (or reshard rollback {job}, then cancel)")
            }
            _ if any_flipped => format!(
                "reshard resume {job} then complete (or reshard rollback {job}, then cancel)"
            ),
            _ => format!("reshard resume {job} then complete, or reshard cancel {job}"),
        }
    }

    /// The state a job in `from` takes when asked to become `self`: a failure during
    /// `complete` or `cancel` keeps the job `completing` or `cancelling` (its error recorded).
    /// Their first steps cannot be undone: once complete has removed capture or deleted old
    /// copies, the old owners are stale, and a `failed` job could be rolled back onto them or
    /// verified again against them (which refuses for ever); once cancel has deleted copied
    /// rows, a `failed` job could be resumed onto a destination missing them. Running the same
    /// command again is the only way on.
    pub fn or_kept_from(self, from: JobState) -> JobState {
        match (from, self) {
            (JobState::Completing | JobState::Cancelling, JobState::Failed) => from,
            _ => self,
        }
    }

    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (
                Running,
                Interrupted | Failed | Copied | DualWrite | Cancelling
            ) | (Interrupted | Failed | Running | RolledBack, Running)
                | (Interrupted | Failed | RolledBack | Copied, Cancelling)
                | (Cancelling, Cancelled)
                | (Copied, Completed | Cancelled | Running)
                | (DualWrite, Completing | RolledBack | Running)
                | (Completing, Completed)
                | (Failed | Interrupted | Running, RolledBack)
                | (Failed, Completing | DualWrite)
                | (DualWrite | RolledBack | Interrupted, Failed)
                | (Running | Interrupted | Failed, Paused)
                | (Paused, Running | Cancelling | RolledBack | Failed)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveState {
    Pending,
    Copying,
    Copied,
    /// Replaying captured changes at the destination until the backlog is small.
    CatchingUp,
    /// The source's fence is (being) raised: drain, verify, flip.
    Fencing,
    /// Routing sends the move's keys to the destination (`moves.flipped = 1`).
    Flipped,
    /// Rollback: the destination's fence is (being) raised to flip back.
    RollingBack,
    /// The job completed: old copies deleted.
    Completed,
}

impl MoveState {
    pub const ALL: [MoveState; 8] = [
        MoveState::Pending,
        MoveState::Copying,
        MoveState::Copied,
        MoveState::CatchingUp,
        MoveState::Fencing,
        MoveState::Flipped,
        MoveState::RollingBack,
        MoveState::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveState::Pending => "pending",
            MoveState::Copying => "copying",
            MoveState::Copied => "copied",
            MoveState::CatchingUp => "catching_up",
            MoveState::Fencing => "fencing",
            MoveState::Flipped => "flipped",
            MoveState::RollingBack => "rolling_back",
            MoveState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<MoveState> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    pub fn can_become(self, to: MoveState) -> bool {
        use MoveState::*;
        matches!(
            (self, to),
            (Pending, Copying)
                | (Copying, Copying)
                | (Copying, Copied)
                | (Copied | Fencing | RollingBack, CatchingUp)
                | (CatchingUp, Fencing)
                | (Fencing | RollingBack, Flipped)
                | (Flipped, RollingBack | Completed)
        )
    }
}

impl fmt::Display for MoveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short, typeable job id: `j` + UTC yyyymmddHHMMSS + 4 random hex digits.
pub fn new_job_id() -> String {
    let now = chrono::Utc::now();
    let r = random_u64() as u16;
    format!("j{}{r:04x}", now.format("%Y%m%d%H%M%S"))
}

/// A random number from the standard library's per-process hash keys: enough for ids and
/// nonces, without a dependency.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_text() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for s in MoveState::ALL {
            assert_eq!(MoveState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("nope"), None);
    }

    #[test]
    fn transitions() {
        assert!(MoveState::Pending.can_become(MoveState::Copying));
        assert!(MoveState::Copying.can_become(MoveState::Copied));
        assert!(!MoveState::Copied.can_become(MoveState::Pending));
        assert!(!MoveState::Pending.can_become(MoveState::Copied));
        assert!(JobState::Failed.can_become(JobState::Running));
        assert!(!JobState::Completed.can_become(JobState::Running));
    }

    /// complete's and cancel's first steps cannot be undone: those states lead only to their
    /// end, and a failure keeps them.
    #[test]
    fn completing_and_cancelling_lead_only_to_their_end() {
        for (s, end) in [
            (JobState::Completing, JobState::Completed),
            (JobState::Cancelling, JobState::Cancelled),
        ] {
            let next: Vec<JobState> = JobState::ALL
                .into_iter()
                .filter(|&t| s.can_become(t))
                .collect();
            assert_eq!(next, vec![end], "{s}");
            assert_eq!(JobState::Failed.or_kept_from(s), s);
            assert!(!s.resumable(), "{s}");
        }
        assert_eq!(
            JobState::Failed.or_kept_from(JobState::DualWrite),
            JobState::Failed
        );
    }

    #[test]
    fn only_completed_and_cancelled_jobs_are_finished() {
        let finished: Vec<JobState> = JobState::ALL.into_iter().filter(|s| s.finished()).collect();
        assert_eq!(finished, vec![JobState::Completed, JobState::Cancelled]);
    }

    #[test]
    fn finish_hints_name_a_command_that_ends_the_job() {
        let h = JobState::DualWrite.finish_hint("j1", true, true);
        assert!(h.starts_with("reshard complete j1"), "{h}");
        let h = JobState::RolledBack.finish_hint("j1", false, false);
        assert!(h.contains("reshard cancel j1"), "{h}");
        let h = JobState::Failed.finish_hint("j1", true, false);
        assert!(
            h.contains("reshard resume j1") && h.contains("rollback"),
            "{h}"
        );
        let h = JobState::Cancelling.finish_hint("j1", false, false);
        assert_eq!(h, "reshard cancel j1");
    }

    #[test]
    fn job_ids_are_short_and_distinct() {
        let a = new_job_id();
        assert_eq!(a.len(), 19, "{a}");
        assert!(a.starts_with('j'));
        assert!(a[1..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
