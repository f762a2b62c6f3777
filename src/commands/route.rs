//! `reshard route`: print the owner of keys given as arguments or streamed on standard input,
//! buffered both ways so a million keys take well under a second. With `--map` the owner under
//! a map file; with `--catalog` the live owner and routing version, as `reshard::Router`
//! answers applications. With `--follow`, one answer per input line as soon as the line is
//! read, from a router that stays connected and follows the routing version: a coprocess for
//! shell scripts and applications without a Rust router.

use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;

use super::Format;
use crate::error::InputError;
use crate::map::{Key, KeyKind, Map};
use crate::router::{Route, Router};

#[derive(Debug, Clone)]
pub enum RouteSource {
    Map(PathBuf),
    Catalog(String),
}

#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub source: RouteSource,
    pub keys: Vec<String>,
    pub format: Format,
    /// Answer each stdin line at once and keep following the catalog (only with a catalog).
    pub follow: bool,
}

pub fn run(opts: RouteOptions) -> i32 {
    match execute(&opts) {
        Ok(()) => 0,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                // The reader went away (`| head`): not a failure of routing.
                return 0;
            }
            super::report(e)
        }
    }
}

/// Routes one key: its owner, and the routing version when there is one.
type RouteFn<'a> = dyn Fn(&Key) -> Result<(String, Option<i64>), String> + 'a;

fn route_one<W: std::io::Write>(
    route: &RouteFn<'_>,
    kind: KeyKind,
    format: Format,
    raw: &str,
    out: &mut W,
) -> Result<Result<(), String>, std::io::Error> {
    let key = match Key::parse(raw, kind) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let (shard, version) = match route(&key) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    match format {
        Format::Text => {
            out.write_all(raw.as_bytes())?;
            out.write_all(b"\t")?;
            out.write_all(shard.as_bytes())?;
            if let Some(v) = version {
                write!(out, "\t{v}")?;
            }
            out.write_all(b"\n")?;
        }
        Format::Json => {
            // An integer key is a JSON number (also under hash maps, which route any key by
            // its text: "42" and 42 have the same owner there); other keys are strings.
            let key = match &key {
                Key::Int(v) => serde_json::json!(v),
                Key::Text(s) => match s.parse::<i64>() {
                    Ok(v) if v.to_string() == *s => serde_json::json!(v),
                    _ => serde_json::json!(s),
                },
            };
            let obj = match version {
                Some(v) => serde_json::json!({"key": key, "shard": shard, "version": v}),
                None => serde_json::json!({"key": key, "shard": shard}),
            };
            serde_json::to_writer(&mut *out, &obj)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(Ok(()))
}

fn execute(opts: &RouteOptions) -> anyhow::Result<()> {
    match &opts.source {
        RouteSource::Map(path) => {
            let map = Map::load(path)?;
            let p = map.compile();
            let route = |k: &Key| {
                p.owner(k)
                    .map(|s| (s.to_string(), None))
                    .map_err(|e| e.to_string())
            };
            route_keys(&route, map.partitioning.key_kind(), opts)
        }
        RouteSource::Catalog(url) if opts.follow => follow(url, opts.format),
        RouteSource::Catalog(url) => {
            // One snapshot answers every key: the output is one consistent version.
            let snap = super::block_on_value(async {
                let router = Router::connect(url).await?;
                let snap = router.snapshot();
                router.close().await;
                Ok(snap)
            })?;
            let route = |k: &Key| {
                snap.route(k)
                    .map(|Route { shard, version }| (shard, Some(version)))
                    .map_err(|e| e.to_string())
            };
            route_keys(&route, snap.key_kind(), opts)
        }
    }
}

fn route_keys(route: &RouteFn<'_>, kind: KeyKind, opts: &RouteOptions) -> anyhow::Result<()> {
    let format = opts.format;
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut bad = None;
    if !opts.keys.is_empty() {
        for (i, k) in opts.keys.iter().enumerate() {
            if let Err(e) =
                route_one(route, kind, format, k, &mut out).context("writing to stdout")?
            {
                bad = Some(format!("key argument {}: {e}", i + 1));
                break;
            }
        }
    } else {
        let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
        let mut line = String::new();
        let mut n = 0u64;
        loop {
            line.clear();
            if input
                .read_line(&mut line)
                .context("reading keys from stdin")?
                == 0
            {
                break;
            }
            n += 1;
            let key = line.strip_suffix('\n').unwrap_or(&line);
            let key = key.strip_suffix('\r').unwrap_or(key);
            if let Err(e) =
                route_one(route, kind, format, key, &mut out).context("writing to stdout")?
            {
                bad = Some(format!("stdin line {n}: {e}"));
                break;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    match bad {
        Some(msg) => Err(InputError::one(msg).into()),
        None => Ok(()),
    }
}

/// `--follow`: every stdin line is answered and flushed before the next is read, by a router
/// that checks the routing version as `reshard::Router` does for applications (at most
/// `check_interval` old, 100 ms by default), so a long-lived reader sees flips as they happen.
/// A key that cannot be routed gets an error line (its text, a tab, `error: ` and why; shard
/// names never contain `:`) and the rest are still answered: one line out per line in, so a
/// coprocess never loses its place. The exit code is 2 when any line was refused.
fn follow(url: &str, format: Format) -> anyhow::Result<()> {
    super::block_on_value(async {
        crate::signals::exit_on_signal().context("installing signal handlers")?;
        let router = Router::connect(url).await?;
        let kind = router.snapshot().key_kind();
        let mut input = std::io::stdin().lock();
        let mut out = std::io::stdout().lock();
        let (mut n, mut refused) = (0u64, 0u64);
        let mut line = String::new();
        let result = loop {
            line.clear();
            // A blocking read is fine: this future runs on block_on's own thread, and the
            // router's connections are served by the runtime's workers.
            match input.read_line(&mut line) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(anyhow::Error::new(e).context("reading keys from stdin")),
            }
            n += 1;
            let raw = line.strip_suffix('\n').unwrap_or(&line);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            // Routed here, awaited; `route_one` then only formats the answer.
            let routed = match Key::parse(raw, kind) {
                Ok(k) => router
                    .route(&k)
                    .await
                    .map(|Route { shard, version }| (shard, Some(version)))
                    .map_err(|e| format!("{e:#}")),
                Err(e) => Err(e),
            };
            let route = |_: &Key| routed.clone();
            let answered = route_one(&route, kind, format, raw, &mut out)
                .and_then(|r| match r {
                    Ok(()) => Ok(()),
                    Err(why) => {
                        refused += 1;
                        eprintln!("stdin line {n}: {why}");
                        error_line(&mut out, format, raw, &why)
                    }
                })
                .and_then(|()| out.flush());
            if let Err(e) = answered {
                break Err(anyhow::Error::new(e).context("writing to stdout"));
            }
        };
        router.close().await;
        result?;
        match refused {
            0 => Ok(()),
            r => Err(InputError::one(format!(
                "{r} of {n} keys could not be routed (their lines say why)"
            ))
            .into()),
        }
    })
}

fn error_line<W: std::io::Write>(
    out: &mut W,
    format: Format,
    raw: &str,
    why: &str,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            let why: String = why
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            writeln!(out, "{raw}\terror: {why}")
        }
        Format::Json => {
            serde_json::to_writer(&mut *out, &serde_json::json!({"key": raw, "error": why}))?;
            out.write_all(b"\n")
        }
    }
}
