//! Typed rows read back from the catalog.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingState {
    pub version: i64,
    pub fingerprint: String,
    pub map_json: String,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    /// Kept as text so that a newer reshard's states still list; parse with `JobState::parse`.
    pub state: String,
    pub plan_fingerprint: String,
    pub plan_json: String,
    pub options_json: String,
    pub routing_version: i64,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

pub(super) type JobTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
    String,
    Option<String>,
);

impl JobRow {
    pub(super) const COLUMNS: &'static str = "id, state, plan_fingerprint, plan_json, options_json, \
        routing_version, last_error, lease_owner, lease_expires_ms, created_at, updated_at, finished_at";
}

impl From<JobTuple> for JobRow {
    fn from(t: JobTuple) -> Self {
        JobRow {
            id: t.0,
            state: t.1,
            plan_fingerprint: t.2,
            plan_json: t.3,
            options_json: t.4,
            routing_version: t.5,
            last_error: t.6,
            lease_owner: t.7,
            lease_expires_ms: t.8,
            created_at: t.9,
            updated_at: t.10,
            finished_at: t.11,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveRow {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub state: String,
    pub rows_total: u64,
    pub bytes_total: u64,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    /// Milliseconds spent copying (summed over batches, across runs): the base of the rate.
    pub copy_ms: u64,
    pub flipped: bool,
    pub fence_ms: Option<u64>,
    pub last_error: Option<String>,
    pub started_at: Option<String>,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

pub(super) type MoveTuple = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

impl MoveRow {
    pub(super) const COLUMNS: &'static str = "move_id, source, destination, state, rows_total, \
        bytes_total, rows_copied, bytes_copied, copy_ms, flipped, fence_ms, last_error, started_at, \
        updated_at, finished_at";

    /// Rows per second while copying, when known.
    pub fn rate(&self) -> Option<f64> {
        (self.copy_ms > 0 && self.rows_copied > 0)
            .then(|| self.rows_copied as f64 * 1000.0 / self.copy_ms as f64)
    }

    pub fn eta_seconds(&self) -> Option<u64> {
        let left = self.rows_total.saturating_sub(self.rows_copied);
        if self.state == "copied" {
            return Some(0);
        }
        self.rate().map(|r| (left as f64 / r).ceil() as u64)
    }
}

impl From<MoveTuple> for MoveRow {
    fn from(t: MoveTuple) -> Self {
        let u = |v: i64| v.max(0) as u64;
        MoveRow {
            id: t.0,
            source: t.1,
            destination: t.2,
            state: t.3,
            rows_total: u(t.4),
            bytes_total: u(t.5),
            rows_copied: u(t.6),
            bytes_copied: u(t.7),
            copy_ms: u(t.8),
            flipped: t.9 != 0,
            fence_ms: t.10.map(u),
            last_error: t.11,
            started_at: t.12,
            updated_at: t.13,
            finished_at: t.14,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CursorRow {
    pub table: String,
    /// The primary key of the last row read, as JSON of `Vec<backend::Value>`.
    pub cursor_json: Option<String>,
    pub done: bool,
    pub rows_read: u64,
    pub rows_copied: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub move_id: Option<String>,
    pub at: String,
    pub kind: String,
    pub detail: String,
}
