//! Progress display: indicatif bars (one per move and a total) on a terminal, a plain line every
//! two seconds otherwise, or one JSON object per line for tooling. All of it goes to stderr so
//! that stdout stays clean for results.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::commands::ProgressMode;

const PLAIN_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct MoveInfo {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub state: String,
    pub rows_total: u64,
    pub rows_copied: u64,
}

struct Inner {
    moves: Vec<MoveInfo>,
    /// Rows copied when this run started, to compute this run's rate.
    copied_at_start: u64,
    last_line: Instant,
}

enum Display {
    Bars {
        _multi: MultiProgress,
        per_move: Vec<ProgressBar>,
        total: ProgressBar,
    },
    Plain,
    Json,
}

/// What the rows counted are: the JSON events name them (`rows_copied`, `rows_verified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Copy,
    Verify,
}

impl Work {
    fn key(self) -> &'static str {
        match self {
            Work::Copy => "rows_copied",
            Work::Verify => "rows_verified",
        }
    }
}

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
    display: Arc<Display>,
    start: Instant,
    job: Arc<str>,
    work: Work,
}

fn bar_style(prefix_width: usize) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{prefix:<{prefix_width}}} {{bar:30}} {{human_pos}}/{{human_len}} rows {{rate}} ETA {{eta}} {{msg}}"
    ))
    .map(|s| {
        // indicatif's own {per_sec} prints four decimals ("458,411.8692/s").
        s.with_key(
            "rate",
            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", indicatif::HumanCount(st.per_sec() as u64));
            },
        )
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// The copy's progress (`rows_copied` are rows copied).
    pub fn new(mode: ProgressMode, job: &str, moves: Vec<MoveInfo>) -> Progress {
        Self::for_work(Work::Copy, mode, job, moves)
    }

    /// `rows_copied` of each [`MoveInfo`] counts the rows done of `work`.
    pub fn for_work(work: Work, mode: ProgressMode, job: &str, moves: Vec<MoveInfo>) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let copied_at_start = moves.iter().map(|m| m.rows_copied).sum();
        let display = match mode {
            ProgressMode::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let width = moves
                    .iter()
                    .map(|m| label(m).len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                let per_move = moves
                    .iter()
                    .map(|m| {
                        let b = multi.add(ProgressBar::new(m.rows_total));
                        b.set_style(bar_style(width));
                        b.set_prefix(label(m));
                        b.set_position(m.rows_copied);
                        b.set_message(m.state.clone());
                        b
                    })
                    .collect();
                let total = multi.add(ProgressBar::new(moves.iter().map(|m| m.rows_total).sum()));
                total.set_style(bar_style(width));
                total.set_prefix("total");
                total.set_position(copied_at_start);
                Display::Bars {
                    _multi: multi,
                    per_move,
                    total,
                }
            }
            ProgressMode::Json => {
                JSON_LINES.store(true, Ordering::Relaxed);
                Display::Json
            }
            _ => Display::Plain,
        };
        Progress {
            inner: Arc::new(Mutex::new(Inner {
                moves,
                copied_at_start,
                last_line: Instant::now(),
            })),
            display: Arc::new(display),
            start: Instant::now(),
            job: job.into(),
            work,
        }
    }

    fn index(inner: &Inner, id: &str) -> Option<usize> {
        inner.moves.iter().position(|m| m.id == id)
    }

    pub fn set_state(&self, id: &str, state: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(i) = Self::index(&inner, id) else {
            return;
        };
        inner.moves[i].state = state.to_string();
        let m = inner.moves[i].clone();
        match &*self.display {
            Display::Bars { per_move, .. } => {
                per_move[i].set_message(state.to_string());
                if state == "copied" {
                    per_move[i].set_position(m.rows_total.max(m.rows_copied));
                }
            }
            Display::Plain => eprintln!(
                "reshard: {} {} {} -> {}: {state} ({} of {} rows)",
                stamp(),
                m.id,
                m.source,
                m.destination,
                m.rows_copied,
                m.rows_total
            ),
            Display::Json => {
                let mut e = json!({
                    "event": "move_state", "job": &*self.job, "move": m.id, "state": state,
                    "rows_total": m.rows_total,
                });
                e[self.work.key()] = json!(m.rows_copied);
                emit(e)
            }
        }
    }

    pub fn add_rows(&self, id: &str, rows: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let Some(i) = Self::index(&inner, id) else {
            return;
        };
        inner.moves[i].rows_copied += rows;
        // Estimates come from key counts taken at start; never show more done than total.
        if inner.moves[i].rows_copied > inner.moves[i].rows_total {
            inner.moves[i].rows_total = inner.moves[i].rows_copied;
        }
        match &*self.display {
            Display::Bars {
                per_move, total, ..
            } => {
                per_move[i].set_length(inner.moves[i].rows_total);
                per_move[i].set_position(inner.moves[i].rows_copied);
                total.set_length(inner.moves.iter().map(|m| m.rows_total).sum());
                total.inc(rows);
            }
            Display::Plain | Display::Json => {
                if inner.last_line.elapsed() >= PLAIN_EVERY {
                    inner.last_line = Instant::now();
                    self.line(&inner);
                }
            }
        }
    }

    fn line(&self, inner: &Inner) {
        let copied: u64 = inner.moves.iter().map(|m| m.rows_copied).sum();
        let total: u64 = inner.moves.iter().map(|m| m.rows_total).sum();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = copied.saturating_sub(inner.copied_at_start) as f64 / secs;
        let eta = (rate > 0.0).then(|| (total.saturating_sub(copied) as f64 / rate).ceil() as u64);
        match &*self.display {
            Display::Json => {
                let key = self.work.key();
                let mut e = json!({
                    "event": "progress", "job": &*self.job, "rows_total": total,
                    "rows_per_second": rate.round(), "eta_seconds": eta,
                    "moves": inner.moves.iter().map(|m| {
                        let mut o = json!({"id": m.id, "state": m.state, "rows_total": m.rows_total});
                        o[key] = json!(m.rows_copied);
                        o
                    }).collect::<Vec<_>>(),
                });
                e[key] = json!(copied);
                emit(e)
            }
            _ => eprintln!(
                "reshard: {} {}: {copied} of {total} rows {}, {:.0} rows/s, ETA {}",
                stamp(),
                self.job,
                match self.work {
                    Work::Copy => "copied",
                    Work::Verify => "verified",
                },
                rate,
                eta.map(|s| format!("{s} s"))
                    .unwrap_or_else(|| "unknown".into())
            ),
        }
    }

    /// Clears the bars, or prints a last line.
    pub fn finish(&self) {
        match &*self.display {
            Display::Bars {
                per_move, total, ..
            } => {
                for b in per_move {
                    b.abandon();
                }
                total.abandon();
                // The last bar leaves the cursor at its end: what is printed next (the report
                // on stdout, to the same terminal) starts on a line of its own.
                eprintln!();
            }
            _ => {
                if let Ok(inner) = self.inner.lock() {
                    self.line(&inner);
                }
            }
        }
    }
}

fn label(m: &MoveInfo) -> String {
    format!("{} {}->{}", m.id, m.source, m.destination)
}

/// Set once a display emits JSON lines (`--progress json`): [`say`] then writes JSON too.
static JSON_LINES: AtomicBool = AtomicBool::new(false);

/// Makes [`say`] write JSON lines from now on (`--progress json`), before any display exists.
pub fn json_lines(on: bool) {
    if on {
        JSON_LINES.store(true, Ordering::Relaxed);
    }
}

/// A message for the operator on stderr: the text as is, or under `--progress json` a line
/// `{"event": "message", "text": ...}` (without the `reshard: ` prefix), so that such a stream
/// holds nothing but JSON lines.
pub fn say(text: impl AsRef<str>) {
    let text = text.as_ref();
    if JSON_LINES.load(Ordering::Relaxed) {
        let t = text.strip_prefix("reshard: ").unwrap_or(text);
        emit(json!({"event": "message", "text": t}));
    } else {
        eprintln!("{text}");
    }
}

fn emit(v: serde_json::Value) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
}

/// The UTC time of day a plain progress line is printed at, so that a log of them says when
/// each step happened.
fn stamp() -> String {
    chrono::Utc::now().format("%H:%M:%SZ").to_string()
}
