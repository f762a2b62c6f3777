//! `reshard plan --svg`: a picture of every worked example that is valid SVG, marks every moving
//! segment, and (where Debian's chromium is installed) renders to a non-trivial PNG.

use std::path::Path;
use std::process::Command;

const EXAMPLES: &[&str] = &[
    "modulo-4-to-8",
    "modulo-4-to-5-md5",
    "range-split",
    "ring-add",
    "modulo-to-ring",
];

fn draw(example: &str, dir: &Path) -> String {
    let svg = dir.join(format!("{example}.svg"));
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_reshard"))
        .args(["plan", "--from"])
        .arg(format!("{root}/plans/{example}/old.json"))
        .arg("--to")
        .arg(format!("{root}/plans/{example}/new.json"))
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&svg).unwrap()
}

fn plan(example: &str) -> reshard::Plan {
    let root = env!("CARGO_MANIFEST_DIR");
    reshard::Plan::load(Path::new(&format!("{root}/plans/{example}/plan.json"))).unwrap()
}

#[test]
fn every_example_draws_valid_svg_with_its_moves_marked() {
    let dir = tempfile::tempdir().unwrap();
    for ex in EXAMPLES {
        let text = draw(ex, dir.path());
        let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{ex}: {e}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{ex}");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let moving = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("moving"))
            .count();
        let p = plan(ex);
        let segments: usize = p
            .moves
            .iter()
            .map(|m| match &m.segments {
                reshard::plan::Segments::Arcs { arcs, .. } => arcs.len(),
                reshard::plan::Segments::Ranges { ranges } => ranges.len(),
                reshard::plan::Segments::Residues { .. } | reshard::plan::Segments::Owners => 0,
            })
            .sum();
        match ex {
            // Residue grids mark each moving cell; mixed kinds have no segment geometry.
            &"modulo-4-to-8" | &"modulo-4-to-5-md5" => assert!(moving > 0, "{ex}"),
            &"modulo-to-ring" => assert_eq!(moving, 0, "{ex}"),
            _ => assert_eq!(moving, segments, "{ex}: every moving segment is marked"),
        }
        // regression_mixed_kind_picture_was_empty_and_residue_grid_unlabelled: a mixed-kind
        // plan draws a bar per move with its share; residue grids say before/after and their
        // residues.
        if *ex == "modulo-to-ring" {
            let bars = doc
                .descendants()
                .filter(|n| n.attribute("class") == Some("moving-share"))
                .count();
            assert_eq!(bars, p.moves.len(), "{ex}");
            for m in &p.moves {
                let label = format!(">{} {} → {}</text>", m.id, m.source, m.destination);
                assert!(text.contains(&label), "{ex}: {label}");
                let share = format!(">{:.2}%</text>", m.fraction * 100.0);
                assert!(text.contains(&share), "{ex}: {share}");
            }
        }
        if ex.starts_with("modulo-4") {
            assert!(
                text.contains(">before</text>") && text.contains(">after</text>"),
                "{ex}"
            );
            assert!(
                text.contains("font-size=\"8\">0</text>"),
                "{ex}: residue labels"
            );
        }
        // Every shard of both maps appears in the legend.
        for s in p.summary.shares_after.keys() {
            assert!(text.contains(&format!(">{s}</text>")), "{ex}: {s} missing");
        }
    }
}

#[test]
fn renders_in_headless_chromium_where_installed() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: chromium is not installed; SVG validity is checked by the other test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    draw("ring-add", dir.path());
    let png = dir.path().join("ring-add.png");
    let profile = dir.path().join("profile");
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=900,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!(
            "file://{}",
            dir.path().join("ring-add.svg").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // A blank 900x1000 page compresses to a few kilobytes; the drawing is far larger.
    assert!(
        bytes.len() > 20_000,
        "PNG of {} bytes looks blank",
        bytes.len()
    );
}
