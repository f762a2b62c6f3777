//! reshard's SQL functions on SQLite: `reshard_md5(x)` and `reshard_sha1(x)`.
//!
//! SQLite has no digest in SQL, yet the guard triggers (`src/triggers.rs`) must route a written
//! key exactly as [`Partitioner`](crate::map::Partitioner) does, for md5/sha1 modulo and rings
//! too. Each function returns the lower-case hex digest of its argument's text form, the value
//! PostgreSQL's `md5(k::text)` and MariaDB's `SHA1(CAST(k AS CHAR))` return, so
//! [`crate::sqlroute`] builds the same arithmetic over it on every backend. An INTEGER's text
//! form is its decimal digits and a TEXT's its UTF-8 bytes: a key's canonical string. NULL gives
//! NULL, as on the other databases (a NULL key then matches no fence row).
//!
//! Every connection that writes to a table carrying a reshard guard needs them. SQLite resolves
//! a trigger's functions when it prepares the write, so a connection without them gets
//! "no such function: reshard_sha1" on every write to that table: a refusal, never a write that
//! slipped past the guard. reshard registers them on every shard connection it opens (its
//! backend and the Router's pools); applications that write through their own connections call
//! [`register_sqlite_functions`] once per connection (docs/writer-contract.md).
//!
//! sqlx has no public `create_function`, so this is the crate's only unsafe code, kept here.

use std::ffi::{c_int, CStr};
use std::ptr;

use libsqlite3_sys as ffi;
use sqlx::sqlite::{SqliteConnection, SqlitePoolOptions};

use crate::hashing::{token_hex, HashKind};

type ScalarFn =
    unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);

/// (SQL name, the same name for the C API, the digest, its implementation).
const FUNCTIONS: [(&str, &CStr, HashKind, ScalarFn); 2] = [
    ("reshard_md5", c"reshard_md5", HashKind::Md5, md5_hex),
    ("reshard_sha1", c"reshard_sha1", HashKind::Sha1, sha1_hex),
];

/// Deterministic (same input, same output, so SQLite may use them in indexes and factor them
/// out), UTF-8 text, and innocuous: side-effect free, so a connection with
/// `PRAGMA trusted_schema = OFF` still lets a trigger call them.
const FLAGS: c_int = ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS;

/// The SQL function giving the hex digest of `hash`. Identity is not a digest; it has none.
pub fn function_name(hash: HashKind) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .find(|f| f.2 == hash)
        .map(|(name, ..)| *name)
}

/// Registers `reshard_md5` and `reshard_sha1` on one connection. Call it once on each SQLite
/// connection that writes to a shard while a reshard job runs or its guards remain.
pub async fn register_sqlite_functions(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    for (name, c_name, _, f) in FUNCTIONS {
        // SAFETY: `db` is the live handle of this connection, and sqlx's worker thread makes no
        // call on it while `handle` (its lock) is held, which it is until the end of this
        // function. `c_name` is NUL-terminated and SQLite copies it. No application data
        // pointer and no destructors are passed; `f` only touches its own arguments.
        let rc = unsafe {
            ffi::sqlite3_create_function_v2(
                db,
                c_name.as_ptr(),
                1,
                FLAGS,
                ptr::null_mut(),
                Some(f),
                None,
                None,
                None,
            )
        };
        if rc != ffi::SQLITE_OK {
            // SAFETY: sqlite3_errstr returns a static NUL-terminated English string for any code.
            let why = unsafe { CStr::from_ptr(ffi::sqlite3_errstr(rc)) }.to_string_lossy();
            return Err(sqlx::Error::Configuration(
                format!("cannot register the SQLite function {name}: {why}").into(),
            ));
        }
    }
    Ok(())
}

/// Pool options whose every new connection gets the functions before first use, and whose
/// connections go back to the pool only outside any transaction.
pub fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .after_connect(|conn, _| Box::pin(async move { register_sqlite_functions(conn).await }))
        .after_release(|conn, _| Box::pin(async move { outside_transaction(conn).await }))
}

/// Whether a released connection is fit to pool again. sqlx counts transactions itself and
/// does not look at SQLite's own state on release, so a connection left inside a transaction
/// (a BEGIN run as plain SQL, a rollback that failed, sqlx#3932) would be handed out again: it
/// then holds the write lock, and every BEGIN IMMEDIATE elsewhere waits out its busy timeout,
/// or it refuses every later `begin_with`. Such a connection is closed instead. Taking the
/// handle first lets a rollback queued by a dropped transaction run before the check.
pub async fn outside_transaction(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    let mut handle = conn.lock_handle().await?;
    // SAFETY: `handle` is this connection's locked live handle; sqlite3_get_autocommit only
    // reads a flag of it.
    let autocommit = unsafe { ffi::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) } != 0;
    drop(handle);
    Ok(autocommit && !conn.is_in_transaction())
}

unsafe extern "C" fn md5_hex(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: called by SQLite with its own context and argument array.
    unsafe { digest_hex(ctx, argc, argv, HashKind::Md5) }
}

unsafe extern "C" fn sha1_hex(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: called by SQLite with its own context and argument array.
    unsafe { digest_hex(ctx, argc, argv, HashKind::Sha1) }
}

/// The body of both functions. Must not panic: a panic cannot unwind into SQLite.
///
/// # Safety
/// `ctx` and `argv` are what SQLite passed to the scalar function: `argv` holds `argc` valid
/// values for the duration of the call.
unsafe fn digest_hex(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
    hash: HashKind,
) {
    // SAFETY (whole body): the caller's contract above; every pointer SQLite returns is
    // checked for NULL before use, and the text is read before its length, as SQLite's
    // documentation requires.
    unsafe {
        if argc != 1 || argv.is_null() {
            ffi::sqlite3_result_error(ctx, c"reshard digest: one argument expected".as_ptr(), -1);
            return;
        }
        let v = *argv;
        if ffi::sqlite3_value_type(v) == ffi::SQLITE_NULL {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        // The value's text form (an INTEGER's decimal digits), valid until the value changes.
        let text = ffi::sqlite3_value_text(v);
        if text.is_null() {
            ffi::sqlite3_result_error_nomem(ctx);
            return;
        }
        let len = usize::try_from(ffi::sqlite3_value_bytes(v)).unwrap_or(0);
        let bytes = std::slice::from_raw_parts(text, len);
        let hex = token_hex(&hash.token(bytes), hash.bits());
        // 32 or 40 ASCII bytes; SQLITE_TRANSIENT makes SQLite copy them before `hex` drops.
        ffi::sqlite3_result_text(
            ctx,
            hex.as_ptr().cast(),
            hex.len() as c_int,
            ffi::SQLITE_TRANSIENT(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    async fn memory() -> SqliteConnection {
        SqliteConnection::connect("sqlite::memory:").await.unwrap()
    }

    /// Regression: a pooled SQLite connection released inside a transaction was handed out
    /// again, holding the write lock, so other writers' BEGIN IMMEDIATE timed out.
    #[tokio::test]
    async fn regression_pooled_connection_left_in_a_transaction_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("rs-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}?mode=rwc", dir.join("t.db").display());
        let opts = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .busy_timeout(std::time::Duration::from_millis(200));
        let pool = pool_options()
            .max_connections(2)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        {
            // A transaction sqlx does not know of, on a connection that goes back to the pool.
            let mut c = pool.acquire().await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
                .execute(&mut *c)
                .await
                .unwrap();
        }
        for _ in 0..4 {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
            sqlx::query("INSERT INTO t VALUES (2)")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            n, 4,
            "the abandoned transaction's row was rolled back, the others kept"
        );
        pool.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn names_agree_with_the_c_names() {
        for (name, c_name, hash, _) in FUNCTIONS {
            assert_eq!(name.as_bytes(), c_name.to_bytes());
            assert_eq!(function_name(hash), Some(name));
        }
        assert_eq!(function_name(HashKind::Identity), None);
    }

    #[tokio::test]
    async fn digests_are_the_keys_canonical_digests() {
        let mut c = memory().await;
        register_sqlite_functions(&mut c).await.unwrap();
        let row: (String, String, String, String, Option<String>) = sqlx::query_as(
            "SELECT reshard_md5('abc'), reshard_sha1('abc'), reshard_sha1(-42), \
             reshard_md5('日本🦀'), reshard_sha1(NULL)",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(row.0, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(row.1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        let hex = |h: HashKind, s: &str| token_hex(&h.token(s.as_bytes()), h.bits());
        assert_eq!(row.2, hex(HashKind::Sha1, "-42"));
        assert_eq!(row.3, hex(HashKind::Md5, "日本🦀"));
        assert_eq!(row.4, None);
        // Registering again (a pool's after_connect on a reused handle) is harmless.
        register_sqlite_functions(&mut c).await.unwrap();
        let again: String = sqlx::query_scalar("SELECT reshard_md5(7)")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(again, hex(HashKind::Md5, "7"));
    }

    #[tokio::test]
    async fn without_registration_the_function_is_unknown() {
        let mut c = memory().await;
        let e = sqlx::query("SELECT reshard_sha1(1)")
            .execute(&mut c)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("no such function: reshard_sha1"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn triggers_may_call_them_with_an_untrusted_schema() {
        let mut c = memory().await;
        register_sqlite_functions(&mut c).await.unwrap();
        for s in [
            "PRAGMA trusted_schema = OFF",
            "CREATE TABLE t (k INTEGER PRIMARY KEY, h TEXT)",
            "CREATE TRIGGER t_h AFTER INSERT ON t BEGIN \
             UPDATE t SET h = reshard_sha1(NEW.k) WHERE k = NEW.k; END",
            "INSERT INTO t (k) VALUES (5)",
        ] {
            sqlx::query(s).execute(&mut c).await.unwrap();
        }
        let h: String = sqlx::query_scalar("SELECT h FROM t")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(h, token_hex(&HashKind::Sha1.token(b"5"), 160));
    }
}
