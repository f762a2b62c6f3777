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
//! The guard is a BEFORE trigger that computes the key's owner under the new map
//! ([`crate::sqlroute`]) and reads that owner's row of the shard's `_reshard_fence` table with a
//! locking read (`FOR SHARE` / `LOCK IN SHARE MODE`). Raising a fence is an UPDATE of that one
//! row: it waits for the in-flight transactions that wrote moving keys (they hold the row's shared
//! lock), and every later writer of a moving key sees the committed flag even inside an older
//! REPEATABLE READ snapshot, because locking reads read the latest version. Writers of keys that
//! do not move lock other rows and are never blocked. After the flip the flag stays set, and the
//! same trigger refuses stale writers. reshard's own writes (reverse sync, deleting moved rows)
//! set a session flag the triggers honour (`reshard.bypass` on PostgreSQL, `@reshard_bypass` on
//! MariaDB). SQLite has neither session variables nor digests in SQL: there the fence holds the
//! database's write lock, guards exist only for maps SQL can route (ranges, identity modulo), and
//! reshard's own writes drop and re-create the guard inside their transaction.

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
pub const RING_TABLE: &str = "_reshard_ring";

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
        Dialect::Sqlite => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
    };
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

/// Statements that install and remove the guard on one table of a source shard. `new_map` is the
/// map being moved to; `owners` of the fence table are indices into `new_map.owners()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Shard-wide objects (fence table, ring tokens), idempotent; run before the table's.
    pub shared: Vec<String>,
    pub install: Vec<String>,
    pub remove: Vec<String>,
    /// Shard-wide objects to drop once no table of the shard keeps a guard.
    pub remove_shared: Vec<String>,
}

/// The guard for `schema` (shard key `key`), or None on SQLite when the new map routes by hash,
/// which SQLite cannot compute in SQL.
pub fn guard(
    dialect: Dialect,
    schema: &TableSchema,
    key: &str,
    new_map: &Partitioning,
) -> Result<Option<Guard>, TriggerError> {
    let q = |s: &str| dialect.quote(s);
    let t = q(&schema.name);
    let fence = q(FENCE_TABLE);
    column_type(schema, key)?;
    let owners = new_map.owners().len();
    let mut shared = vec![format!(
        "CREATE TABLE IF NOT EXISTS {fence} (dst INTEGER NOT NULL PRIMARY KEY, \
         fenced INTEGER NOT NULL DEFAULT 0, move_id VARCHAR(64))"
    )];
    // One row per owner exists before any fence goes up, so that raising a fence updates an
    // existing row (a record lock) instead of inserting one (a gap lock that writers starve).
    let rows: Vec<String> = (0..owners).map(|i| format!("({i})")).collect();
    shared.push(match dialect {
        Dialect::Postgres | Dialect::Sqlite => format!(
            "INSERT INTO {fence} (dst) VALUES {} ON CONFLICT (dst) DO NOTHING",
            rows.join(", ")
        ),
        Dialect::Mysql => format!(
            "INSERT IGNORE INTO {fence} (dst) VALUES {}",
            rows.join(", ")
        ),
    });
    let route_for =
        |row: &str| owner_sql(dialect, new_map, &format!("{row}.{}", q(key)), RING_TABLE);
    let new_route = match route_for("NEW") {
        Ok(r) => r,
        Err(SqlRouteError::NoHashInSqlite(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let old_route = route_for("OLD")?;
    shared.extend(new_route.setup.iter().cloned());
    let mut remove_shared = new_route.teardown.clone();
    remove_shared.push(format!("DROP TABLE IF EXISTS {fence}"));
    let mut install = Vec::new();
    let mut remove = Vec::new();
    match dialect {
        Dialect::Postgres => {
            let func = q(&aux_name("_rs_guard", &schema.name));
            let check = |expr: &str| {
                format!(
                    "SELECT fenced INTO f FROM {fence} WHERE dst = {expr} FOR SHARE;\n\
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
                new_check = check(&new_route.owner_expr),
                old_check = check(&old_route.owner_expr),
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
            let check = |expr: &str| {
                format!(
                    "SET f = 0; SELECT fenced INTO f FROM {fence} WHERE dst = {expr} LOCK IN SHARE MODE; \
                     IF f = 1 THEN SIGNAL SQLSTATE '{FENCE_SQLSTATE}' SET MESSAGE_TEXT = '{FENCE_MESSAGE}'; END IF;"
                )
            };
            for (suffix, event, body) in [
                ("i", "INSERT", check(&new_route.owner_expr)),
                (
                    "u",
                    "UPDATE",
                    format!(
                        "{} {}",
                        check(&new_route.owner_expr),
                        check(&old_route.owner_expr)
                    ),
                ),
                ("d", "DELETE", check(&old_route.owner_expr)),
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
                ("i", "INSERT", format!("dst = {}", new_route.owner_expr)),
                (
                    "u",
                    "UPDATE",
                    format!(
                        "dst IN ({}, {})",
                        new_route.owner_expr, old_route.owner_expr
                    ),
                ),
                ("d", "DELETE", format!("dst = {}", old_route.owner_expr)),
            ] {
                let name = q(&aux_name(&format!("_rs_guard{suffix}"), &schema.name));
                install.push(format!("DROP TRIGGER IF EXISTS {name}"));
                install.push(format!(
                    "CREATE TRIGGER {name} BEFORE {event} ON {t} FOR EACH ROW \
                     WHEN EXISTS (SELECT 1 FROM {fence} WHERE fenced = 1 AND {cond}) \
                     BEGIN SELECT RAISE(ABORT, '{FENCE_MESSAGE}'); END"
                ));
                remove.push(format!("DROP TRIGGER IF EXISTS {name}"));
            }
        }
    }
    Ok(Some(Guard {
        shared,
        install,
        remove,
        remove_shared,
    }))
}

/// Raises or lowers the fence for the keys whose new owner is `dst` (an index into the new map's
/// owners): one UPDATE of one existing row, to run in its own short transaction.
pub fn set_fence_sql(dialect: Dialect) -> String {
    let fence = dialect.quote(FENCE_TABLE);
    match dialect {
        Dialect::Postgres => format!("UPDATE {fence} SET fenced = $1, move_id = $2 WHERE dst = $3"),
        _ => format!("UPDATE {fence} SET fenced = ?, move_id = ? WHERE dst = ?"),
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
