//! A picture of a plan, for reviewers: `reshard plan --svg FILE`.
//!
//! Rings are drawn as two concentric annuli (inner: before, outer: after) with each node's arcs in
//! its colour and the moving arcs marked in an outer band; ranges as two bars on an ordinal scale
//! (every breakpoint gets the same width, because real key ranges span orders of magnitude);
//! modulo maps as a grid of residue classes. Pure: it returns the SVG text.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::hashing::{token_fraction, Token};
use crate::map::{ring_tokens, Bound, Map, Partitioning};
use crate::plan::{Plan, Segments};

const WIDTH: f64 = 900.0;
/// Above this many residue classes the grid would be unreadable; the first ones are shown.
const MAX_CELLS: u64 = 240;

/// A stable colour per shard: hues spread by the shard's position in the sorted list of all
/// shards of both maps, so the same shard has the same colour before and after.
fn palette(plan: &Plan) -> Vec<String> {
    all_shards(plan)
}

fn all_shards(plan: &Plan) -> Vec<String> {
    let set: BTreeSet<String> = plan
        .from
        .partitioning
        .owners()
        .into_iter()
        .chain(plan.to.partitioning.owners())
        .collect();
    set.into_iter().collect()
}

fn colour(shards: &[String], name: &str) -> String {
    let i = shards.iter().position(|s| s == name).unwrap_or(0);
    let n = shards.len().max(1);
    // Golden-angle steps keep neighbours apart even with many shards.
    let hue = (i as f64 * 137.508) % 360.0;
    let light = if n > 12 && i % 2 == 1 { 38 } else { 55 };
    format!("hsl({hue:.0},65%,{light}%)")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the plan as a standalone SVG document.
pub fn plan_svg(plan: &Plan) -> String {
    let shards = palette(plan);
    let mut body = String::new();
    let mut height = 80.0;
    let title = format!(
        "{} → {}: {:.2}% of keys move in {} move(s); balance {:.3} → {:.3}",
        plan.from.partitioning.kind(),
        plan.to.partitioning.kind(),
        plan.summary.moved_fraction * 100.0,
        plan.moves.len(),
        plan.summary.balance_before,
        plan.summary.balance_after
    );
    let _ = writeln!(
        body,
        r#"<text x="20" y="30" font-size="18" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    match (&plan.from.partitioning, &plan.to.partitioning) {
        (Partitioning::Ring { .. }, Partitioning::Ring { .. }) => {
            height = ring_picture(plan, &shards, &mut body, height);
        }
        (Partitioning::Range { .. }, Partitioning::Range { .. }) => {
            height = range_picture(plan, &shards, &mut body, height);
        }
        (Partitioning::Modulo { .. }, Partitioning::Modulo { .. }) => {
            height = modulo_picture(plan, &shards, &mut body, height);
        }
        _ => {
            height = moves_picture(plan, &shards, &mut body, height);
        }
    }
    height = shares_picture(plan, &shards, &mut body, height + 20.0);
    height = legend(&shards, &mut body, height + 10.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{h}\" \
         viewBox=\"0 0 {WIDTH} {h}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        h = height + 20.0
    )
}

/// `(start, end, owner)` arcs as fractions of the hash space, adjacent arcs of one owner merged.
fn ring_arcs(map: &Map) -> Vec<(f64, f64, String)> {
    let Partitioning::Ring {
        hash,
        vnodes,
        nodes,
    } = &map.partitioning
    else {
        return Vec::new();
    };
    let mut toks = ring_tokens(*hash, *vnodes, nodes);
    toks.sort();
    let bits = hash.bits();
    let mut arcs: Vec<(f64, f64, String)> = Vec::new();
    let mut prev = 0.0;
    for (t, n) in &toks {
        let f = token_fraction(t, bits);
        push_arc(&mut arcs, prev, f, &nodes[*n]);
        prev = f;
    }
    // Keys above the last token wrap to the smallest token's node.
    if let Some((_, n)) = toks.first() {
        push_arc(&mut arcs, prev, 1.0, &nodes[*n]);
    }
    arcs
}

fn push_arc(arcs: &mut Vec<(f64, f64, String)>, a: f64, b: f64, owner: &str) {
    if let Some(last) = arcs.last_mut() {
        if last.2 == owner && (last.1 - a).abs() < 1e-15 {
            last.1 = b;
            return;
        }
    }
    if b > a {
        arcs.push((a, b, owner.to_string()));
    }
}

fn hex_fraction(hex: &str, bits: u32) -> f64 {
    let mut t: Token = [0u8; 20];
    let skip = (160 - bits as usize) / 8;
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        if skip + i >= 20 {
            break;
        }
        let s = std::str::from_utf8(chunk).unwrap_or("00");
        t[skip + i] = u8::from_str_radix(s, 16).unwrap_or(0);
    }
    token_fraction(&t, bits)
}

/// An annulus centred at (cx, cy) between radii r0 < r1.
#[derive(Clone, Copy)]
struct Band {
    cx: f64,
    cy: f64,
    r0: f64,
    r1: f64,
}

/// The sector of `band` between fractions a and b of the full turn, clockwise from 12 o'clock.
fn annulus(band: Band, a: f64, b: f64, fill: &str, extra: &str) -> String {
    use std::f64::consts::PI;
    let Band { cx, cy, r0, r1 } = band;
    // A full circle cannot be one arc command; split it.
    if b - a >= 0.999_999 {
        let mid = a + 0.5;
        return annulus(band, a, mid, fill, extra) + &annulus(band, mid, b, fill, extra);
    }
    let ang = |f: f64| 2.0 * PI * f - PI / 2.0;
    let p = |r: f64, f: f64| (cx + r * ang(f).cos(), cy + r * ang(f).sin());
    let large = if b - a > 0.5 { 1 } else { 0 };
    let (x0, y0) = p(r1, a);
    let (x1, y1) = p(r1, b);
    let (x2, y2) = p(r0, b);
    let (x3, y3) = p(r0, a);
    format!(
        "<path d=\"M{x0:.2},{y0:.2} A{r1},{r1} 0 {large} 1 {x1:.2},{y1:.2} L{x2:.2},{y2:.2} \
         A{r0},{r0} 0 {large} 0 {x3:.2},{y3:.2} Z\" fill=\"{fill}\" {extra}/>\n"
    )
}

fn ring_picture(plan: &Plan, shards: &[String], out: &mut String, top: f64) -> f64 {
    let (cx, cy) = (WIDTH / 2.0, top + 250.0);
    for (a, b, owner) in ring_arcs(&plan.from) {
        out.push_str(&annulus(
            Band {
                cx,
                cy,
                r0: 110.0,
                r1: 160.0,
            },
            a,
            b,
            &colour(shards, &owner),
            "",
        ));
    }
    for (a, b, owner) in ring_arcs(&plan.to) {
        out.push_str(&annulus(
            Band {
                cx,
                cy,
                r0: 170.0,
                r1: 220.0,
            },
            a,
            b,
            &colour(shards, &owner),
            "",
        ));
    }
    for m in &plan.moves {
        if let Segments::Arcs { hash, arcs } = &m.segments {
            for arc in arcs {
                let a = hex_fraction(&arc.from, hash.bits());
                let b = arc
                    .to
                    .as_deref()
                    .map(|t| hex_fraction(t, hash.bits()))
                    .unwrap_or(1.0);
                let title = format!(
                    "<title>{} {} → {}</title>",
                    esc(&m.id),
                    esc(&m.source),
                    esc(&m.destination)
                );
                let p = annulus(
                    Band {
                        cx,
                        cy,
                        r0: 225.0,
                        r1: 240.0,
                    },
                    a,
                    b.max(a + 0.0005),
                    "crimson",
                    "class=\"moving\"",
                );
                out.push_str(&p.replace("/>\n", &format!(">{title}</path>\n")));
            }
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{cx}" y="{}" text-anchor="middle" font-size="13">inner ring: before · outer ring: after · red band: keys that move</text>"#,
        cy + 262.0
    );
    cy + 275.0
}

fn bound_label(b: &Option<Bound>, lower: bool) -> String {
    match b {
        None if lower => "−∞".into(),
        None => "+∞".into(),
        Some(b) => b.to_string(),
    }
}

fn range_picture(plan: &Plan, shards: &[String], out: &mut String, top: f64) -> f64 {
    let (Partitioning::Range { ranges: before }, Partitioning::Range { ranges: after }) =
        (&plan.from.partitioning, &plan.to.partitioning)
    else {
        return top;
    };
    // Ordinal scale over every breakpoint of both maps.
    let mut points: Vec<Bound> = before
        .iter()
        .chain(after.iter())
        .flat_map(|r| [r.from.clone(), r.to.clone()])
        .flatten()
        .collect();
    points.sort();
    points.dedup();
    let slots = points.len() + 1;
    let x0 = 60.0;
    let w = (WIDTH - 2.0 * x0) / slots as f64;
    let pos = |b: &Option<Bound>, lower: bool| -> f64 {
        match b {
            None if lower => x0,
            None => x0 + w * slots as f64,
            Some(v) => x0 + w * (points.iter().position(|p| p == v).unwrap_or(0) + 1) as f64,
        }
    };
    for (row, (label, ranges)) in [("before", before), ("after", after)].iter().enumerate() {
        let y = top + 20.0 + row as f64 * 70.0;
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-size="13">{label}</text>"#,
            y + 25.0
        );
        for r in ranges.iter() {
            let (a, b) = (pos(&r.from, true), pos(&r.to, false));
            let _ = writeln!(
                out,
                r#"<rect x="{a:.1}" y="{y}" width="{:.1}" height="40" fill="{}" stroke="white"><title>{} [{}, {})</title></rect>"#,
                b - a,
                colour(shards, &r.shard),
                esc(&r.shard),
                esc(&bound_label(&r.from, true)),
                esc(&bound_label(&r.to, false))
            );
        }
    }
    let y = top + 160.0;
    for m in &plan.moves {
        if let Segments::Ranges { ranges } = &m.segments {
            for r in ranges {
                let (a, b) = (pos(&r.from, true), pos(&r.to, false));
                let _ = writeln!(
                    out,
                    r#"<rect class="moving" x="{a:.1}" y="{y}" width="{:.1}" height="12" fill="crimson"><title>{} {} → {}</title></rect>"#,
                    b - a,
                    esc(&m.id),
                    esc(&m.source),
                    esc(&m.destination)
                );
            }
        }
    }
    for (i, p) in points.iter().enumerate() {
        let x = x0 + w * (i + 1) as f64;
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            y + 30.0,
            esc(&p.to_string())
        );
    }
    y + 45.0
}

fn modulo_picture(plan: &Plan, shards: &[String], out: &mut String, top: f64) -> f64 {
    let (Partitioning::Modulo { shards: a, .. }, Partitioning::Modulo { shards: b, .. }) =
        (&plan.from.partitioning, &plan.to.partitioning)
    else {
        return top;
    };
    let (n, m) = (a.len() as u64, b.len() as u64);
    let l = lcm(n, m);
    let cells = l.min(MAX_CELLS);
    let per_row = 40u64;
    let size = (WIDTH - 80.0) / per_row as f64;
    let rows = cells.div_ceil(per_row);
    for r in 0..cells {
        let (gx, gy) = ((r % per_row) as f64, (r / per_row) as f64);
        let x = 60.0 + gx * size;
        let y = top + 20.0 + gy * (2.0 * size + 12.0);
        if r % per_row == 0 {
            // Each grid row says which half is which map.
            let _ = writeln!(
                out,
                r#"<text x="12" y="{:.1}" font-size="9">before</text><text x="12" y="{:.1}" font-size="9">after</text>"#,
                y + size * 0.75,
                y + size * 1.75
            );
        }
        if r % 10 == 0 {
            // The residue of every tenth column, above it.
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{:.1}" font-size="8">{r}</text>"#,
                y - 2.0
            );
        }
        let old = &a[(r % n) as usize];
        let new = &b[(r % m) as usize];
        let moving = old != new;
        let stroke = if moving {
            "crimson\" stroke-width=\"2"
        } else {
            "white"
        };
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{size:.1}" height="{size:.1}" fill="{}" stroke="{stroke}"><title>residue {r} mod {l}: {} → {}</title></rect>"#,
            colour(shards, old),
            esc(old),
            esc(new)
        );
        let _ = writeln!(
            out,
            r#"<rect{} x="{x:.1}" y="{:.1}" width="{size:.1}" height="{size:.1}" fill="{}" stroke="{stroke}"/>"#,
            if moving { " class=\"moving\"" } else { "" },
            y + size,
            colour(shards, new)
        );
    }
    let bottom = top + 20.0 + rows as f64 * (2.0 * size + 12.0);
    let note = if l > cells {
        format!("residues 0..{cells} of {l} shown; ")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        r#"<text x="60" y="{}" font-size="13">{note}each column: residue class mod {l}, top: before, bottom: after; red outline: moves</text>"#,
        bottom + 14.0
    );
    bottom + 24.0
}

/// Maps of different kinds have no common geometry: one bar per move, as long as the share
/// of the keys it moves, labelled with the move, its shards and that share.
fn moves_picture(plan: &Plan, shards: &[String], out: &mut String, top: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="20" y="{}" font-size="14" font-weight="bold">keys each move takes (share of the key space)</text>"#,
        top + 14.0
    );
    let max = plan
        .moves
        .iter()
        .map(|m| m.fraction)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut y = top + 26.0;
    for m in plan.moves.iter().take(MAX_CELLS as usize) {
        let w = 520.0 * m.fraction / max;
        let _ = writeln!(
            out,
            r#"<text x="20" y="{:.1}" font-size="12">{} {} → {}</text><rect class="moving-share" x="200" y="{:.1}" width="{w:.1}" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{:.2}%</text>"#,
            y + 11.0,
            esc(&m.id),
            esc(&m.source),
            esc(&m.destination),
            y + 1.0,
            colour(shards, &m.destination),
            206.0 + w,
            y + 11.0,
            m.fraction * 100.0
        );
        y += 18.0;
    }
    if plan.moves.len() > MAX_CELLS as usize {
        let _ = writeln!(
            out,
            r#"<text x="20" y="{:.1}" font-size="12">… {} more moves</text>"#,
            y + 11.0,
            plan.moves.len() - MAX_CELLS as usize
        );
        y += 18.0;
    }
    y
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        return 0;
    }
    a / gcd(a, b) * b
}

fn shares_picture(plan: &Plan, shards: &[String], out: &mut String, top: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="20" y="{}" font-size="14" font-weight="bold">share of the key space, before (upper) and after (lower)</text>"#,
        top + 14.0
    );
    let max = plan
        .summary
        .shares_before
        .values()
        .chain(plan.summary.shares_after.values())
        .cloned()
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut y = top + 26.0;
    for s in shards {
        let before = plan.summary.shares_before.get(s).copied().unwrap_or(0.0);
        let after = plan.summary.shares_after.get(s).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            r#"<text x="20" y="{}" font-size="12">{}</text>"#,
            y + 14.0,
            esc(s)
        );
        for (i, v) in [before, after].iter().enumerate() {
            let w = 600.0 * v / max;
            let yy = y + i as f64 * 9.0 + 2.0;
            let _ = writeln!(
                out,
                r#"<rect x="120" y="{yy:.1}" width="{w:.1}" height="8" fill="{}" opacity="{}"/><text x="{:.1}" y="{:.1}" font-size="9">{:.2}%</text>"#,
                colour(shards, s),
                if i == 0 { "0.55" } else { "1" },
                126.0 + w,
                yy + 8.0,
                v * 100.0
            );
        }
        y += 22.0;
    }
    y
}

fn legend(shards: &[String], out: &mut String, top: f64) -> f64 {
    let mut x = 20.0;
    let mut y = top;
    for s in shards {
        if x > WIDTH - 120.0 {
            x = 20.0;
            y += 20.0;
        }
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            colour(shards, s),
            x + 16.0,
            y + 11.0,
            esc(s)
        );
        x += 100.0;
    }
    y + 20.0
}
