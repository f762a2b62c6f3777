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
    /// Each move's working time in this run, the base of its rate and ETA.
    active: Vec<Active>,
    /// The whole job's, from this run's start.
    total_active: Active,
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

/// A move's (or the job's) working time in this run: rows done since `since` at the rate
/// they were done. A move that has not started has none; a resumed move starts afresh, so
/// that the rows a killed run did are not counted as done in no time.
#[derive(Debug, Clone, Copy, Default)]
struct Active {
    /// When work began in this run, and the rows done by then.
    since: Option<(Instant, u64)>,
    /// When it stopped (the move left its working state).
    until: Option<Instant>,
}

impl Active {
    fn begin(now: Instant, rows: u64) -> Active {
        Active {
            since: Some((now, rows)),
            until: None,
        }
    }

    fn rate_eta(&self, now: Instant, done: u64, total: u64) -> (Option<u64>, Option<u64>) {
        match self.since {
            Some((t, base)) => {
                let end = self.until.unwrap_or(now);
                rate_and_eta(
                    done.saturating_sub(base),
                    (end - t).as_secs_f64(),
                    total.saturating_sub(done),
                )
            }
            None => (None, None),
        }
    }
}

/// States in which a move is doing the work a display counts.
fn working(state: &str) -> bool {
    matches!(state, "copying" | "verifying" | "repairing")
}

/// Rows per second and the seconds left, from `done` rows in `secs` of work and `left` to do:
/// unknown (None) before a quarter second of work or before any row, so that a first batch done in a
/// blink does not promise an ETA of 0. The ETA of nothing left is 0.
fn rate_and_eta(done: u64, secs: f64, left: u64) -> (Option<u64>, Option<u64>) {
    if secs < 0.25 || done == 0 {
        return (None, (left == 0).then_some(0));
    }
    let rate = done as f64 / secs;
    (
        Some(rate.round() as u64),
        Some((left as f64 / rate).ceil() as u64),
    )
}

/// `12,345/s ETA 3s`, with `-` for what is not known yet.
fn rate_text(rate: Option<u64>, eta: Option<u64>) -> String {
    let r = rate.map_or("-".into(), |r| format!("{}/s", indicatif::HumanCount(r)));
    let e = eta.map_or("-".into(), |e| {
        indicatif::HumanDuration(Duration::from_secs(e)).to_string()
    });
    format!("{r} ETA {e}")
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
    job: Arc<str>,
    work: Work,
}

fn bar_style(prefix_width: usize) -> ProgressStyle {
    // Rate and ETA are reshard's own (in the message): indicatif's count the position a
    // resumed bar starts at as done in its first instant, and promise 0s to a pending move.
    ProgressStyle::with_template(&format!(
        "{{prefix:<{prefix_width}}} {{bar:30}} {{human_pos}}/{{human_len}} rows {{msg}}"
    ))
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
                        b.set_message(format!("{} {}", rate_text(None, None), m.state));
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
        let now = Instant::now();
        let active = moves
            .iter()
            .map(|m| {
                if working(&m.state) {
                    Active::begin(now, m.rows_copied)
                } else {
                    Active::default()
                }
            })
            .collect();
        Progress {
            inner: Arc::new(Mutex::new(Inner {
                moves,
                active,
                total_active: Active::begin(now, copied_at_start),
                last_line: Instant::now(),
            })),
            display: Arc::new(display),
            job: job.into(),
            work,
        }
    }

    /// (rows done, rows in all) over every move.
    fn sums(inner: &Inner) -> (u64, u64) {
        let done = inner.moves.iter().map(|m| m.rows_copied).sum();
        let all = inner.moves.iter().map(|m| m.rows_total).sum();
        (done, all)
    }

    /// A move bar's message: its own rate and ETA, then its state.
    fn move_text(inner: &Inner, i: usize, now: Instant) -> String {
        let m = &inner.moves[i];
        let (r, e) = inner.active[i].rate_eta(now, m.rows_copied, m.rows_total);
        format!("{} {}", rate_text(r, e), m.state)
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
        let now = Instant::now();
        let was = inner.active[i];
        inner.active[i] = match (working(state), was.since.is_some() && was.until.is_none()) {
            (true, false) => Active::begin(now, inner.moves[i].rows_copied),
            (false, true) => Active {
                until: Some(now),
                ..was
            },
            _ => was,
        };
        let m = inner.moves[i].clone();
        match &*self.display {
            Display::Bars { per_move, .. } => {
                if state == "copied" {
                    per_move[i].set_position(m.rows_total.max(m.rows_copied));
                }
                per_move[i].set_message(Self::move_text(&inner, i, now));
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
                let now = Instant::now();
                if inner.active[i].since.is_none() {
                    // Rows from a move no state change started: its work began with them.
                    inner.active[i] = Active::begin(now, inner.moves[i].rows_copied - rows);
                }
                per_move[i].set_length(inner.moves[i].rows_total);
                per_move[i].set_position(inner.moves[i].rows_copied);
                per_move[i].set_message(Self::move_text(&inner, i, now));
                let (done, all) = Self::sums(&inner);
                total.set_length(all);
                total.inc(rows);
                let (r, e) = inner.total_active.rate_eta(now, done, all);
                total.set_message(rate_text(r, e));
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
        let (copied, total) = Self::sums(inner);
        let now = Instant::now();
        let (rate, eta) = inner.total_active.rate_eta(now, copied, total);
        match &*self.display {
            Display::Json => {
                let key = self.work.key();
                let mut e = json!({
                    "event": "progress", "job": &*self.job, "rows_total": total,
                    "rows_per_second": rate, "eta_seconds": eta,
                    "moves": inner.moves.iter().zip(&inner.active).map(|(m, a)| {
                        let (r, e) = a.rate_eta(now, m.rows_copied, m.rows_total);
                        let mut o = json!({"id": m.id, "state": m.state, "rows_total": m.rows_total,
                            "rows_per_second": r, "eta_seconds": e});
                        o[key] = json!(m.rows_copied);
                        o
                    }).collect::<Vec<_>>(),
                });
                e[key] = json!(copied);
                emit(e)
            }
            _ => eprintln!(
                "reshard: {} {}: {copied} of {total} rows {}, {} rows/s, ETA {}",
                stamp(),
                self.job,
                match self.work {
                    Work::Copy => "copied",
                    Work::Verify => "verified",
                },
                rate.map_or("-".into(), |r| r.to_string()),
                eta.map_or("-".into(), |s| format!("{s} s"))
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

/// [`say`] with the UTC time of day after the `reshard: ` prefix, like the plain progress
/// lines: for the steps of complete, cancel and rollback, which have no bars.
pub fn say_at(text: impl AsRef<str>) {
    let text = text.as_ref();
    let body = text.strip_prefix("reshard: ").unwrap_or(text);
    say(format!("reshard: {} {body}", stamp()));
}

/// Prints `line()` through [`say_at`] at most every two seconds: a long step's heartbeat.
pub struct Heartbeat {
    last: Instant,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            last: Instant::now(),
        }
    }

    pub fn beat(&mut self, line: impl FnOnce() -> String) {
        if self.last.elapsed() >= PLAIN_EVERY {
            self.last = Instant::now();
            say_at(line());
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_move_has_no_rate_and_no_eta() {
        let a = Active::default();
        assert_eq!(a.rate_eta(Instant::now(), 0, 5000), (None, None));
        assert_eq!(rate_text(None, None), "- ETA -");
    }

    #[test]
    fn a_resumed_move_counts_only_this_runs_rows() {
        let t = Instant::now();
        // 90,000 rows done by a killed run, 10,000 more in this run's 10 s.
        let a = Active::begin(t, 90_000);
        let later = t + Duration::from_secs(10);
        assert_eq!(a.rate_eta(later, 100_000, 150_000), (Some(1_000), Some(50)));
    }

    #[test]
    fn each_move_has_its_own_time() {
        let t = Instant::now();
        // m1 copied 20,000 rows in its 4 s, then stopped; m2 began at 4 s and did 3,000 in 1 s.
        let m1 = Active {
            since: Some((t, 0)),
            until: Some(t + Duration::from_secs(4)),
        };
        let m2 = Active::begin(t + Duration::from_secs(4), 0);
        let now = t + Duration::from_secs(5);
        assert_eq!(m1.rate_eta(now, 20_000, 20_000), (Some(5_000), Some(0)));
        assert_eq!(m2.rate_eta(now, 3_000, 6_000), (Some(3_000), Some(1)));
    }

    #[test]
    fn no_eta_before_a_second_of_work() {
        assert_eq!(rate_and_eta(5_000, 0.2, 1_000_000), (None, None));
        assert_eq!(rate_and_eta(5_000, 0.2, 0), (None, Some(0)));
    }
}
