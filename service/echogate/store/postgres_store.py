"""The PostgreSQL store, for several echogate replicas sharing one database.

Semantics are the embedded store's (the same test suite runs against both): a verdict is
acknowledged after its transaction commits (synchronous_commit as the server sets it, `on`
by default), and (source, transcript_id) is stored once however many replicas receive it.

Concurrency between replicas: rows are inserted with ON CONFLICT DO NOTHING, so a key
another replica is inserting at the same moment waits for that transaction and is then
read back as a duplicate. Each group inserts its rows in record_id order, so two replicas
lock keys in the same order and cannot deadlock each other; should the server still abort
a transaction (deadlock, serialization failure), the group is retried.

Schema migrations take an advisory lock, so replicas starting together migrate once.

The corpus memory is shared: each replica adds its increments to `corpus_turns` and reads back
the rows other replicas changed (a version column filled from a sequence), so every replica's
`seen_before` counts every replica's transcripts, at most one flush interval late. The
tables live in the connection's current schema (`?options=-csearch_path%3Dname` picks one).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone

import psycopg
from psycopg import errors as pg_errors

from echogate.store.base import StoreItem, record_id_for
from echogate.store.sql import COLUMN_LIST, COLUMNS, Dialect, SQLStore, queued_reviews, row_to_verdict, row_values
from echogate.types import Verdict

log = logging.getLogger(__name__)

_MIGRATIONS = {
    1: """
    CREATE TABLE records (
        record_id        TEXT NOT NULL PRIMARY KEY,
        source           TEXT NOT NULL,
        transcript_id    TEXT NOT NULL,
        content_sha256   TEXT NOT NULL,
        declared_origin  TEXT NOT NULL,
        language         TEXT NOT NULL,
        metadata         JSONB NOT NULL,
        turns            JSONB NOT NULL,
        bot_origin       DOUBLE PRECISION NOT NULL,
        repetitiveness   DOUBLE PRECISION NOT NULL,
        decision         TEXT NOT NULL,
        tags             JSONB NOT NULL,
        reasons          JSONB NOT NULL,
        model_version    TEXT NOT NULL,
        policy_version   TEXT NOT NULL,
        received_at      TIMESTAMPTZ NOT NULL,
        decided_at       TIMESTAMPTZ NOT NULL,
        corpus_duplicate DOUBLE PRECISION NOT NULL DEFAULT 0,
        UNIQUE (source, transcript_id)
    );
    CREATE INDEX records_decided_at ON records (decided_at, record_id);
    CREATE INDEX records_source_decided_at ON records (source, decided_at, record_id);
    CREATE INDEX records_tags ON records USING gin (tags jsonb_path_ops);
    CREATE TABLE corpus_turns (
        turn_key BIGINT NOT NULL PRIMARY KEY,
        seen     BIGINT NOT NULL
    );
    """,
    2: """
    CREATE TABLE reviews (
        record_id        TEXT NOT NULL PRIMARY KEY,
        source           TEXT NOT NULL,
        model_decision   TEXT NOT NULL,
        queued_at        TIMESTAMPTZ NOT NULL,
        lease_owner      TEXT,
        lease_expires_at TIMESTAMPTZ,
        reviewer         TEXT,
        label            TEXT,
        final_decision   TEXT,
        note             TEXT,
        reviewed_at      TIMESTAMPTZ
    );
    CREATE INDEX reviews_open ON reviews (queued_at) WHERE reviewed_at IS NULL;
    """,
    3: """
    CREATE SEQUENCE corpus_version;
    ALTER TABLE corpus_turns ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX corpus_turns_version ON corpus_turns (version);
    """,
    4: """
    ALTER TABLE records ADD COLUMN repetition JSONB NOT NULL DEFAULT '{}'::jsonb;
    """,
}

# Column types for unnest(): JSON goes in as text and is cast, so each row is one parameter
# per column and one statement per group, whatever the group size.
_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "float8", "float8", "text", "text",
          "text", "text", "text", "timestamptz", "timestamptz", "float8", "text")
_JSON = {"metadata", "turns", "tags", "reasons", "repetition"}
_INSERT = (
    f"INSERT INTO records ({COLUMN_LIST}) SELECT "
    + ", ".join(f"{c}::jsonb" if c in _JSON else c for c in COLUMNS)
    + " FROM unnest(" + ", ".join(f"%s::{t}[]" for t in _TYPES) + f") AS u({COLUMN_LIST}) "
    "ON CONFLICT DO NOTHING RETURNING record_id"
)


def _corpus_upsert(seen: str) -> str:
    """Write corpus rows, `seen` saying how a row that exists takes the new count. Rows go in key
    order, so two replicas writing the same keys lock them in the same order (no deadlock)."""
    return ("INSERT INTO corpus_turns (turn_key, seen, version) "
            "SELECT k, s, nextval('corpus_version') FROM unnest(%s::int8[], %s::int8[]) AS u(k, s) ORDER BY k "
            f"ON CONFLICT (turn_key) DO UPDATE SET seen = {seen}, version = excluded.version")


_UPSERT_CORPUS = _corpus_upsert("excluded.seen")  # one replica's counts, as they are
_ADD_CORPUS = _corpus_upsert("corpus_turns.seen + excluded.seen")  # several replicas: increments add up
_QUEUE_REVIEWS = ("INSERT INTO reviews (record_id, source, model_decision, queued_at) "
                  "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) ON CONFLICT DO NOTHING")
_U64 = (1 << 64) - 1
FULL_SYNC_EVERY = 20  # corpus syncs between two full reads of the shared counts
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

DIALECT = Dialect(
    param="%s",
    time_param=lambda dt: dt,
    # one value as an equality: the planner then walks (source, decided_at, record_id) in order
    any_of=lambda column, values: ((f"{column} = %s", values) if len(values) == 1 else (f"{column} = ANY(%s)", [values])),
    has_tag="tags ? %s",
    text_match="EXISTS (SELECT 1 FROM jsonb_array_elements(records.turns) t WHERE t ->> 'text' ILIKE %s)",
    day="to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    epoch_minute="(floor(extract(epoch FROM decided_at) / 60) * 60)",
    json_param="%s::jsonb",
    for_update=" FOR UPDATE",
    skip_locked=" SKIP LOCKED",  # two reviewers never wait for, or get, the same item
)


def _signed(keys) -> list[int]:
    """Unsigned 64-bit turn keys as BIGINT values (the same bits, read as signed)."""
    return [k - (1 << 64) if k >= 1 << 63 else k for k in keys]


def _connect(url: str) -> psycopg.Connection:
    """An autocommit connection: every write runs in an explicit `transaction()` block."""
    con = psycopg.connect(url, autocommit=True, connect_timeout=10)
    con.execute("SET TIME ZONE 'UTC'")
    return con


class PostgresStore(SQLStore):
    backend = "postgresql"
    dialect = DIALECT

    def __init__(self, url: str, max_group: int = 4096):
        super().__init__(max_group)
        self.url = url
        self._corpus_version: int | None = None  # the newest corpus row this replica has seen
        self._corpus_syncs = 0
        self._con = _connect(url)
        self._migrate()
        self._reader = _connect(url)
        self._read_lock = threading.Lock()
        self.start()

    def _migrate(self) -> None:
        con = self._con
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(hashtext('echogate-migrate:' || current_schema()))")
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)")
            applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations")}
            for version in sorted(set(_MIGRATIONS) - applied):
                con.execute(_MIGRATIONS[version])
                con.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, datetime.now(timezone.utc)))

    def _writer_connection(self) -> psycopg.Connection:
        """The writer's connection, reopened if the server restarted or the link broke."""
        if self._con.closed or self._con.broken:
            log.warning("reconnecting the verdict writer to PostgreSQL")
            self._con = _connect(self.url)
        return self._con

    def _commit(self, items: list[StoreItem]) -> dict[tuple[str, str], tuple[Verdict, bool]]:
        ids = [record_id_for(*item.transcript.key) for item in items]
        rows = sorted((row_values(rid, item, time=lambda dt: dt) for rid, item in zip(ids, items)),
                      key=lambda row: row[0])  # one lock order for every replica
        columns = [list(col) for col in zip(*rows)]
        for attempt in range(3):
            con = self._writer_connection()
            try:
                with con.transaction():
                    inserted = {rid for (rid,) in con.execute(_INSERT, columns).fetchall()}
                    queued = queued_reviews([(rid, item) for rid, item in zip(ids, items) if rid in inserted],
                                            lambda dt: dt)
                    if queued:
                        con.execute(_QUEUE_REVIEWS, [list(col) for col in zip(*queued)])
                    others = [rid for rid in ids if rid not in inserted]
                    existing = {}
                    if others:
                        for row in con.execute(f"SELECT {COLUMN_LIST} FROM records WHERE record_id = ANY(%s)",
                                               (others,)):
                            existing[(row[1], row[2])] = row_to_verdict(row)
                break
            except _RETRIED:
                if attempt == 2:
                    raise
                time.sleep(0.01 * (attempt + 1))
        out: dict[tuple[str, str], tuple[Verdict, bool]] = {}
        for rid, item in zip(ids, items):
            key = item.transcript.key
            out[key] = (existing[key], True) if key in existing else (replace(item.verdict, record_id=rid), False)
        return out

    def _fetch(self, sql: str, params: list) -> list[tuple]:
        with self._read_lock:
            if self._reader.closed or self._reader.broken:
                self._reader = _connect(self.url)
            return self._reader.execute(sql, params).fetchall()

    @contextmanager
    def _admin_transaction(self):
        with _connect(self.url) as con, con.transaction():
            yield con

    shared_corpus = True

    def load_corpus(self) -> dict[int, int]:
        rows = self._fetch("SELECT turn_key, seen, version FROM corpus_turns", [])
        self._corpus_version = max((v for _, _, v in rows), default=0)
        return {k & _U64: c for k, c, _ in rows}

    def sync_corpus(self, deltas: dict[int, int], capacity: int) -> tuple[dict[int, int], bool]:
        # Versions come from a sequence at write time, so another replica's transaction may commit
        # a version below one already read; a full read every FULL_SYNC_EVERY syncs picks those up.
        self._corpus_syncs += 1
        since = None if self._corpus_syncs % FULL_SYNC_EVERY == 0 else self._corpus_version
        halved = False
        with _connect(self.url) as con:
            if deltas:
                with con.transaction():
                    con.execute(_ADD_CORPUS, (_signed(deltas), list(deltas.values())))
            (rows,) = con.execute("SELECT count(*) FROM corpus_turns").fetchone()
            if rows > capacity:
                with con.transaction():  # one replica halves; the others see the new versions
                    con.execute("SELECT pg_advisory_xact_lock(hashtext('echogate-corpus:' || current_schema()))")
                    (rows,) = con.execute("SELECT count(*) FROM corpus_turns").fetchone()
                    if rows > capacity:
                        con.execute("DELETE FROM corpus_turns WHERE seen < 2")
                        con.execute("UPDATE corpus_turns SET seen = seen / 2, version = nextval('corpus_version')")
                        halved = True
            if halved or since is None:
                changed = con.execute("SELECT turn_key, seen, version FROM corpus_turns").fetchall()
            else:
                changed = con.execute("SELECT turn_key, seen, version FROM corpus_turns WHERE version > %s",
                                      (since,)).fetchall()
        self._corpus_version = max([since or 0, *(v for _, _, v in changed)])
        return {k & _U64: c for k, c, _ in changed}, halved or since is None

    def _write_corpus_chunk(self, keys: list[int], counts: list[int], clear_first: bool) -> None:
        con = self._writer_connection()
        with con.transaction():
            if clear_first:
                con.execute("DELETE FROM corpus_turns")
            con.execute(_UPSERT_CORPUS, (_signed(keys), counts))

    def _close(self) -> None:
        self._reader.close()
        self._con.close()
