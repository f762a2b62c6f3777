//! `reshard route --map` through the real binary.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_reshard");

fn example(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn route_stdin(map: &str, input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["route", "--map", map])
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
    child.wait_with_output().unwrap()
}

#[test]
fn routes_keys_given_as_arguments() {
    let map = example("plans/modulo-4-to-8/new.json");
    let o = Command::new(BIN)
        .args(["route", "--map", &map, "42", "7", "-3"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Identity modulo 8: 42 mod 8 = 2, 7, and -3 mod 8 = 5 (never negative).
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "42\ts2\n7\ts7\n-3\ts5\n"
    );
}

#[test]
fn streams_stdin_and_agrees_with_the_library() {
    let map_path = example("plans/ring-add/new.json");
    let input: String = (0..20_000)
        .map(|i| format!("{}\n", i * 7919 - 50_000))
        .collect();
    let o = route_stdin(&map_path, &input);
    assert_eq!(o.status.code(), Some(0));
    let p = reshard::map::Map::load(Path::new(&map_path))
        .unwrap()
        .compile();
    let out = String::from_utf8(o.stdout).unwrap();
    let mut n = 0;
    for (line, key) in out.lines().zip(input.lines()) {
        let (k, shard) = line.split_once('\t').unwrap();
        assert_eq!(k, key);
        assert_eq!(
            shard,
            p.owner(&reshard::map::Key::Text(key.to_string())).unwrap()
        );
        n += 1;
    }
    assert_eq!(n, 20_000);
}

#[test]
fn a_key_the_map_cannot_route_names_its_line_and_exits_2() {
    let map = example("plans/modulo-4-to-8/new.json");
    let o = route_stdin(&map, "1\n2\nthree\n4\n");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stdin line 3: key \"three\" is not a 64-bit integer"),
        "{err}"
    );
    // Keys before the bad one were routed.
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "1\ts1\n2\ts2\n");

    let o = Command::new(BIN)
        .args(["route", "--map", &map, "5", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("key argument 2"));
}

#[test]
fn a_bad_map_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    std::fs::write(
        &path,
        r#"{"shards": {}, "tables": [], "partitioning": {"kind": "ring"}}"#,
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["route", "--map", path.to_str().unwrap(), "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("m.json: shards: no shards"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn text_ranges_route_text_keys_with_crlf_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    std::fs::write(
        &path,
        r#"{"shards": {"a": "sqlite://a.db", "b": "sqlite://b.db"}, "tables": [{"name": "t", "key": "k"}],
           "partitioning": {"kind": "range", "ranges": [{"from": null, "to": "m", "shard": "a"}, {"from": "m", "to": null, "shard": "b"}]}}"#,
    )
    .unwrap();
    let o = route_stdin(path.to_str().unwrap(), "apple\r\nzebra\r\nm\n");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "apple\ta\nzebra\tb\nm\tb\n"
    );
}
