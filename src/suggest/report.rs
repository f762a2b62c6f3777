//! The report as text for a reviewer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::range::show_range;
use super::{Report, ShardRow, Weigh};

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

fn rate(r: Option<f64>) -> String {
    r.map_or("-".to_string(), |w| format!("{w:.2}"))
}

/// Shards before and after: rows and share of the basis, with writes/s and bytes beside them
/// where they were measured (after: predicted).
fn shard_table(out: &mut String, r: &Report) {
    let b: BTreeMap<&str, &ShardRow> = r.before.iter().map(|x| (x.shard.as_str(), x)).collect();
    let a: BTreeMap<&str, &ShardRow> = r.after.iter().map(|x| (x.shard.as_str(), x)).collect();
    let mut names: Vec<&str> = b.keys().chain(a.keys()).copied().collect();
    names.sort();
    names.dedup();
    let writes = r.before.iter().any(|x| x.writes_per_second.is_some());
    let bytes = r.before.iter().any(|x| x.bytes.is_some());
    let share_of = match r.weigh {
        Weigh::Rows => String::new(),
        w => format!(", share of {}", w.word()),
    };
    let mut head = format!(
        "  {:<16} {:>24}",
        "shard",
        format!("rows before (share{share_of})")
    );
    if writes {
        let _ = write!(head, " {:>10}", "writes/s");
    }
    if bytes {
        let _ = write!(head, " {:>14}", "bytes");
    }
    let _ = write!(head, " {:>22}", "rows after (share)");
    if writes {
        let _ = write!(head, " {:>10}", "writes/s");
    }
    let _ = writeln!(out, "{head}");
    let cell = |r: Option<&&ShardRow>| match r {
        Some(r) => format!("{} ({})", thousands(r.rows), pct(r.share)),
        None => "-".to_string(),
    };
    for n in names {
        let (x, y) = (b.get(n), a.get(n));
        let mut line = format!("  {:<16} {:>24}", n, cell(x));
        if writes {
            let _ = write!(line, " {:>10}", rate(x.and_then(|x| x.writes_per_second)));
        }
        if bytes {
            let shown = x.and_then(|x| x.bytes).map_or("-".into(), thousands);
            let _ = write!(line, " {shown:>14}");
        }
        let _ = write!(line, " {:>22}", cell(y));
        if writes {
            let _ = write!(line, " {:>10}", rate(y.and_then(|y| y.writes_per_second)));
        }
        let _ = writeln!(out, "{line}");
    }
}

fn render_merges(out: &mut String, r: &Report) {
    for g in &r.merges {
        let (which, other) = match &g.other {
            Some((s, v)) => ("colder", format!("; {s} would have made {}", pct(*v))),
            None => ("only", String::new()),
        };
        let _ = writeln!(
            out,
            "merge {} of {} ({}) into {}, its {which} neighbour: the merged range holds {}{}; {} \
             rows move",
            show_range(&g.from, &g.to),
            g.shard,
            pct(g.share),
            g.into,
            pct(g.merged_share),
            other,
            thousands(g.rows)
        );
    }
}

/// Where the write rates come from, and how far to trust them.
fn render_writes(out: &mut String, r: &Report) {
    let Some(secs) = r.sample_seconds else {
        return;
    };
    let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (shard, src) in &r.writes_sources {
        by_source.entry(src).or_default().push(shard);
    }
    for (src, shards) in &by_source {
        let _ = writeln!(
            out,
            "write rates of {} over a {secs}s window, from {src}",
            shards.join(", ")
        );
        if *src == "pg_stat_user_tables" {
            let _ = writeln!(
                out,
                "  (PostgreSQL sessions flush their counts at most once a second: a steady \
                 writer's rate is right to about ±{:.0}% over {secs}s)",
                100.0 / secs.max(1.0)
            );
        }
    }
    for (shard, why) in &r.writes_unavailable {
        let _ = writeln!(out, "shard {shard}: {why}");
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
    let of = match r.weigh {
        Weigh::Rows => String::new(),
        w => format!(" of the {}", w.word()),
    };
    let _ = writeln!(
        out,
        "suggest: {} map, {} rows measured; target {}{of} ({})",
        r.kind,
        thousands(r.total_rows),
        pct(r.target_share),
        r.target
    );
    shard_table(&mut out, r);
    render_writes(&mut out, r);
    render_merges(&mut out, r);
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
    if !r.removed_shards.is_empty() {
        let _ = writeln!(out, "removed shards: {}", r.removed_shards.join(", "));
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
