//! The SQL that reshard installs on shards: change-capture logs with their triggers, and the
//! fence/guard triggers that refuse writes to moving or moved keys. Pure: these functions return
//! statements; the online-migration runtime executes them.
//!
//! Change capture records *which rows may have changed*, not their values: one entry per row image
//! (primary key and shard key, old and new when an UPDATE changes them). Catch-up re-reads the
//! current source row for each entry and upserts or deletes it at the destination, so entries can
//! be replayed any number of times and in any order and still converge. Consumed entries are
//! deleted by their sequence numbers (never "everything below a position"), so a transaction that
//! commits late with a lower sequence number is still seen.
//!
//! The guard is a BEFORE trigger that computes the key's owner under the old and the new map
//! ([`crate::sqlroute`]) and reads the row of the shard's `_reshard_fence` table for that
//! (old owner, new owner) pair — one row per move — with a locking read (`FOR SHARE` /
//! `LOCK IN SHARE MODE`). Raising a fence is an UPDATE of that one row: it waits for the
//! in-flight transactions that wrote the move's keys (they hold the row's shared lock), and every
//! later writer of those keys sees the committed flag even inside an older REPEATABLE READ
//! snapshot, because locking reads read the latest version. Keys that do not move have no row
//! and are never blocked. The same table serves both directions: on the source the fence goes up
//! for the flip and stays up to refuse stale writers; on the destination it goes up for a
//! rollback. reshard's own writes (reverse sync, deleting moved rows)
//! set a session flag the triggers honour (`reshard.bypass` on PostgreSQL, `@reshard_bypass` on
//! MariaDB). SQLite has no digests in SQL: its guards call reshard's `reshard_md5`/`reshard_sha1`
//! ([`crate::backend::sqlite_functions`]), which every connection writing to a guarded table
//! must register (one without them is refused with "no such function"). Nor has it session
//! variables: reshard's own writes drop and re-create the guard inside their transaction.

use sha1::{Digest, Sha1};

use crate::backend::TableSchema;
use crate::ident::Dialect;
use crate::map::Partitioning;
use crate::sqlroute::{owner_sql, SqlRouteError};

/// The SQLSTATE of the fence error, on PostgreSQL and MariaDB.
pub const FENCE_SQLSTATE: &str = "RS001";
/// The message of the fence error on every backend (on SQLite, the only marker).
pub const FENCE_MESSAGE: &str = "reshard: keys are moving, refresh routing and retry";

pub const FENCE_TABLE: &str = "_reshard_fence";
/// Token tables for rings of the old and the new map.
pub const RING_TABLE_OLD: &str = "_reshard_ring_old";
pub const RING_TABLE_NEW: &str = "_reshard_ring_new";

/// Whether an error message from a shard is the fence refusing a write.
pub fn is_fence_error(sqlstate: Option<&str>, message: &str) -> bool {
    sqlstate == Some(FENCE_SQLSTATE) || message.contains(FENCE_MESSAGE)
}

/// A name for a helper object of `table`, within PostgreSQL's 63-byte identifier limit.
pub fn aux_name(prefix: &str, table: &str) -> String {
    let full = format!("{prefix}_{table}");
    if full.len() <= 63 {
        return full;
    }
    let digest: String = Sha1::digest(table.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = 63 - prefix.len() - 2 - digest.len();
    format!("{prefix}_{}_{digest}", &table[..keep])
}

pub fn log_table(table: &str) -> String {
    aux_name("_rs_log", table)
}

/// Type names come from the database's own catalog; they are still checked before being
/// spliced into DDL.
pub fn is_safe_type_name(t: &str) -> bool {
    t.len() <= 80
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '(' | ')' | ',' | '_'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("table {table}: column {column} has type {ty:?}, which reshard will not put into DDL")]
    UnsafeType {
        table: String,
        column: String,
        ty: String,
    },
    #[error("table {table}: no column {column}")]
    NoColumn { table: String, column: String },
    #[error(transparent)]
    Route(#[from] SqlRouteError),
}

/// Statements that install and remove change capture on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub log_table: String,
    /// Primary-key columns of the log, in the table's primary-key order (`p0`, `p1`, ...).
    pub pk_columns: Vec<String>,
    pub install: Vec<String>,
    pub remove: Vec<String>,
}

fn column_type<'a>(schema: &'a TableSchema, col: &str) -> Result<&'a str, TriggerError> {
    let c = schema
        .columns
        .iter()
        .find(|c| c.name == col)
        .ok_or_else(|| TriggerError::NoColumn {
            table: schema.name.clone(),
            column: col.to_string(),
        })?;
    if !is_safe_type_name(&c.data_type) {
        return Err(TriggerError::UnsafeType {
            table: schema.name.clone(),
            column: c.name.clone(),
            ty: c.data_type.clone(),
        });
    }
    Ok(&c.data_type)
}

/// Change capture for `schema`, whose shard key is `key`.
/// The change log's column holding when an entry was logged (epoch milliseconds).
pub const LOG_TIME_COLUMN: &str = "logged_ms";

/// The shard's clock now, in epoch milliseconds, as an SQL expression.
pub fn now_ms_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS bigint)",
        Dialect::Mysql => "CAST(FLOOR(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)",
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    }
}

fn log_time_default(dialect: Dialect) -> String {
    let ty = match dialect {
        Dialect::Sqlite => "INTEGER",
        _ => "BIGINT",
    };
    format!("{ty} DEFAULT ({})", now_ms_sql(dialect))
}

pub fn capture(dialect: Dialect, schema: &TableSchema, key: &str) -> Result<Capture, TriggerError> {
    let q = |s: &str| dialect.quote(s);
    let t = q(&schema.name);
    let log_name = log_table(&schema.name);
    let log = q(&log_name);
    let mut cols = Vec::new();
    let mut defs = Vec::new();
    for (i, pk) in schema.primary_key.iter().enumerate() {
        let ty = column_type(schema, pk)?;
        cols.push(format!("p{i}"));
        defs.push(format!("p{i} {ty}"));
    }
    let key_ty = column_type(schema, key)?;
    defs.push(format!("k {key_ty}"));
    let seq = match dialect {
        Dialect::Postgres => "seq BIGSERIAL PRIMARY KEY",
        Dialect::Mysql => "seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
        // Not AUTOINCREMENT: that creates sqlite_sequence, which cannot be dropped, and cancel
        // must leave the shard as it was. SQLite's single writer hands out max + 1 in commit order.
        Dialect::Sqlite => "seq INTEGER PRIMARY KEY",
    };
    // When each entry was logged, in epoch milliseconds of the shard's clock, so that `status`
    // can show how old a backlog is (src/backlog.rs) with the shard's own clock on both sides.
    defs.push(format!("{LOG_TIME_COLUMN} {}", log_time_default(dialect)));
    let create_log = format!(
        "CREATE TABLE IF NOT EXISTS {log} ({seq}, op CHAR(1) NOT NULL, {})",
        defs.join(", ")
    );
    let insert_cols = format!("op, {}, k", cols.join(", "));
    let image = |row: &str| -> String {
        let mut v: Vec<String> = schema
            .primary_key
            .iter()
            .map(|c| format!("{row}.{}", q(c)))
            .collect();
        v.push(format!("{row}.{}", q(key)));
        v.join(", ")
    };
    let tracked: Vec<&str> = schema
        .primary_key
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(key))
        .collect();
    let mut install = vec![create_log];
    let mut remove = Vec::new();
    match dialect {
        Dialect::Postgres => {
            let func = q(&aux_name("_rs_cap", &schema.name));
            let trunc = q(&aux_name("_rs_trunc", &schema.name));
            let changed = format!(
                "({}) IS DISTINCT FROM ({})",
                tracked
                    .iter()
                    .map(|c| format!("NEW.{}", q(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                tracked
                    .iter()
                    .map(|c| format!("OLD.{}", q(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            install.push(format!(
                "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $reshard$\n\
                 BEGIN\n\
                   IF coalesce(current_setting('reshard.bypass', true), '') = 'on' THEN RETURN NULL; END IF;\n\
                   IF TG_OP IN ('UPDATE', 'DELETE') THEN\n\
                     INSERT INTO {log} ({insert_cols}) VALUES (left(TG_OP, 1), {old});\n\
                   END IF;\n\
                   IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND {changed}) THEN\n\
                     INSERT INTO {log} ({insert_cols}) VALUES (left(TG_OP, 1), {new});\n\
                   END IF;\n\
                   RETURN NULL;\n\
                 END $reshard$",
                old = image("OLD"),
                new = image("NEW"),
            ));
            install.push(format!("DROP TRIGGER IF EXISTS {func} ON {t}"));
            install.push(format!(
                "CREATE TRIGGER {func} AFTER INSERT OR UPDATE OR DELETE ON {t} \
                 FOR EACH ROW EXECUTE FUNCTION {func}()"
            ));
            // TRUNCATE fires no row triggers; refuse it rather than lose the deletes.
            install.push(format!(
                "CREATE OR REPLACE FUNCTION {trunc}() RETURNS trigger LANGUAGE plpgsql AS $reshard$\n\
                 BEGIN RAISE EXCEPTION USING ERRCODE = '{FENCE_SQLSTATE}', \
                 MESSAGE = 'reshard: TRUNCATE is refused while a reshard job captures this table'; END $reshard$"
            ));
            install.push(format!("DROP TRIGGER IF EXISTS {trunc} ON {t}"));
            install.push(format!(
                "CREATE TRIGGER {trunc} BEFORE TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {trunc}()"
            ));
            remove.push(format!("DROP TRIGGER IF EXISTS {func} ON {t}"));
            remove.push(format!("DROP TRIGGER IF EXISTS {trunc} ON {t}"));
            remove.push(format!("DROP FUNCTION IF EXISTS {func}()"));
            remove.push(format!("DROP FUNCTION IF EXISTS {trunc}()"));
        }
        Dialect::Mysql => {
            let changed = tracked
                .iter()
                .map(|c| format!("NEW.{0} <=> OLD.{0}", q(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            for (suffix, event, body) in [
                (
                    "i",
                    "INSERT",
                    format!("INSERT INTO {log} ({insert_cols}) VALUES ('I', {});", image("NEW")),
                ),
                (
                    "u",
                    "UPDATE",
                    format!(
                        "INSERT INTO {log} ({insert_cols}) VALUES ('U', {}); \
                         IF NOT ({changed}) THEN INSERT INTO {log} ({insert_cols}) VALUES ('U', {}); END IF;",
                        image("OLD"),
                        image("NEW")
                    ),
                ),
                (
                    "d",
                    "DELETE",
                    format!("INSERT INTO {log} ({insert_cols}) VALUES ('D', {});", image("OLD")),
                ),
            ] {
                let name = q(&aux_name(&format!("_rs_cap{suffix}"), &schema.name));
                install.push(format!("DROP TRIGGER IF EXISTS {name}"));
                install.push(format!(
                    "CREATE TRIGGER {name} AFTER {event} ON {t} FOR EACH ROW \
                     BEGIN IF @reshard_bypass IS NULL THEN {body} END IF; END"
                ));
                remove.push(format!("DROP TRIGGER IF EXISTS {name}"));
            }
        }
        Dialect::Sqlite => {
            let unchanged = tracked
                .iter()
                .map(|c| format!("NEW.{0} IS OLD.{0}", q(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            for (suffix, event, body) in [
                (
                    "i",
                    "INSERT",
                    format!(
                        "INSERT INTO {log} ({insert_cols}) VALUES ('I', {});",
                        image("NEW")
                    ),
                ),
                (
                    "u",
                    "UPDATE",
                    format!(
                        "INSERT INTO {log} ({insert_cols}) VALUES ('U', {}); \
                         INSERT INTO {log} ({insert_cols}) SELECT 'U', {} WHERE NOT ({unchanged});",
                        image("OLD"),
                        image("NEW")
                    ),
                ),
                (
                    "d",
                    "DELETE",
                    format!(
                        "INSERT INTO {log} ({insert_cols}) VALUES ('D', {});",
                        image("OLD")
                    ),
                ),
            ] {
                let name = q(&aux_name(&format!("_rs_cap{suffix}"), &schema.name));
                install.push(format!("DROP TRIGGER IF EXISTS {name}"));
                install.push(format!(
                    "CREATE TRIGGER {name} AFTER {event} ON {t} FOR EACH ROW BEGIN {body} END"
                ));
                remove.push(format!("DROP TRIGGER IF EXISTS {name}"));
            }
        }
    }
    remove.push(format!("DROP TABLE IF EXISTS {log}"));
    Ok(Capture {
        log_table: log_name,
        pk_columns: cols,
        install,
        remove,
    })
}

/// Statements that install and remove the guard on one table of a shard taking part in a job.
/// Fence rows are keyed by (old owner, new owner): indices into `old_map.owners()` and
/// `new_map.owners()`, one row per move of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Shard-wide objects (fence table, ring tokens), idempotent; run before the table's.
    pub shared: Vec<String>,
    pub install: Vec<String>,
    pub remove: Vec<String>,
    /// Shard-wide objects to drop once no table of the shard keeps a guard.
    pub remove_shared: Vec<String>,
}

/// A move's fence row: (index in the old map's owners, index in the new map's owners).
pub type FencePair = (usize, usize);

/// The guard for `schema` (shard key `key`).
pub fn guard(
    dialect: Dialect,
    schema: &TableSchema,
    key: &str,
    old_map: &Partitioning,
    new_map: &Partitioning,
    moves: &[FencePair],
) -> Result<Guard, TriggerError> {
    let q = |s: &str| dialect.quote(s);
    let t = q(&schema.name);
    let fence = q(FENCE_TABLE);
    column_type(schema, key)?;
    let mut shared = vec![format!(
        "CREATE TABLE IF NOT EXISTS {fence} (src INTEGER NOT NULL, dst INTEGER NOT NULL, \
         fenced INTEGER NOT NULL DEFAULT 0, move_id VARCHAR(64), PRIMARY KEY (src, dst))"
    )];
    // Every move's row exists before any fence goes up, so that raising a fence updates an
    // existing row (a record lock) instead of inserting one (a gap lock that writers starve).
    let rows: Vec<String> = moves.iter().map(|(s, d)| format!("({s}, {d})")).collect();
    if !rows.is_empty() {
        shared.push(match dialect {
            Dialect::Postgres | Dialect::Sqlite => format!(
                "INSERT INTO {fence} (src, dst) VALUES {} ON CONFLICT (src, dst) DO NOTHING",
                rows.join(", ")
            ),
            Dialect::Mysql => {
                format!(
                    "INSERT IGNORE INTO {fence} (src, dst) VALUES {}",
                    rows.join(", ")
                )
            }
        });
    }
    // The (old owner, new owner) condition for the row image `row` (NEW or OLD), with the
    // helper objects both maps' routing needs.
    let pair_for = |row: &str| -> Result<(String, Vec<String>, Vec<String>), SqlRouteError> {
        let k = format!("{row}.{}", q(key));
        let o = owner_sql(dialect, old_map, &k, RING_TABLE_OLD)?;
        let n = owner_sql(dialect, new_map, &k, RING_TABLE_NEW)?;
        let cond = format!("src = {} AND dst = {}", o.owner_expr, n.owner_expr);
        let setup = o.setup.into_iter().chain(n.setup).collect();
        let teardown = o.teardown.into_iter().chain(n.teardown).collect();
        Ok((cond, setup, teardown))
    };
    let (new_pair, setup, teardown) = pair_for("NEW")?;
    let (old_pair, _, _) = pair_for("OLD")?;
    shared.extend(setup);
    let mut remove_shared = teardown;
    remove_shared.push(format!("DROP TABLE IF EXISTS {fence}"));
    let key_ty = column_type(schema, key)?;
    if let Some(a) = assert_owner(dialect, key_ty, old_map, new_map)? {
        shared.extend(a.install);
        // Dropped before the tables it reads: in between, a writer's assertion found the
        // function but not its fence or ring table and failed instead of writing unasserted.
        remove_shared.insert(0, a.remove);
    }
    let mut install = Vec::new();
    let mut remove = Vec::new();
    match dialect {
        Dialect::Postgres => {
            let func = q(&aux_name("_rs_guard", &schema.name));
            let check = |cond: &str| {
                format!(
                    "f := 0; SELECT fenced INTO f FROM {fence} WHERE {cond} FOR SHARE;\n\
                     IF f = 1 THEN RAISE EXCEPTION USING ERRCODE = '{FENCE_SQLSTATE}', \
                     MESSAGE = '{FENCE_MESSAGE}'; END IF;"
                )
            };
            install.push(format!(
                "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $reshard$\n\
                 DECLARE f integer;\n\
                 BEGIN\n\
                   IF coalesce(current_setting('reshard.bypass', true), '') <> 'on' THEN\n\
                     IF TG_OP <> 'DELETE' THEN {new_check} END IF;\n\
                     IF TG_OP <> 'INSERT' THEN {old_check} END IF;\n\
                   END IF;\n\
                   IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n\
                   RETURN NEW;\n\
                 END $reshard$",
                new_check = check(&new_pair),
                old_check = check(&old_pair),
            ));
            install.push(format!("DROP TRIGGER IF EXISTS {func} ON {t}"));
            install.push(format!(
                "CREATE TRIGGER {func} BEFORE INSERT OR UPDATE OR DELETE ON {t} \
                 FOR EACH ROW EXECUTE FUNCTION {func}()"
            ));
            remove.push(format!("DROP TRIGGER IF EXISTS {func} ON {t}"));
            remove.push(format!("DROP FUNCTION IF EXISTS {func}()"));
        }
        Dialect::Mysql => {
            let check = |cond: &str| {
                format!(
                    "SET f = 0; SELECT fenced INTO f FROM {fence} WHERE {cond} LOCK IN SHARE MODE; \
                     IF f = 1 THEN SIGNAL SQLSTATE '{FENCE_SQLSTATE}' SET MESSAGE_TEXT = '{FENCE_MESSAGE}'; END IF;"
                )
            };
            for (suffix, event, body) in [
                ("i", "INSERT", check(&new_pair)),
                (
                    "u",
                    "UPDATE",
                    format!("{} {}", check(&new_pair), check(&old_pair)),
                ),
                ("d", "DELETE", check(&old_pair)),
            ] {
                let name = q(&aux_name(&format!("_rs_guard{suffix}"), &schema.name));
                install.push(format!("DROP TRIGGER IF EXISTS {name}"));
                install.push(format!(
                    "CREATE TRIGGER {name} BEFORE {event} ON {t} FOR EACH ROW \
                     BEGIN DECLARE f INT DEFAULT 0; IF @reshard_bypass IS NULL THEN {body} END IF; END"
                ));
                remove.push(format!("DROP TRIGGER IF EXISTS {name}"));
            }
        }
        Dialect::Sqlite => {
            for (suffix, event, cond) in [
                ("i", "INSERT", new_pair.clone()),
                // Parenthesised as a whole: the WHEN below prefixes `fenced = 1 AND`, and AND
                // binds tighter than OR (unparenthesised, every update of a moving key was
                // refused even with no fence up).
                ("u", "UPDATE", format!("(({new_pair}) OR ({old_pair}))")),
                ("d", "DELETE", old_pair.clone()),
            ] {
                let name = q(&aux_name(&format!("_rs_guard{suffix}"), &schema.name));
                install.push(format!("DROP TRIGGER IF EXISTS {name}"));
                install.push(format!(
                    "CREATE TRIGGER {name} BEFORE {event} ON {t} FOR EACH ROW \
                     WHEN EXISTS (SELECT 1 FROM {fence} WHERE fenced = 1 AND ({cond})) \
                     BEGIN SELECT RAISE(ABORT, '{FENCE_MESSAGE}'); END"
                ));
                remove.push(format!("DROP TRIGGER IF EXISTS {name}"));
            }
        }
    }
    Ok(Guard {
        shared,
        install,
        remove,
        remove_shared,
    })
}

/// The ownership assertion an application's write transaction makes first
/// (`SELECT reshard_assert_owner(key)`, docs/writer-contract.md). Row guards fire only on rows
/// that match, so a stale UPDATE or DELETE that matches no row at the old owner committed with
/// 0 rows and was acknowledged; the assertion refuses it whether or not a row matches. It reads
/// the key's fence row exactly as the guard does, with the same shared lock, so it waits for a
/// fence being raised and refuses with `RS001` once it is up.
pub const ASSERT_OWNER_FUNCTION: &str = "reshard_assert_owner";

/// SQLite has no stored functions, so there the assertion is an INSERT into this view, whose
/// INSTEAD OF trigger raises the fence error; any SQLite driver can run it.
pub const ASSERT_OWNER_VIEW_TRIGGER: &str = "reshard_assert_owner_check";

/// `install` creates or replaces the assertion for one key type; `remove` drops it with the
/// shard's guards. A writer that finds no such function (or, on SQLite, view) writes without
/// it (`Router::begin`): no guard on the shard means routing alone decides.
pub struct AssertOwner {
    pub install: Vec<String>,
    pub remove: String,
}

/// The statement a write transaction runs first to assert that this shard owns the key, with
/// the key as its one bind parameter.
pub fn assert_owner_statement(dialect: Dialect) -> String {
    let name = ASSERT_OWNER_FUNCTION;
    match dialect {
        Dialect::Postgres => format!("SELECT {name}($1)"),
        Dialect::Mysql => format!("SELECT {name}(?)"),
        Dialect::Sqlite => format!("INSERT INTO {name} (reshard_key) VALUES (?)"),
    }
}

/// The assertion's parameter type for a key column type: integers of any width route alike,
/// and every other key routes by its text.
fn assert_param_type(dialect: Dialect, column_type: &str) -> &'static str {
    let t = column_type.to_ascii_lowercase();
    let integer = [
        "int",
        "integer",
        "bigint",
        "smallint",
        "tinyint",
        "mediumint",
    ]
    .iter()
    .any(|i| t == *i || t.starts_with(&format!("{i}(")) || t.starts_with(&format!("{i} ")));
    match (dialect, integer) {
        (Dialect::Mysql, true) => "BIGINT",
        (Dialect::Mysql, false) => "VARCHAR(768)",
        (_, true) => "bigint",
        (_, false) => "text",
    }
}

pub fn assert_owner(
    dialect: Dialect,
    key_type: &str,
    old_map: &Partitioning,
    new_map: &Partitioning,
) -> Result<Option<AssertOwner>, TriggerError> {
    let fence = dialect.quote(FENCE_TABLE);
    let name = ASSERT_OWNER_FUNCTION;
    let param = "reshard_key";
    // In the SQLite trigger the key is the inserted row's column.
    let key = match dialect {
        Dialect::Sqlite => format!("NEW.{param}"),
        _ => param.to_string(),
    };
    let o = owner_sql(dialect, old_map, &key, RING_TABLE_OLD)?;
    let n = owner_sql(dialect, new_map, &key, RING_TABLE_NEW)?;
    let cond = format!("src = {} AND dst = {}", o.owner_expr, n.owner_expr);
    let ty = assert_param_type(dialect, key_type);
    Ok(match dialect {
        Dialect::Postgres => Some(AssertOwner {
            install: vec![format!(
                "CREATE OR REPLACE FUNCTION {name}({param} {ty}) RETURNS boolean \
                 LANGUAGE plpgsql AS $reshard$\n\
                 DECLARE f integer;\n\
                 BEGIN\n\
                   IF coalesce(current_setting('reshard.bypass', true), '') = 'on' THEN RETURN true; END IF;\n\
                   f := 0; SELECT fenced INTO f FROM {fence} WHERE {cond} FOR SHARE;\n\
                   IF f = 1 THEN RAISE EXCEPTION USING ERRCODE = '{FENCE_SQLSTATE}', \
                   MESSAGE = '{FENCE_MESSAGE}'; END IF;\n\
                   RETURN true;\n\
                 END $reshard$"
            )],
            remove: format!("DROP FUNCTION IF EXISTS {name}({ty})"),
        }),
        // CREATE OR REPLACE (MariaDB): a DROP then CREATE would leave a moment in which the
        // function is missing, which writers read as "no guard here".
        Dialect::Mysql => Some(AssertOwner {
            install: vec![format!(
                "CREATE OR REPLACE FUNCTION {name}({param} {ty}) RETURNS INT READS SQL DATA \
                 BEGIN DECLARE f INT DEFAULT 0; \
                 DECLARE CONTINUE HANDLER FOR NOT FOUND SET f = 0; \
                 IF @reshard_bypass IS NULL THEN \
                 SELECT fenced INTO f FROM {fence} WHERE {cond} LOCK IN SHARE MODE; \
                 IF f = 1 THEN SIGNAL SQLSTATE '{FENCE_SQLSTATE}' SET MESSAGE_TEXT = '{FENCE_MESSAGE}'; \
                 END IF; END IF; RETURN 1; END"
            )],
            remove: format!("DROP FUNCTION IF EXISTS {name}"),
        }),
        // Writers begin with BEGIN IMMEDIATE, so the check and the writes after it hold the
        // one write lock together: a fence cannot go up between them. The view's column has
        // no type, so the key keeps the type it was bound with, as the guards see it.
        Dialect::Sqlite => {
            let trigger = dialect.quote(ASSERT_OWNER_VIEW_TRIGGER);
            let view = dialect.quote(name);
            Some(AssertOwner {
                install: vec![
                    format!(
                        "CREATE VIEW IF NOT EXISTS {view} AS SELECT NULL AS {param} WHERE 0"
                    ),
                    format!("DROP TRIGGER IF EXISTS {trigger}"),
                    format!(
                        "CREATE TRIGGER {trigger} INSTEAD OF INSERT ON {view} \
                         WHEN EXISTS (SELECT 1 FROM {fence} WHERE fenced = 1 AND {cond}) \
                         BEGIN SELECT RAISE(ABORT, '{FENCE_MESSAGE}'); END"
                    ),
                ],
                remove: format!("DROP VIEW IF EXISTS {view}"),
            })
        }
    })
}

/// Raises or lowers the fence of one move (binds: fenced 0/1, move id, src index, dst index):
/// one UPDATE of one existing row, to run in its own short transaction.
pub fn set_fence_sql(dialect: Dialect) -> String {
    let fence = dialect.quote(FENCE_TABLE);
    match dialect {
        Dialect::Postgres => {
            format!("UPDATE {fence} SET fenced = $1, move_id = $2 WHERE src = $3 AND dst = $4")
        }
        _ => format!("UPDATE {fence} SET fenced = ?, move_id = ? WHERE src = ? AND dst = ?"),
    }
}

/// Statement that turns reshard's own session into one the triggers let through.
pub fn bypass_sql(dialect: Dialect, on: bool) -> Option<&'static str> {
    match (dialect, on) {
        (Dialect::Postgres, true) => Some("SET reshard.bypass = 'on'"),
        (Dialect::Postgres, false) => Some("SET reshard.bypass = 'off'"),
        (Dialect::Mysql, true) => Some("SET @reshard_bypass = 1"),
        (Dialect::Mysql, false) => Some("SET @reshard_bypass = NULL"),
        (Dialect::Sqlite, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aux_names_fit_postgres_limit() {
        let long = "t".repeat(63);
        let n = aux_name("_rs_guardu", &long);
        assert!(n.len() <= 63, "{n}");
        assert_ne!(
            aux_name("_rs_log", &long),
            aux_name("_rs_log", &"t".repeat(62))
        );
        assert_eq!(aux_name("_rs_log", "users"), "_rs_log_users");
    }

    #[test]
    fn type_names_are_checked() {
        assert!(is_safe_type_name("numeric(12,3)"));
        assert!(is_safe_type_name("timestamp with time zone"));
        assert!(!is_safe_type_name("int); drop table x; --"));
    }

    #[test]
    fn fence_errors_are_recognised() {
        assert!(is_fence_error(Some("RS001"), ""));
        assert!(is_fence_error(None, &format!("error: {FENCE_MESSAGE}")));
        assert!(!is_fence_error(Some("23505"), "duplicate key"));
    }
}
