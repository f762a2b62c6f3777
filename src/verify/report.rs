//! Verification reports: per move and table, rows compared, chunks, and the differences
//! (missing at the destination, extra at the destination, differing with their columns), each
//! list capped. Serialized as the `--format json` output and stored in the catalog.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::backend::{PkValues, Value};

/// One row present on both sides with different values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Differing {
    /// Primary-key values, in primary-key column order (plain JSON values).
    pub pk: Json,
    /// Names of the columns whose values differ.
    pub columns: Vec<String>,
}

/// The differences of one chunk (or merged over a table), lists capped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub missing_count: u64,
    pub missing: Vec<Json>,
    pub extra_count: u64,
    pub extra: Vec<Json>,
    pub differing_count: u64,
    pub differing: Vec<Differing>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing_count == 0 && self.extra_count == 0 && self.differing_count == 0
    }

    /// Adds `other` to this, keeping at most `cap` entries per list.
    pub fn merge(&mut self, other: Diff, cap: usize) {
        self.missing_count += other.missing_count;
        self.extra_count += other.extra_count;
        self.differing_count += other.differing_count;
        fn take<T>(dst: &mut Vec<T>, src: Vec<T>, cap: usize) {
            let room = cap.saturating_sub(dst.len());
            dst.extend(src.into_iter().take(room));
        }
        take(&mut self.missing, other.missing, cap);
        take(&mut self.extra, other.extra, cap);
        take(&mut self.differing, other.differing, cap);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    /// The move's rows at the source (rows compared).
    pub rows_source: u64,
    /// The move's rows at the destination.
    pub rows_destination: u64,
    pub chunks: u64,
    /// Chunks computed by this call (the others were kept from earlier work).
    pub chunks_computed: u64,
    /// Of those, the chunks whose first checksums differed, so that both sides were read again
    /// with their rows (a row written in between, or a real difference). Zero on unchanging
    /// data: the fast read paths encode exactly like the value path.
    #[serde(default)]
    pub chunks_reread: u64,
    pub mismatched_chunks: u64,
    /// sha1 over the chunk checksums of the source, in order: equal for equal data and equal
    /// chunk boundaries, whatever the backend.
    pub source_checksum: String,
    #[serde(flatten)]
    pub diff: Diff,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    pub job: String,
    #[serde(rename = "move")]
    pub move_id: String,
    pub source: String,
    pub destination: String,
    /// "full" or "touched".
    pub scope: String,
    pub ok: bool,
    pub tables: Vec<TableReport>,
}

impl MoveReport {
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "move {} ({} -> {}), {} verification: {}\n",
            self.move_id,
            self.source,
            self.destination,
            self.scope,
            if self.ok { "MATCH" } else { "MISMATCH" }
        );
        for t in &self.tables {
            s.push_str(&format!(
                "  {}: {} rows at source, {} at destination, {} chunks ({} computed now), \
                 {} mismatched\n",
                t.table,
                t.rows_source,
                t.rows_destination,
                t.chunks,
                t.chunks_computed,
                t.mismatched_chunks
            ));
            if t.chunks_reread > 0 {
                s.push_str(&format!(
                    "    chunks read again with their rows (first checksums differed): {}\n",
                    t.chunks_reread
                ));
            }
            let d = &t.diff;
            if d.missing_count > 0 {
                s.push_str(&format!(
                    "    missing at destination: {}{}\n",
                    d.missing_count,
                    listed(&d.missing, d.missing_count)
                ));
            }
            if d.extra_count > 0 {
                s.push_str(&format!(
                    "    extra at destination: {}{}\n",
                    d.extra_count,
                    listed(&d.extra, d.extra_count)
                ));
            }
            if d.differing_count > 0 {
                s.push_str(&format!("    differing: {}\n", d.differing_count));
                for r in &d.differing {
                    s.push_str(&format!(
                        "      pk {} columns {}\n",
                        r.pk,
                        r.columns.join(", ")
                    ));
                }
                if (d.differing.len() as u64) < d.differing_count {
                    s.push_str(&format!(
                        "      ... and {} more\n",
                        d.differing_count - d.differing.len() as u64
                    ));
                }
            }
        }
        s
    }
}

fn listed(pks: &[Json], total: u64) -> String {
    let shown: Vec<String> = pks.iter().map(|p| p.to_string()).collect();
    let more = if (pks.len() as u64) < total {
        format!(" ... and {} more", total - pks.len() as u64)
    } else {
        String::new()
    };
    format!(" (pk {}{more})", shown.join(", "))
}

/// Primary-key values as a plain JSON array (`[42, "abc"]`), for people and tools.
pub fn pk_json(pk: &PkValues) -> Json {
    Json::Array(pk.iter().map(value_json).collect())
}

pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(b) => Json::from(f64::from_bits(*b).to_string()),
        Value::Float32(b) => Json::from(f32::from_bits(*b).to_string()),
        Value::Text(s) => Json::from(s.clone()),
        Value::Bytes(b) => Json::from(
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
                .to_string(),
        ),
    }
}
