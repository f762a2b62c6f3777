//! Pinned routing: tests/fixtures/routing/pinned.tsv was computed by make_fixture.py with
//! Python's hashlib, independently of this code. Every key must still go where it says, through
//! the library and through `reshard route`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reshard::map::{Key, Map};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/routing")
}

/// (map file, key, shard) lines.
fn pinned() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(fixture_dir().join("pinned.tsv")).unwrap();
    text.lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (
                f.next().unwrap().to_string(),
                f.next().unwrap().to_string(),
                f.next().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn library_routes_every_pinned_key() {
    let rows = pinned();
    assert!(rows.len() >= 100);
    for file in ["md5-modulo.json", "sha1-ring.json"] {
        let map = Map::load(&fixture_dir().join(file)).unwrap();
        let p = map.compile();
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == file).collect();
        assert!(mine.len() >= 50, "{file}");
        for (_, key, shard) in mine {
            assert_eq!(
                p.owner(&Key::Text(key.clone())).unwrap(),
                shard,
                "{file}: key {key:?}"
            );
            if let Ok(v) = key.parse::<i64>() {
                assert_eq!(p.owner(&Key::Int(v)).unwrap(), shard, "{file}: int key {v}");
            }
        }
    }
}

#[test]
fn reshard_route_agrees_on_stdin() {
    let rows = pinned();
    for file in ["md5-modulo.json", "sha1-ring.json"] {
        let mine: Vec<_> = rows.iter().filter(|r| r.0 == file).collect();
        let input: String = mine.iter().map(|r| format!("{}\n", r.1)).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_reshard"))
            .args(["route", "--map", fixture_dir().join(file).to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: String = mine.iter().map(|r| format!("{}\t{}\n", r.1, r.2)).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{file}");
    }
}
