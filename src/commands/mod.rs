//! Command handlers. Each takes typed options, validates all input before any I/O, and returns
//! the process exit code.

pub mod apply;
pub mod demo;
pub mod log;
pub mod online;
pub mod pause;
pub mod plan;
pub mod route;
pub mod status;
pub mod suggest;
pub mod switch;
pub mod throttle;
pub mod verify;
pub mod worker;

use crate::error::exit_code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bars,
    Plain,
    Json,
}

/// Prints an error the way every command does and returns its documented exit code.
pub fn report(err: anyhow::Error) -> i32 {
    crate::progress::say(format!("reshard: {}", crate::error::describe(&err)));
    exit_code(&err)
}

/// Runs an async handler on a fresh runtime; commands that need no I/O never start one.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(anyhow::Error::new(e).context("starting the async runtime")),
    };
    crate::backend::closing::enable();
    let r = rt.block_on(f);
    rt.block_on(crate::backend::closing::close_all());
    match r {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

/// Like [`block_on`], for handlers whose success carries a value (such as "would start").
pub fn block_on_value<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"))?;
    crate::backend::closing::enable();
    let r = rt.block_on(f);
    rt.block_on(crate::backend::closing::close_all());
    r
}

/// Opens the catalog for a command that acts on an existing job, refusing one that does not
/// exist (a mistyped URL must never create an empty catalog).
pub async fn open_existing(url: &str) -> anyhow::Result<crate::catalog::Catalog> {
    open_existing_ro(url).await?.close().await;
    crate::catalog::Catalog::open_rw(url).await
}

/// Opens an existing catalog read-only (it is never created), refusing one that does not exist.
pub async fn open_existing_ro(url: &str) -> anyhow::Result<crate::catalog::Catalog> {
    use crate::catalog::{Access, Catalog};
    match Catalog::open(url, Access::ReadOnly).await? {
        Some(c) => Ok(c),
        None => Err(crate::error::InputError::one(format!(
            "--catalog: {} holds no jobs (it does not exist)",
            crate::shard_url::redact(url)
        ))
        .into()),
    }
}

/// The job named, or the most recent one when none is.
pub async fn pick_job(
    cat: &crate::catalog::Catalog,
    job: Option<&str>,
) -> anyhow::Result<crate::catalog::JobRow> {
    let found = match job {
        Some(id) => cat.job(id).await?,
        None => cat.jobs().await?.into_iter().next(),
    };
    found.ok_or_else(|| {
        crate::error::InputError::one(match job {
            Some(id) => format!("job {id}: not in the catalog"),
            None => "no jobs in the catalog".to_string(),
        })
        .into()
    })
}

/// The job a command that acts on one runs on: the one named, else the catalog's unfinished
/// job (there is at most one). `command` names the command in the refusal.
pub async fn job_or_unfinished(
    cat: &crate::catalog::Catalog,
    job: Option<&str>,
    command: &str,
) -> anyhow::Result<String> {
    if let Some(id) = job {
        return Ok(id.to_string());
    }
    cat.unfinished_job_id().await?.ok_or_else(|| {
        crate::error::InputError::one(format!(
            "JOB: no unfinished job to {command}; name one: reshard {command} JOB (reshard \
             jobs lists them)"
        ))
        .into()
    })
}

/// Breaks `text` at spaces so that no line passes `width` columns (a word longer than that
/// keeps its own line); continuation lines start with `indent`.
pub(crate) fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split(' ') {
        let n = word.chars().count();
        if col > 0 && col + 1 + n > width {
            out.push('\n');
            out.push_str(indent);
            col = indent.chars().count();
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += n;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_wrap_within_the_width() {
        let text = "warning: ".to_string() + &"word ".repeat(60);
        let w = super::wrap(text.trim_end(), 40, "  ");
        assert!(w.lines().all(|l| l.chars().count() <= 40), "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("  ")), "{w}");
        assert_eq!(w.split_whitespace().count(), 61, "no word lost");
    }
}
