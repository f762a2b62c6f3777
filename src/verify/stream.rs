//! The reads of a full pass, as two free-running tasks: the source reads its pages back to back
//! (page i+1 starts as soon as page i's last key is known), and the destination reads each
//! chunk's range as soon as the source has fixed it. The pass only pairs them up and records.
//!
//! Why not read chunk by chunk: with the two reads of a step started together and both awaited,
//! every step lasted as long as the slower one, and while the chunk size ramps up the source's
//! page is twice the destination's range, so the destination's side idled for a quarter of a
//! 10^6-row pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::chunk::{Rows, TableJob};
use crate::backend::PkValues;

/// One chunk, both sides read: the source's rows of `(after, last]` (`last` None: the last,
/// open-ended chunk) and the destination's over the same range.
pub(crate) struct Chunk {
    pub after: Option<PkValues>,
    pub last: Option<PkValues>,
    pub src: Rows,
    pub dst: Rows,
    /// Rows to ask the source for in the chunk after this one.
    pub next_k: usize,
}

/// What sizes the next chunk: the source page just read.
pub(crate) struct Page {
    /// The rows asked for, and how long it took.
    pub k: usize,
    pub took: Duration,
    /// Rows read and their encodings' bytes (a page is held in memory whole).
    pub read: usize,
    pub bytes: u64,
    /// Rows still to read, when the pass knows what to expect. Why it matters: the
    /// destination's read of the last chunk runs alone, after the source has finished, so
    /// chunks should shrink toward the end.
    pub left: Option<u64>,
}

/// The source's part of a chunk, on its way to the destination's reader.
struct SourcePage {
    after: Option<PkValues>,
    last: Option<PkValues>,
    src: Rows,
    k: usize,
    next_k: usize,
}

/// Chunks in key order, read ahead by at most a few chunks. Dropping it stops both tasks: a
/// page read ahead and not recorded is read again by a resumed pass, so nothing is lost.
pub(crate) struct Chunks {
    rx: mpsc::Receiver<Result<Chunk>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Chunks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Chunks {
    /// Starts reading the chunks after `after`, the first of `k` source rows; `next_k` sizes
    /// each next chunk from the source page just read (see [`Page`]); `expected` is the rows the
    /// source will read, when known.
    pub fn start(
        tj: &Arc<TableJob>,
        after: Option<PkValues>,
        (k, expected): (usize, Option<u64>),
        next_k: impl Fn(&Page) -> usize + Send + 'static,
    ) -> Chunks {
        let (page_tx, mut page_rx) = mpsc::channel::<Result<SourcePage>>(1);
        let (tx, rx) = mpsc::channel::<Result<Chunk>>(1);
        let source = {
            let tj = tj.clone();
            tokio::spawn(async move {
                let (mut after, mut k, mut read) = (after, k, 0u64);
                loop {
                    let started = Instant::now();
                    let page = match tj.read_source_page(after.as_ref(), k).await {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = page_tx.send(Err(e)).await;
                            return;
                        }
                    };
                    read += page.read as u64;
                    let next_k = next_k(&Page {
                        k,
                        took: started.elapsed(),
                        read: page.read,
                        bytes: page.bytes,
                        left: expected.map(|e| e.saturating_sub(read)),
                    });
                    // A page shorter than asked for is the last: its chunk is open-ended, so
                    // destination rows beyond the source's last key show.
                    let last = if page.read < k {
                        None
                    } else {
                        page.last_read.clone()
                    };
                    let item = SourcePage {
                        after: after.clone(),
                        last: last.clone(),
                        src: page,
                        k,
                        next_k,
                    };
                    if page_tx.send(Ok(item)).await.is_err() || last.is_none() {
                        return;
                    }
                    (after, k) = (last, next_k);
                }
            })
        };
        let destination = {
            let tj = tj.clone();
            tokio::spawn(async move {
                while let Some(page) = page_rx.recv().await {
                    let chunk = match page {
                        Err(e) => Err(e),
                        Ok(p) => {
                            let page_rows = p.k.max(1000);
                            tj.read_range(true, p.after.as_ref(), p.last.as_ref(), page_rows, false)
                                .await
                                .map(|dst| Chunk {
                                    after: p.after,
                                    last: p.last,
                                    src: p.src,
                                    dst,
                                    next_k: p.next_k,
                                })
                        }
                    };
                    let end = chunk.as_ref().map_or(true, |c| c.last.is_none());
                    if tx.send(chunk).await.is_err() || end {
                        return;
                    }
                }
            })
        };
        Chunks {
            rx,
            tasks: [source, destination],
        }
    }

    /// The next chunk; None after the last one.
    pub async fn next(&mut self) -> Option<Result<Chunk>> {
        self.rx.recv().await
    }
}
