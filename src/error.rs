//! Domain errors that decide the exit code. Everything else is an `anyhow` error with context,
//! and exits 1 (failed, resumable).

use std::fmt;

/// Bad input: every problem found, each naming its file and field. Exit code 2, nothing written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    pub problems: Vec<String>,
}

impl InputError {
    pub fn one(msg: impl Into<String>) -> Self {
        InputError {
            problems: vec![msg.into()],
        }
    }
    pub fn many(problems: Vec<String>) -> Self {
        InputError { problems }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

/// Outcomes that stop a command with a specific, documented exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The operation was refused before anything was written (stale plan, failed preflight).
    #[error("refused: {0}")]
    Refused(String),
    /// Verification found source and destination different; the job stays resumable.
    #[error("verification mismatch: {0}")]
    Mismatch(String),
    /// SIGINT or SIGTERM: the in-flight batch was finished and recorded.
    #[error("interrupted; the in-flight batch was recorded. Resume with: {resume}")]
    Interrupted { resume: String },
    /// A check that found a difference (for example `plan --check`); exit 1, not an error.
    #[error("{0}")]
    Different(String),
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_MISMATCH: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

/// The exit code documented for an error that ended a command.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<InputError>().is_some() {
            return EXIT_BAD_INPUT;
        }
        if let Some(stop) = cause.downcast_ref::<Stop>() {
            return match stop {
                Stop::Refused(_) => EXIT_BAD_INPUT,
                Stop::Mismatch(_) => EXIT_MISMATCH,
                Stop::Interrupted { .. } => EXIT_INTERRUPTED,
                Stop::Different(_) => EXIT_FAILED,
            };
        }
        if cause.downcast_ref::<crate::lockwait::Aborted>().is_some() {
            return EXIT_INTERRUPTED;
        }
    }
    EXIT_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_sees_through_context() {
        let e = Err::<(), _>(InputError::one("x"))
            .context("loading")
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        let e = anyhow::Error::new(Stop::Mismatch("t".into())).context("verify");
        assert_eq!(exit_code(&e), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("io")), 1);
    }
}
