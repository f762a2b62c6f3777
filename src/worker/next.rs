//! What a worker does next for a job: a pure function of what the catalog says, unit-tested
//! without a database. The worker reads the view, picks the work, and then claims it in a
//! catalog transaction that re-checks everything; a view gone stale between the two makes the
//! claim fail, never doubles the work.

use crate::finish::{Action, Asked};
use crate::job::JobState;

/// The catalog's answer for one job, as a worker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub state: Option<JobState>,
    /// The operator's pending request (`jobs.request`).
    pub request: Option<String>,
    /// Another live process holds the job's lease (a foreground command, or a worker running
    /// the job's setup, cutovers or reverse sync).
    pub lease_held: bool,
    /// Moves still to copy (pending or copying).
    pub moves_to_copy: usize,
    /// Copy tasks that exist, and those of them not done.
    pub copy_tasks: usize,
    pub copy_tasks_open: usize,
    /// Open copy tasks a live process holds now.
    pub copy_tasks_held: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Nothing for this worker now; the reason, for its log.
    Idle(&'static str),
    /// Under the job lease: tables, capture and guards, then one copy task per move.
    Setup,
    /// Claim a free copy task.
    Copy,
    /// Under the job lease: what the copies left (indexes), catch-up and the cutovers, to dual
    /// write (or completed, with `apply --complete`).
    Forward,
    /// Under the job lease: reverse sync in dual write, until a request.
    Serve,
    /// Under the job lease: carry out this request (or finish an interrupted complete/cancel).
    Carry(Asked),
    /// Record the pause asked for: every copy task has stopped.
    Pause,
}

pub fn next(v: &View) -> Work {
    use JobState::*;
    let Some(state) = v.state else {
        return Work::Idle("unknown job state");
    };
    if v.lease_held {
        return Work::Idle("another process holds the job's lease");
    }
    let asked = v.request.as_deref().and_then(Asked::parse);
    match state {
        Completed | Cancelled => Work::Idle("finished"),
        // A complete or cancel that stopped midway is finished the same way.
        Completing => Work::Carry(Asked {
            action: Action::Complete,
            move_id: None,
        }),
        Cancelling => Work::Carry(Asked {
            action: Action::Cancel,
            move_id: None,
        }),
        _ if asked.is_some() => match asked {
            Some(a) if v.copy_tasks_held == 0 => Work::Carry(a),
            _ => Work::Idle("copy tasks stop before the request is carried out"),
        },
        Running if v.request.as_deref() == Some(crate::catalog::PAUSE) => {
            if v.copy_tasks_held == 0 {
                Work::Pause
            } else {
                Work::Idle("copy tasks stop for the pause")
            }
        }
        Running if v.moves_to_copy > 0 && v.copy_tasks == 0 => Work::Setup,
        Running if v.copy_tasks_open > v.copy_tasks_held => Work::Copy,
        Running if v.copy_tasks_held > 0 => Work::Idle("other workers are copying"),
        Running => Work::Forward,
        DualWrite => Work::Serve,
        // Waiting for an operator: resume, or a decision after a failure.
        Interrupted | Failed | Paused | RolledBack | Copied => {
            Work::Idle("waits for an operator (resume, complete, rollback or cancel)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> View {
        View {
            state: Some(JobState::Running),
            moves_to_copy: 3,
            ..View::default()
        }
    }

    #[test]
    fn a_new_job_is_set_up_then_copied_by_every_free_worker() {
        assert_eq!(next(&running()), Work::Setup);
        let v = View {
            copy_tasks: 3,
            copy_tasks_open: 3,
            copy_tasks_held: 2,
            ..running()
        };
        assert_eq!(next(&v), Work::Copy);
        let v = View {
            copy_tasks_held: 3,
            ..v
        };
        assert!(matches!(next(&v), Work::Idle(_)));
    }

    #[test]
    fn cutover_waits_for_every_copy_task() {
        let v = View {
            moves_to_copy: 1,
            copy_tasks: 3,
            copy_tasks_open: 1,
            copy_tasks_held: 1,
            ..running()
        };
        assert!(matches!(next(&v), Work::Idle(_)));
        let v = View {
            moves_to_copy: 0,
            copy_tasks: 3,
            ..running()
        };
        assert_eq!(next(&v), Work::Forward);
        // A job whose moves were all copied before tasks existed (a resumed one) cuts over.
        let v = View {
            moves_to_copy: 0,
            ..running()
        };
        assert_eq!(next(&v), Work::Forward);
    }

    #[test]
    fn a_held_lease_means_someone_else_runs_the_job() {
        for state in JobState::ALL {
            let v = View {
                state: Some(state),
                lease_held: true,
                request: Some("complete".into()),
                ..View::default()
            };
            assert!(matches!(next(&v), Work::Idle(_)), "{state}");
        }
    }

    #[test]
    fn dual_write_is_served_and_requests_are_carried_out() {
        let dw = View {
            state: Some(JobState::DualWrite),
            ..View::default()
        };
        assert_eq!(next(&dw), Work::Serve);
        let v = View {
            request: Some("rollback m2".into()),
            ..dw.clone()
        };
        assert_eq!(
            next(&v),
            Work::Carry(Asked {
                action: Action::Rollback,
                move_id: Some("m2".into())
            })
        );
        // A switch request is for the run that cuts over, not an action.
        let v = View {
            request: Some("switch".into()),
            ..dw
        };
        assert_eq!(next(&v), Work::Serve);
    }

    #[test]
    fn a_pause_waits_for_the_copies_then_is_recorded() {
        let v = View {
            request: Some("pause".into()),
            copy_tasks: 3,
            copy_tasks_open: 3,
            copy_tasks_held: 1,
            ..running()
        };
        assert!(matches!(next(&v), Work::Idle(_)));
        let v = View {
            copy_tasks_held: 0,
            ..v
        };
        assert_eq!(next(&v), Work::Pause);
    }

    #[test]
    fn interrupted_completes_and_cancels_are_finished() {
        let v = View {
            state: Some(JobState::Completing),
            ..View::default()
        };
        assert!(matches!(next(&v), Work::Carry(a) if a.action == Action::Complete));
        let v = View {
            state: Some(JobState::Cancelling),
            ..View::default()
        };
        assert!(matches!(next(&v), Work::Carry(a) if a.action == Action::Cancel));
    }

    #[test]
    fn jobs_waiting_for_an_operator_are_left_alone() {
        for state in [
            JobState::Interrupted,
            JobState::Failed,
            JobState::Paused,
            JobState::RolledBack,
            JobState::Completed,
            JobState::Cancelled,
        ] {
            let v = View {
                state: Some(state),
                ..View::default()
            };
            assert!(matches!(next(&v), Work::Idle(_)), "{state}");
        }
    }
}
