//! SIGINT and SIGTERM ask for a graceful stop: the copy finishes and records its in-flight
//! batch, then the job is marked interrupted and the process exits 130. A second signal does
//! not force anything: the batch in flight is short, and abandoning it would gain nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
                    eprintln!("reshard: stopping after the batch in flight (signal received)");
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
