//! The report as text for a reviewer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::range::show_range;
use super::{Report, ShardRow};

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shard_table(out: &mut String, before: &[ShardRow], after: &[ShardRow]) {
    let b: BTreeMap<&str, &ShardRow> = before.iter().map(|r| (r.shard.as_str(), r)).collect();
    let a: BTreeMap<&str, &ShardRow> = after.iter().map(|r| (r.shard.as_str(), r)).collect();
    let mut names: Vec<&str> = b.keys().chain(a.keys()).copied().collect();
    names.sort();
    names.dedup();
    let _ = writeln!(
        out,
        "  {:<16} {:>22} {:>22}",
        "shard", "rows before (share)", "rows after (share)"
    );
    let cell = |r: Option<&&ShardRow>| match r {
        Some(r) => format!("{} ({})", thousands(r.rows), pct(r.share)),
        None => "-".to_string(),
    };
    for n in names {
        let _ = writeln!(
            out,
            "  {:<16} {:>22} {:>22}",
            n,
            cell(b.get(n)),
            cell(a.get(n))
        );
    }
}

fn render_splits(out: &mut String, r: &Report) {
    for s in &r.splits {
        let _ = writeln!(
            out,
            "split {} of {} ({}) at the data median {}: {} stay, {} go to {}",
            show_range(&s.from, &s.to),
            s.shard,
            pct(s.share_before),
            s.at,
            thousands(s.rows_lower),
            thousands(s.rows_upper),
            s.new_shard
        );
        if let Some(m) = &s.midpoint {
            let _ = writeln!(
                out,
                "  for contrast, the key midpoint {} would split it about {} / {} (estimated)",
                m.at,
                thousands(m.rows_lower),
                thousands(m.rows_upper)
            );
        }
    }
}

fn render_options(out: &mut String, r: &Report) {
    if !r.key_shares.is_empty() {
        let shares: Vec<String> = r
            .key_shares
            .iter()
            .map(|(s, v)| format!("{s} {}", pct(*v)))
            .collect();
        let _ = writeln!(out, "key-space shares now: {}", shares.join(", "));
    }
    if !r.options.is_empty() {
        let _ = writeln!(
            out,
            "  {:<40} {:>12} {:>12} {:>10}",
            "option", "keys moved", "rows moved", "max share"
        );
        for o in &r.options {
            let mark = if r.chosen.as_deref() == Some(o.name.as_str()) {
                "*"
            } else {
                " "
            };
            let _ = writeln!(
                out,
                "{mark} {:<40} {:>12} {:>12} {:>10}",
                o.name,
                format!("{:.3}%", o.moved_fraction * 100.0 + 0.0),
                thousands(o.rows_moved),
                pct(o.max_share_after)
            );
        }
    }
}

/// The report as a reviewer reads it: the target, shares before and after, what moves, why.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "suggest: {} map, {} rows measured; target {} ({})",
        r.kind,
        thousands(r.total_rows),
        pct(r.target_share),
        r.target
    );
    shard_table(&mut out, &r.before, &r.after);
    render_splits(&mut out, r);
    render_options(&mut out, r);
    if let Some(c) = &r.chosen {
        let _ = writeln!(out, "chosen: {c}");
    }
    let _ = writeln!(
        out,
        "rows moved: {}; key space moved: {:.3}% (what reshard plan will say)",
        thousands(r.rows_moved),
        r.moved_fraction * 100.0 + 0.0
    );
    if !r.added_shards.is_empty() {
        let _ = writeln!(out, "new shards: {}", r.added_shards.join(", "));
    }
    if !r.unused_shards.is_empty() {
        let _ = writeln!(out, "not needed: {}", r.unused_shards.join(", "));
    }
    for (t, m) in &r.quantiles {
        let how = match m {
            super::QuantileMethod::Exact => "exact, by key order",
            super::QuantileMethod::Histogram => "approximate, from pg_stats (--exact for exact)",
        };
        let _ = writeln!(out, "key quantiles of {t}: {how}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(
        out,
        "{}",
        if r.reached_target {
            "target reached"
        } else {
            "target NOT reached"
        }
    );
    out
}
