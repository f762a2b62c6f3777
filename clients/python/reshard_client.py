"""Reference client for reshard's live routing, for applications not written in Rust.

It follows the writer contract (docs/writer-contract.md) the way ``reshard::Router`` does
(src/router.rs, src/router/begin.rs): read the whole live routing from the catalog's
``live_routing`` view in one statement, so routing, jobs and moves come from one snapshot; check
``routing.version`` at most every ``check_interval`` and reload when it moved; open each write
transaction at the key's owner with ``SELECT reshard_assert_owner(key)`` first, so that even a
stale UPDATE or DELETE matching no row is refused; on the fence error reload and retry.

Routing is evaluated here exactly as in Rust (docs/map-format.md): the same digests, the same
integer parsing, the same tie-breaks. tests/fixtures/routing_conformance.json, produced by the
Rust router, is the check (test_conformance.py).

Standard library, plus psycopg 3 for PostgreSQL and PyMySQL for MariaDB, imported only when
such a database is used. One ``Client`` per thread: it caches one connection per shard.
"""

import bisect
import hashlib
import json
import os
import re
import sqlite3
import time
import urllib.parse

FENCE_SQLSTATE = "RS001"
FENCE_MESSAGE = "reshard: keys are moving, refresh routing and retry"
# MariaDB's error number for a SIGNAL: PyMySQL, like most MySQL drivers, drops its SQLSTATE.
MARIADB_SIGNAL_ERRNO = 1644
MARIADB_NO_SUCH_FUNCTION = 1305
POSTGRES_UNDEFINED_FUNCTION = "42883"
ASSERT_OWNER = "SELECT reshard_assert_owner(%s)"
LIVE_ROUTING = (
    "SELECT version, map_json, job_id, job_state, from_map, to_map, flipped FROM live_routing"
)
VERSION = "SELECT version FROM routing WHERE id = 1"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# Rust's i64::from_str: an optional sign and ASCII digits, nothing else (no spaces, no "_").
_I64_TEXT = re.compile(r"[+-]?[0-9]+")


class RouteError(ValueError):
    """The map cannot route this key (Rust refuses it too, e.g. text for an integer map)."""


class FenceError(Exception):
    """A write was still refused by the fence after every retry."""


def _check_key(key):
    # bool is an int in Python but never a key; ints beyond i64 have no Rust Key.
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise RouteError(f"key {key!r} is neither an integer nor a string")
    if isinstance(key, int) and not I64_MIN <= key <= I64_MAX:
        raise RouteError(f"key {key} is not a 64-bit integer")


def _as_i64(key):
    """An integer map's view of a key: ints as they are, strings parsed as Rust parses them."""
    if isinstance(key, int):
        return key
    if _I64_TEXT.fullmatch(key) and I64_MIN <= int(key) <= I64_MAX:
        return int(key)
    raise RouteError(f"key {key!r} is not an integer, and this map routes integer keys")


def _digest(hash_name, text):
    """H(s): the md5/sha1 of the UTF-8 bytes, read as one big-endian unsigned integer."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: no Rust string holds one
        raise RouteError(f"key {text!r} is not valid Unicode") from e
    return int.from_bytes(hashlib.new(hash_name, data).digest(), "big")


class Partitioner:
    """One map's ``partitioning`` compiled for routing (src/map/partitioner.rs)."""

    def __init__(self, partitioning):
        self.kind = partitioning["kind"]
        self.hash = partitioning.get("hash")
        if self.kind == "modulo":
            self.slots = list(partitioning["shards"])
            names = self.slots
        elif self.kind == "range":
            # Sorted by start, unbounded first, as Rust keeps them; binary search needs it.
            ranges = sorted(partitioning["ranges"], key=lambda r: _bound_key(r["from"]))
            self.starts = [_bound_key(r["from"]) for r in ranges]
            self.range_owner = [r["shard"] for r in ranges]
            bounds = [b for r in ranges for b in (r["from"], r["to"]) if b is not None]
            self.integer = not (bounds and isinstance(bounds[0], str))
            names = self.range_owner
        elif self.kind == "ring":
            nodes, vnodes = partitioning["nodes"], partitioning["vnodes"]
            pairs = sorted(
                (_digest(self.hash, f"{n}:{i}"), n) for n in nodes for i in range(vnodes)
            )
            # Equal tokens: the smaller name keeps it, like Rust's sort-then-dedup.
            self.tokens, self.token_owner = [], []
            for token, name in pairs:
                if not self.tokens or self.tokens[-1] != token:
                    self.tokens.append(token)
                    self.token_owner.append(name)
            names = nodes
        else:
            raise ValueError(f"unknown partitioning kind {self.kind!r}")
        self.shards = list(dict.fromkeys(names))  # the map's owners, in its order

    def owner(self, key):
        _check_key(key)
        if self.kind == "modulo":
            n = len(self.slots)
            if self.hash == "identity":
                return self.slots[_as_i64(key) % n]  # Python's % is never negative: -3 % 8 == 5
            return self.slots[_digest(self.hash, str(key)) % n]
        if self.kind == "range":
            if len(self.starts) == 1:  # one unbounded range takes any key
                return self.range_owner[0]
            if self.integer:
                k = _as_i64(key)
            elif isinstance(key, int):
                raise RouteError(f"key {key} is an integer, and this map routes text keys")
            else:
                k = key
            i = bisect.bisect_right(self.starts, _bound_key(k))
            return self.range_owner[max(i - 1, 0)]
        # ring: the first token strictly greater than H(s), wrapping to the smallest
        i = bisect.bisect_right(self.tokens, _digest(self.hash, str(key)))
        return self.token_owner[i if i < len(self.tokens) else 0]


def _bound_key(b):
    """Order of range starts and keys: unbounded first, text bytewise as Rust compares it."""
    if b is None:
        return (0, 0)
    if isinstance(b, str):
        try:
            return (1, b.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise RouteError(f"key {b!r} is not valid Unicode") from e
    return (1, b)


class Routing:
    """One snapshot of the live routing: the rows of ``live_routing``, evaluated without I/O.

    The live owner rule (docs/catalog.md; src/router.rs ``RoutingSnapshot``): while an
    unfinished job has flipped moves, a key whose (from_map owner, to_map owner) pair is flipped
    belongs to its to_map owner and every other key to its from_map owner; otherwise the
    routing map ``map_json`` answers.
    """

    def __init__(self, rows):
        if not rows:
            raise ValueError("the catalog has no routing yet: no job has been applied with it")
        first = rows[0]
        self.version = int(first["version"])
        routing = json.loads(first["map_json"])
        self.current = Partitioner(routing["partitioning"])
        self.urls = dict(routing["shards"])
        active = [
            r
            for r in rows
            if r.get("from_map") is not None
            and r.get("job_state") not in ("completed", "cancelled")
            and json.loads(r.get("flipped") or "[]")
        ]
        if len(active) > 1:
            raise ValueError("several unfinished jobs have flipped moves: routing is ambiguous")
        self.job = None
        if active:
            row = active[0]
            maps = [json.loads(row["from_map"]), json.loads(row["to_map"])]
            self.from_p, self.to_p = (Partitioner(m["partitioning"]) for m in maps)
            self.flipped = {tuple(p) for p in json.loads(row["flipped"])}
            for src, dst in self.flipped:
                if src not in self.from_p.shards or dst not in self.to_p.shards:
                    raise ValueError(f"flipped move {src} -> {dst} names a shard the plan lacks")
            for m in maps:
                for name, url in m["shards"].items():
                    self.urls.setdefault(name, url)
            self.job = row.get("job_id")

    @property
    def has_flips(self):
        return hasattr(self, "flipped")

    def route(self, key):
        """The live owner of ``key``; RouteError when the maps cannot route it."""
        if not self.has_flips:
            return self.current.owner(key)
        pair = (self.from_p.owner(key), self.to_p.owner(key))
        return pair[1] if pair in self.flipped else pair[0]


def resolve_url(shard, url):
    """The URL to connect to a shard with, as src/shard_url.rs resolves it:
    ``RESHARD_SHARD_<NAME>_URL`` overrides the map (plans and the catalog hold passwords
    redacted), and ``env:NAME`` reads the variable NAME."""
    override = "RESHARD_SHARD_%s_URL" % shard.upper().replace("-", "_")
    if override in os.environ:
        return os.environ[override]
    if url.startswith("env:"):
        name = url[4:]
        if name not in os.environ:
            raise ValueError(f"shard {shard}: environment variable {name} is not set")
        url = os.environ[name]
    if ":REDACTED@" in url or "=REDACTED" in url:
        raise ValueError(f"shard {shard}: the URL's password was redacted; set {override}")
    return url


def _sqlite_path(url):
    rest = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
    return rest.split("?", 1)[0]


def _register_sqlite_functions(conn):
    # Guards of hash-routed maps on SQLite call these (docs/writer-contract.md, "SQLite").
    for name in ("md5", "sha1"):
        conn.create_function(
            f"reshard_{name}",
            1,
            lambda x, n=name: None if x is None else hashlib.new(n, str(x).encode()).hexdigest(),
            deterministic=True,
        )


def connect(url):
    """A DB-API connection, no transaction open. (kind, connection)."""
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        return "postgres", psycopg.connect(url)
    if url.startswith(("mysql://", "mariadb://")):
        import pymysql

        u = urllib.parse.urlsplit(url)
        return "mysql", pymysql.connect(
            host=u.hostname or "localhost",
            port=u.port or 3306,
            user=urllib.parse.unquote(u.username or ""),
            password=urllib.parse.unquote(u.password or ""),
            database=urllib.parse.unquote(u.path.lstrip("/")) or None,
            charset="utf8mb4",
            autocommit=False,
        )
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(_sqlite_path(url), timeout=10, isolation_level=None)
        _register_sqlite_functions(conn)
        return "sqlite", conn
    raise ValueError("not a sqlite:, postgres:// or mysql:// URL")


def is_fence_error(err):
    """Whether a database error is the fence's refusal: retry it at the fresh owner."""
    if getattr(err, "sqlstate", None) == FENCE_SQLSTATE:  # psycopg
        return True
    args = getattr(err, "args", ())
    if len(args) >= 2 and args[0] == MARIADB_SIGNAL_ERRNO:  # PyMySQL: (errno, message)
        return FENCE_MESSAGE in str(args[1])
    return FENCE_MESSAGE in str(err)  # SQLite: RAISE(ABORT) carries only the message


def _is_missing_function(err):
    """The shard has no guard, so no assertion: routing alone decides there."""
    if getattr(err, "sqlstate", None) == POSTGRES_UNDEFINED_FUNCTION:
        return True
    args = getattr(err, "args", ())
    return bool(args) and args[0] == MARIADB_NO_SUCH_FUNCTION


class Client:
    """Routes keys from a catalog (``sqlite:`` or ``postgres://``, read only) and opens
    write transactions at their owners."""

    def __init__(self, catalog_url, check_interval=0.1, max_attempts=60):
        self.check_interval = check_interval
        self.max_attempts = max_attempts
        self.fence_retries = 0
        self._shards = {}  # name -> (kind, connection)
        if catalog_url.startswith("sqlite:"):
            uri = "file:%s?mode=ro" % urllib.parse.quote(_sqlite_path(catalog_url))
            self._catalog = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
        elif catalog_url.startswith(("postgres://", "postgresql://")):
            import psycopg

            self._catalog = psycopg.connect(catalog_url, autocommit=True)
        else:
            raise ValueError("a catalog is sqlite: or postgres://")
        self.refresh()

    def _query(self, sql):
        cur = self._catalog.cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def refresh(self):
        """Reloads the whole routing: one statement, so one consistent snapshot."""
        self.routing = Routing(self._query(LIVE_ROUTING))
        self._checked = time.monotonic()

    def route(self, key):
        """The key's owner now, after a version check when the last is over check_interval old.
        A writer may be that stale by design: the fence and the assertion refuse what it gets
        wrong."""
        if time.monotonic() - self._checked >= self.check_interval:
            rows = self._query(VERSION)
            if not rows or int(rows[0]["version"]) != self.routing.version:
                self.refresh()
            self._checked = time.monotonic()
        return self.routing.route(key)

    def _connection(self, shard):
        if shard not in self._shards:
            url = self.routing.urls.get(shard)
            if url is None:
                raise ValueError(f"shard {shard} is not in the catalog's routing")
            self._shards[shard] = connect(resolve_url(shard, url))
        return self._shards[shard]

    def _drop(self, shard):
        kind_conn = self._shards.pop(shard, None)
        if kind_conn:
            try:
                kind_conn[1].close()
            except Exception:
                pass

    def begin(self, key):
        """(shard, connection) with a transaction open at the key's owner, ownership asserted
        first. Commit or roll back through the connection. Raises the fence error when the
        shard no longer owns the key (the caller refreshes and retries: see ``write``)."""
        shard = self.route(key)
        kind, conn = self._connection(shard)
        if kind == "sqlite":
            # No stored functions on SQLite; be the writer from the start (the row guards
            # apply), so the lock is waited for here and never upgraded mid-transaction.
            conn.execute("BEGIN IMMEDIATE")
            return shard, conn
        if kind == "mysql":
            conn.begin()
        try:
            cur = conn.cursor()
            cur.execute(ASSERT_OWNER, (key,))
            cur.fetchall()
        except Exception as e:
            conn.rollback()
            if not _is_missing_function(e):
                raise
            if kind == "mysql":  # the rollback ended it: a fresh transaction, unasserted
                conn.begin()
        return shard, conn

    def write(self, key, fn):
        """Runs ``fn(cursor)`` in one transaction at the key's owner and commits; returns
        (shard, routing version, fn's result). On the fence error the routing is reloaded and
        the write retried with a growing pause (a fence lasts at most ``--max-fence``). Other
        errors close that shard's connection and propagate. Make ``fn`` idempotent or
        check its result: it may run more than once."""
        delay = 0.005
        for attempt in range(self.max_attempts):
            shard, version = None, self.routing.version
            try:
                shard, conn = self.begin(key)
                version = self.routing.version
                result = fn(conn.cursor())
                conn.commit()
                return shard, version, result
            except Exception as e:
                if shard is not None and shard in self._shards:
                    try:
                        self._shards[shard][1].rollback()
                    except Exception:
                        self._drop(shard)
                if not is_fence_error(e):
                    if shard is not None:
                        self._drop(shard)
                    raise
            self.fence_retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
            self.refresh()
        raise FenceError(f"key {key!r}: still fenced after {self.max_attempts} attempts")

    def close(self):
        for shard in list(self._shards):
            self._drop(shard)
        self._catalog.close()
