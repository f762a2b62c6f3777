//! `reshard route --map`: print `KEY<TAB>SHARD` for keys given as arguments or streamed on
//! standard input, buffered both ways so a million keys take well under a second.

use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::error::InputError;
use crate::map::{Key, KeyKind, Map, Partitioner};

#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub map: PathBuf,
    pub keys: Vec<String>,
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

fn route_one<W: std::io::Write>(
    p: &Partitioner,
    kind: KeyKind,
    raw: &str,
    out: &mut W,
) -> Result<Result<(), String>, std::io::Error> {
    let key = match Key::parse(raw, kind) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    match p.owner(&key) {
        Ok(shard) => {
            out.write_all(raw.as_bytes())?;
            out.write_all(b"\t")?;
            out.write_all(shard.as_bytes())?;
            out.write_all(b"\n")?;
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}

fn execute(opts: &RouteOptions) -> anyhow::Result<()> {
    let map = Map::load(&opts.map)?;
    let p = map.compile();
    let kind = map.partitioning.key_kind();
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut bad = None;
    if !opts.keys.is_empty() {
        for (i, k) in opts.keys.iter().enumerate() {
            if let Err(e) = route_one(&p, kind, k, &mut out).context("writing to stdout")? {
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
            if let Err(e) = route_one(&p, kind, key, &mut out).context("writing to stdout")? {
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
