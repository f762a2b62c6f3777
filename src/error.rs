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

/// An error and its causes on one line, as `{:#}` prints them, but without a cause that its
/// parent's text already ends with: sqlx's errors print their source themselves, so `{:#}` said
/// `Connection refused (os error 111): Connection refused (os error 111)`.
pub fn describe(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
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

    #[test]
    fn regression_error_causes_printed_twice() {
        #[derive(Debug)]
        struct Io;
        impl std::fmt::Display for Io {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Connection refused (os error 111)")
            }
        }
        impl std::error::Error for Io {}
        #[derive(Debug)]
        struct Wrapped(Io);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error communicating with database: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Wrapped(Io)).context("catalog postgres://h/c");
        assert_eq!(
            describe(&e),
            "catalog postgres://h/c: error communicating with database: Connection refused (os \
             error 111)"
        );
        // Distinct causes all stay.
        let e = anyhow::anyhow!("disk full")
            .context("writing")
            .context("copying m1");
        assert_eq!(describe(&e), "copying m1: writing: disk full");
    }
}
