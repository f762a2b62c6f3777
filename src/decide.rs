//! Which operator request is allowed in which state: one pure table, (request, job state,
//! flipped moves) -> decision, unit-tested without a database. The commands (and the workers
//! of issue 14) ask it before touching anything, so a command run against the wrong job, or at
//! the wrong time, is refused with the command that does apply.

use crate::job::JobState;

/// What an operator asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Complete,
    Rollback,
    Cancel,
    Sync,
}

/// The flip state of a job's moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flips {
    pub any: bool,
    pub all: bool,
}

impl Flips {
    pub fn of(flipped: impl IntoIterator<Item = bool>) -> Flips {
        let (mut n, mut on) = (0usize, 0usize);
        for f in flipped {
            n += 1;
            on += f as usize;
        }
        Flips {
            any: on > 0,
            all: n > 0 && on == n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Carry the request out.
    Run,
    /// Nothing to do: it is done already (exit 0, with this message).
    Done(String),
    /// A rollback with nothing flipped: routing is the old map already. Idempotent; a job still
    /// marked dual_write is marked rolled_back.
    NothingFlipped { mark_rolled_back: bool },
    /// Not in this state (exit 2, with this message naming what to do instead).
    Refused(String),
}

pub fn decide(request: Request, job: &str, state: JobState, flips: Flips) -> Decision {
    use JobState::*;
    use Request::*;
    match (request, state) {
        (Complete, Completed) | (Cancel, Cancelled) => {
            Decision::Done(format!("job {job} is already {state}"))
        }
        (Complete, Completing) => Decision::Run,
        (Complete, DualWrite | Failed) if flips.all => Decision::Run,
        (Complete, _) => Decision::Refused(format!(
            "job {job} is {state}: complete needs every move flipped (dual_write){}",
            if flips.any && !state.finished() {
                format!("; cut the others over first: reshard resume {job}")
            } else {
                String::new()
            }
        )),
        (Rollback | Sync, Completing) => Decision::Refused(format!(
            "job {job} is completing: complete has begun deleting the old owners' copies, so \
             routing cannot go back to them; finish it with: reshard complete {job}"
        )),
        (Rollback | Sync, DualWrite | Failed | RolledBack | Interrupted | Running | Paused)
            if flips.any =>
        {
            Decision::Run
        }
        (Rollback, DualWrite | Failed | RolledBack | Interrupted | Paused) => {
            Decision::NothingFlipped {
                mark_rolled_back: state == DualWrite,
            }
        }
        (Rollback | Sync, _) => Decision::Refused(format!(
            "job {job} is {state}: no flipped move to {}",
            if request == Sync { "sync" } else { "roll back" }
        )),
        (Cancel, Completing | Completed) => {
            Decision::Refused(format!("job {job} is {state}: too late to cancel"))
        }
        (Cancel, _) if flips.any => Decision::Refused(format!(
            "job {job} has flipped moves; roll them back first: reshard rollback {job}"
        )),
        (Cancel, _) => Decision::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;
    use Request::*;

    const FLIPS: [Flips; 3] = [
        Flips {
            any: false,
            all: false,
        },
        Flips {
            any: true,
            all: false,
        },
        Flips {
            any: true,
            all: true,
        },
    ];

    #[test]
    fn flips_are_counted() {
        assert_eq!(Flips::of([]), FLIPS[0]);
        assert_eq!(Flips::of([false, false]), FLIPS[0]);
        assert_eq!(Flips::of([true, false]), FLIPS[1]);
        assert_eq!(Flips::of([true, true]), FLIPS[2]);
    }

    /// The safety rules, over every (request, state, flips): the ones that lose data if broken.
    #[test]
    fn no_request_runs_where_it_could_lose_data() {
        for r in [Complete, Rollback, Cancel, Sync] {
            for s in JobState::ALL {
                for f in FLIPS {
                    let d = decide(r, "j", s, f);
                    if d == Decision::Run {
                        match r {
                            // Deleting old copies while a key still routes to them.
                            Complete => assert!(f.all || s == Completing, "{r:?} {s} {f:?}"),
                            // Removing the copies a flipped move's routing relies on.
                            Cancel => assert!(!f.any, "{r:?} {s} {f:?}"),
                            // Nothing to flip back or sync without a flipped move, and no
                            // way back once complete has begun deleting old copies.
                            Rollback | Sync => {
                                assert!(f.any && s != Completing, "{r:?} {s} {f:?}")
                            }
                        }
                        assert!(!s.finished(), "{r:?} runs on a finished job ({s})");
                    }
                    if let Decision::Refused(m) = &d {
                        assert!(m.contains("job j"), "names the job: {m}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_table() {
        let none = FLIPS[0];
        let some = FLIPS[1];
        let all = FLIPS[2];
        assert_eq!(decide(Complete, "j", DualWrite, all), Decision::Run);
        assert_eq!(decide(Complete, "j", Failed, all), Decision::Run);
        assert_eq!(decide(Complete, "j", Completing, all), Decision::Run);
        assert!(matches!(
            decide(Complete, "j", Completed, all),
            Decision::Done(_)
        ));
        match decide(Complete, "j", RolledBack, some) {
            Decision::Refused(m) => assert!(m.contains("reshard resume j"), "{m}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(decide(Rollback, "j", DualWrite, some), Decision::Run);
        assert_eq!(decide(Rollback, "j", Running, some), Decision::Run);
        assert_eq!(
            decide(Rollback, "j", DualWrite, none),
            Decision::NothingFlipped {
                mark_rolled_back: true
            }
        );
        assert_eq!(
            decide(Rollback, "j", RolledBack, none),
            Decision::NothingFlipped {
                mark_rolled_back: false
            }
        );
        assert!(matches!(
            decide(Rollback, "j", Completed, all),
            Decision::Refused(_)
        ));
        assert!(matches!(
            decide(Sync, "j", RolledBack, none),
            Decision::Refused(_)
        ));
        assert_eq!(decide(Sync, "j", DualWrite, all), Decision::Run);
        assert_eq!(decide(Cancel, "j", RolledBack, none), Decision::Run);
        assert_eq!(decide(Cancel, "j", Running, none), Decision::Run);
        match decide(Cancel, "j", DualWrite, all) {
            Decision::Refused(m) => assert!(m.contains("reshard rollback j"), "{m}"),
            d => panic!("{d:?}"),
        }
        for r in [Rollback, Sync] {
            match decide(r, "j", Completing, all) {
                Decision::Refused(m) => assert!(m.contains("reshard complete j"), "{m}"),
                d => panic!("{d:?}"),
            }
        }
        assert!(matches!(
            decide(Cancel, "j", Completing, all),
            Decision::Refused(_)
        ));
        assert!(matches!(
            decide(Cancel, "j", Cancelled, none),
            Decision::Done(_)
        ));
    }
}
