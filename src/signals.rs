//! SIGINT and SIGTERM ask for a graceful stop: the copy finishes and records its in-flight
//! batch, then the job is marked interrupted and the process exits 130. A second signal stops
//! at once whatever waits on [`hard_stopped`]: a DDL or fence statement blocked on a lock and
//! the sleeps between its attempts ([`crate::lockwait`]), and, through [`or_hard_stop`], the
//! copy's batches, catch-up and verification, however long their statement runs. The statement
//! is abandoned before its transaction commits, so the transaction rolls back with its
//! connection; the job is still recorded interrupted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

static HARD: AtomicBool = AtomicBool::new(false);
static HARD_NOTIFY: Notify = Notify::const_new();

/// Asks everything waiting on [`hard_stopped`] to stop now (the second signal).
pub fn request_hard_stop() {
    HARD.store(true, Ordering::SeqCst);
    HARD_NOTIFY.notify_waiters();
}

/// Resolves once a second signal arrived (never otherwise).
pub async fn hard_stopped() {
    loop {
        let n = HARD_NOTIFY.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if HARD.load(Ordering::SeqCst) {
            return;
        }
        n.await;
    }
}

/// Whether a second signal arrived.
pub fn is_hard_stopped() -> bool {
    HARD.load(Ordering::SeqCst)
}

/// Runs `f` unless a second signal arrives first: then `f` is dropped where it is (a statement
/// in flight is abandoned uncommitted) and [`crate::lockwait::Aborted`] is returned. Only for
/// work that a kill -9 at any point leaves resumable.
pub async fn or_hard_stop<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        biased;
        _ = hard_stopped() => Err(anyhow::Error::new(crate::lockwait::Aborted)),
        r = f => r,
    }
}

#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
}

/// Installs the handlers; they set the returned flag.
pub fn install() -> std::io::Result<StopFlag> {
    let flag = StopFlag::default();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let f = flag.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if !f.requested() {
                    crate::progress::say(
                        "reshard: stopping after the batch in flight (signal received; \
                         another one stops at once)",
                    );
                } else {
                    crate::progress::say("reshard: stopping now (second signal)");
                    request_hard_stop();
                }
                f.request();
            }
        });
    }
    #[cfg(not(unix))]
    {
        let f = flag.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                f.request();
            }
        });
    }
    Ok(flag)
}

/// For commands that only read and print until stopped (`route --follow`, `log --follow`):
/// SIGINT or SIGTERM ends the process at once with exit 130, as the README's table says of every
/// interrupted command. Without a handler the signal killed them: no exit code (a shell showed
/// 130 for SIGINT, 143 for SIGTERM). They hold nothing that a stop in the middle leaves behind.
pub fn exit_on_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            crate::progress::say("reshard: interrupted");
            std::process::exit(crate::error::EXIT_INTERRUPTED);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(crate::error::EXIT_INTERRUPTED);
        }
    });
    Ok(())
}
