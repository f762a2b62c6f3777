//! Checking a plan document against the plan its own maps give.
//!
//! The fingerprint only covers the `from` and `to` maps, so a hand edit of anything derived from
//! them (a move deleted, a source or destination changed, a segment or fraction changed) would
//! otherwise go unnoticed, and `apply` would route keys to a shard that never received their
//! rows. The planner is pure and deterministic, so the derived fields can simply be recomputed
//! and compared. `plan --check` and `apply` share the differ here.

use serde_json::Value;

use crate::error::InputError;
use crate::plan::Plan;
use crate::planner::{self, PlannerOptions};

/// One JSON path where two documents differ; `None` is a side where the path is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

impl std::fmt::Display for Difference {
    /// `path: OLD vs NEW`, values abbreviated, `(absent)` for a missing side.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |v: &Option<Value>| v.as_ref().map_or_else(|| "(absent)".into(), brief);
        write!(
            f,
            "{}: {} vs {}",
            self.path,
            side(&self.old),
            side(&self.new)
        )
    }
}

/// A side of a difference: scalars in full (a fingerprint or a URL cut short cannot be
/// compared by eye), arrays and objects cut at 60 characters.
fn brief(v: &Value) -> String {
    let s = v.to_string();
    if !v.is_array() && !v.is_object() {
        return s;
    }
    if s.chars().count() > 60 {
        let t: String = s.chars().take(59).collect();
        format!("{t}…")
    } else {
        s
    }
}

/// The JSON paths where two values differ, with both sides, in document order.
pub fn json_diff(path: &str, old: &Value, new: &Value, out: &mut Vec<Difference>) {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let push = |out: &mut Vec<Difference>, path: String, a: Option<&Value>, b: Option<&Value>| {
        out.push(Difference {
            path,
            old: a.cloned(),
            new: b.cloned(),
        })
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => json_diff(&at(k), va, vb, out),
                    None => push(out, at(k), Some(va), None),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    push(out, at(k), None, Some(vb));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let p = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => json_diff(&p, x, y, out),
                    (x, y) if x.is_some() || y.is_some() => push(out, p, x, y),
                    _ => {}
                }
            }
        }
        (a, b) if a != b => push(out, path.to_string(), Some(a), Some(b)),
        _ => {}
    }
}

/// Most differences named in one refusal; the rest are counted.
const MAX_NAMED: usize = 20;

/// The fields of a plan that are checked against the recomputed plan: everything except the
/// maps themselves (the inputs, already covered by the fingerprint, and whose URLs are redacted
/// differently on the way in and out) and `summary.rows`, which is not derived from the maps.
fn derived(plan: &Plan) -> Value {
    let mut v = serde_json::to_value(plan).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.remove("from");
        o.remove("to");
        if let Some(Value::Object(s)) = o.get_mut("summary") {
            s.remove("rows");
        }
    }
    v
}

/// The paths where `plan` (as loaded from the file `label`) differs from the plan its maps
/// give. Compares parsed content, so JSON formatting and key order do not matter.
pub fn differences(plan: &Plan, label: &str) -> Result<Vec<Difference>, InputError> {
    let fresh = planner::plan_labeled(
        &plan.from,
        &format!("{label}: from"),
        &plan.to,
        &format!("{label}: to"),
        &PlannerOptions::default(),
    )?;
    let mut out = Vec::new();
    json_diff("", &derived(plan), &derived(&fresh), &mut out);
    Ok(out)
}

/// Refuses (exit 2) a plan whose moves, segments, fractions or summary are not exactly what its
/// maps give: a hand-edited plan would move some keys' rows nowhere. Pure; does no I/O.
pub fn check_matches_maps(plan: &Plan, label: &str) -> Result<(), InputError> {
    refuse_differences(
        plan,
        label,
        format!(
            "{label}: the plan was edited after it was made; nothing was done (regenerate the \
             plan: reshard plan --from OLD --to NEW -o {label})"
        ),
    )
}

/// The same check for the plan a job stored in the catalog, before a command acts on the job:
/// the catalog is as editable as the file was, and a changed move would route keys to a shard
/// that never received their rows just the same.
pub fn check_stored(plan: &Plan, job: &str) -> Result<(), InputError> {
    let label = format!("job {job} plan (jobs.plan_json)");
    let last = format!(
        "{label}: the plan stored with the job was changed after apply recorded it; nothing was \
         done (restore it from the plan file the job was applied from, then run the command again)"
    );
    refuse_differences(plan, &label, last)
}

fn refuse_differences(plan: &Plan, label: &str, last: String) -> Result<(), InputError> {
    let diffs = differences(plan, label)?;
    if diffs.is_empty() {
        return Ok(());
    }
    let mut problems: Vec<String> = diffs
        .iter()
        .take(MAX_NAMED)
        .map(|d| {
            let side = |v: &Option<Value>| v.as_ref().map_or_else(|| "(absent)".into(), brief);
            format!(
                "{label}: {} differs from what the maps give (plan has {}, the maps give {})",
                d.path,
                side(&d.old),
                side(&d.new)
            )
        })
        .collect();
    if diffs.len() > MAX_NAMED {
        problems.push(format!(
            "{label}: … and {} more differences",
            diffs.len() - MAX_NAMED
        ));
    }
    problems.push(last);
    Err(InputError::many(problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Map;
    use crate::plan::Segments;

    fn modulo(n: usize) -> Map {
        let names: Vec<String> = (0..n).map(|i| format!("\"s{i}\"")).collect();
        let shards: Vec<String> = (0..n)
            .map(|i| format!("\"s{i}\": \"sqlite://data/s{i}.db\""))
            .collect();
        let text = format!(
            r#"{{"shards": {{{}}}, "tables": [{{"name": "users", "key": "id"}}],
               "partitioning": {{"kind": "modulo", "hash": "identity", "shards": [{}]}}}}"#,
            shards.join(", "),
            names.join(", ")
        );
        Map::parse(&text, "m").expect("valid map")
    }

    fn fresh() -> Plan {
        planner::plan(&modulo(4), &modulo(5)).expect("plan")
    }

    fn paths(p: &Plan) -> Vec<String> {
        differences(p, "plan.json")
            .unwrap()
            .into_iter()
            .map(|d| d.path)
            .collect()
    }

    #[test]
    fn diff_names_paths() {
        let a: Value =
            serde_json::json!({"summary": {"moved_fraction": 0.5}, "moves": [{"id": "m1"}]});
        let b: Value = serde_json::json!({"summary": {"moved_fraction": 0.4}, "moves": []});
        let mut out = Vec::new();
        json_diff("", &a, &b, &mut out);
        let shown: Vec<String> = out.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "moves[0]: {\"id\":\"m1\"} vs (absent)".to_string(),
                "summary.moved_fraction: 0.5 vs 0.4".to_string(),
            ]
        );
    }

    #[test]
    fn an_unedited_plan_matches_even_after_a_round_trip() {
        let p = fresh();
        assert!(p.moves.len() >= 2, "{p:?}");
        let back = Plan::parse(&p.to_json(), "plan.json").unwrap();
        assert!(paths(&back).is_empty());
        // Compact JSON and a different key order are the same plan.
        let compact = serde_json::to_string(&p).unwrap();
        let back = Plan::parse(&compact, "plan.json").unwrap();
        check_matches_maps(&back, "plan.json").unwrap();
    }

    #[test]
    fn each_kind_of_edit_names_its_path() {
        let base = fresh();
        let n = base.moves.len();

        let mut p = base.clone();
        p.moves.remove(n - 1);
        assert_eq!(paths(&p), vec![format!("moves[{}]", n - 1)]);

        let mut p = base.clone();
        p.moves.clear();
        assert_eq!(paths(&p).len(), n);
        assert_eq!(paths(&p)[0], "moves[0]");

        let mut p = base.clone();
        let extra = p.moves[0].clone();
        p.moves.push(extra);
        assert_eq!(paths(&p), vec![format!("moves[{n}]")]);

        let mut p = base.clone();
        p.moves[1].destination = p.moves[0].destination.clone() + "x";
        assert_eq!(paths(&p), vec!["moves[1].destination"]);

        let mut p = base.clone();
        p.moves[0].source = "s9".into();
        assert_eq!(paths(&p), vec!["moves[0].source"]);

        let mut p = base.clone();
        p.moves[0].fraction += 0.01;
        assert_eq!(paths(&p), vec!["moves[0].fraction"]);

        let mut p = base.clone();
        match &mut p.moves[0].segments {
            Segments::Residues { residues, .. } => residues[0] += 1,
            other => panic!("modulo plan with {other:?}"),
        }
        assert_eq!(paths(&p), vec!["moves[0].segments.residues[0]"]);

        let mut p = base.clone();
        p.summary.moved_fraction = 0.0;
        assert_eq!(paths(&p), vec!["summary.moved_fraction"]);
    }

    #[test]
    fn the_refusal_names_the_file_the_path_and_how_to_regenerate() {
        let mut p = fresh();
        p.moves[1].destination = "s0".into();
        let e = check_matches_maps(&p, "plans/x/plan.json").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(
                "plans/x/plan.json: moves[1].destination differs from what the maps give"
            ),
            "{text}"
        );
        assert!(
            text.contains("reshard plan --from OLD --to NEW -o plans/x/plan.json"),
            "{text}"
        );
    }

    #[test]
    fn summary_rows_do_not_count() {
        let mut p = fresh();
        p.summary.rows = Some(42);
        assert!(paths(&p).is_empty());
    }
}
