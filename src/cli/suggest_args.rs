//! The options of `reshard suggest`, its own group so that `--help` lists only what it uses.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::FormatArg;
use crate::commands::suggest::SuggestOptions;
use crate::suggest::{Target, ToKind, Weigh};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeighArg {
    /// Rows counted per shard and range
    Rows,
    /// Rows inserted, updated and deleted per second over the --sample window (PostgreSQL;
    /// MariaDB with userstat or performance_schema on); every shard must have them
    Writes,
    /// Table sizes on disk, data and indexes (PostgreSQL, MariaDB; not SQLite)
    Bytes,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ToKindArg {
    /// A consistent-hash ring (rings stay rings; a modulo map moves to a 64-vnode ring)
    Ring,
    /// A modulo map with a larger modulus (modulo maps only)
    Modulo,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Connects read-only to every shard of the map, counts rows (and bytes where the \
    server keeps them)\nper shard and table, samples write rates for --sample where the server \
    keeps counters\n(PostgreSQL pg_stat_user_tables; MariaDB TABLE_STATISTICS with userstat on, \
    else performance_schema;\nnot SQLite), and writes a new map that `reshard plan` accepts. \
    Nothing is written to any database.\n\n\
    --weigh writes|bytes computes shares and the target from write rates or table sizes instead \
    of rows;\nevery shard must have them (else exit 2, naming each shard and why).\n\n\
    Range maps: a range above the target share is split at the median key of its data; the \
    upper part\ngoes to the next --add shard, until no range is above the target or the new \
    shards run out. The\nkey-midpoint split is shown beside it for contrast. --remove NAME \
    merges each range of NAME into\nthe colder adjacent range if the merged range stays within \
    the target. Text keys are ordered\nbytewise, as the map compares them.\n\
    Rings: weighs adding --add nodes and raising the vnode count, and picks the option that \
    moves the\nfewest keys among those bringing the largest share under the target.\n\
    Modulo: shows the cost of growing the modulus and of moving to a ring; writes --to-kind.\n\n\
    Examples:\n  \
    reshard suggest --from map.json --max-share 0.30 --add s3=postgres://app@db4/app -o new.json\n  \
    reshard suggest --from ring.json --shards 6 --add s4=env:S4_URL --add s5=env:S5_URL -o new.json\n  \
    reshard suggest --from map.json --weigh writes --sample 10s --add s3=env:S3_URL -o new.json\n  \
    reshard suggest --from map.json --remove s1 --sample 0s -o new.json\n  \
    reshard plan --from map.json --to new.json -o plan.json\n\n\
    Exit codes: 0 written; 2 bad input (every problem named, nothing written); 1 a shard could \
    not be measured."
)]
pub struct SuggestArgs {
    /// The current partition map (JSON); its shards are measured
    #[arg(long, value_name = "CURRENT.json")]
    pub from: PathBuf,
    /// Write the suggested map here (never the --from file)
    #[arg(short = 'o', long, value_name = "NEW.json")]
    pub output: PathBuf,
    /// Largest share of the rows (or of the --weigh basis) any range (range maps) or shard may
    /// hold, in (0, 1]. Default without --shards: 1.25 times an even share over the current
    /// shards (those left after --remove)
    #[arg(long, value_name = "SHARE", conflicts_with = "shards")]
    pub max_share: Option<f64>,
    /// End with this many shards, using that many minus the current ones from --add; the
    /// target is then 1.10 times an even share over N
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// A new shard that may be added, as NAME=URL (sqlite:, postgres://, mysql:// or env:VAR);
    /// repeat it, in the order the shards are to be used. Only the ones needed are written
    #[arg(long = "add", value_name = "NAME=URL")]
    pub add: Vec<String>,
    /// What to print on stdout: the report as text, or as JSON
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,
    /// Measure key quantiles by key order (ORDER BY key LIMIT 1 OFFSET n) even where
    /// PostgreSQL's pg_stats histogram would give an approximate answer faster
    #[arg(long)]
    pub exact: bool,
    /// The kind of map to write: ring or modulo for a modulo map (default: modulo, the
    /// modulus grown), ring for a ring; a range map stays a range map
    #[arg(long, value_enum, value_name = "KIND")]
    pub to_kind: Option<ToKindArg>,
    /// How long to sample write rates from the servers' counters, such as 5s, 500ms or 1m (at
    /// most 1 hour); 0s turns it off. Measured while rows are counted, so it adds at most this.
    /// PostgreSQL sessions flush their counts about once a second: sample 2s or more
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub sample: String,
    /// What shares and the target are computed from
    #[arg(long, value_enum, value_name = "BASIS", default_value_t = WeighArg::Rows)]
    pub weigh: WeighArg,
    /// Range maps: a shard to remove; each of its ranges is merged into the colder adjacent
    /// range (by --weigh) if the merged range stays within the target. Repeat it for more
    #[arg(long = "remove", value_name = "NAME")]
    pub remove: Vec<String>,
}

impl SuggestArgs {
    pub fn into_options(self) -> SuggestOptions {
        let target = match (self.max_share, self.shards) {
            (Some(s), _) => Target::MaxShare(s),
            (None, Some(n)) => Target::Shards(n),
            (None, None) => Target::Default,
        };
        SuggestOptions {
            from: self.from,
            output: self.output,
            target,
            add: self.add,
            format: self.format.into(),
            exact: self.exact,
            sample: self.sample,
            weigh: match self.weigh {
                WeighArg::Rows => Weigh::Rows,
                WeighArg::Writes => Weigh::Writes,
                WeighArg::Bytes => Weigh::Bytes,
            },
            remove: self.remove,
            to_kind: match self.to_kind {
                None => ToKind::Same,
                Some(ToKindArg::Ring) => ToKind::Ring,
                Some(ToKindArg::Modulo) => ToKind::Modulo,
            },
        }
    }
}
