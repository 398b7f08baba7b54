"""The embedded store: one SQLite file in WAL mode, no server to run.

Why SQLite and not DuckDB: the gate commits many small groups (a single-transcript Gate
must reply within milliseconds), and a small DuckDB write transaction cost 7-14 ms of CPU
here against 0.3 ms for SQLite (docs/store.md has the measurement). Analysis engines read
the file through any SQLite driver.

Durability: WAL journal with synchronous=FULL, so a commit returns only after the log is
synced; a hard kill or power loss after an acknowledged Gate loses nothing. Readers use
their own connection and never block the writer (WAL). One server process owns the file.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

from echogate.store.base import StoreItem, record_id_for
from echogate.store.sql import (COLUMN_LIST, COLUMNS, Dialect, SQLStore, iso, queued_reviews, row_to_verdict,
                                row_values)
from echogate.types import Verdict

_MIGRATIONS = {
    1: """
    CREATE TABLE records (
        record_id       TEXT NOT NULL PRIMARY KEY,
        source          TEXT NOT NULL,
        transcript_id   TEXT NOT NULL,
        content_sha256  TEXT NOT NULL,
        declared_origin TEXT NOT NULL,
        language        TEXT NOT NULL,
        metadata        TEXT NOT NULL,  -- JSON object
        turns           TEXT NOT NULL,  -- JSON array: role, text, ts, declared_author, bot_origin, repetitiveness, seen_before
        bot_origin      REAL NOT NULL,
        repetitiveness  REAL NOT NULL,
        decision        TEXT NOT NULL,
        tags            TEXT NOT NULL,  -- JSON array
        reasons         TEXT NOT NULL,  -- JSON array
        model_version   TEXT NOT NULL,
        policy_version  TEXT NOT NULL,
        received_at     TEXT NOT NULL,  -- ISO 8601, UTC
        decided_at      TEXT NOT NULL,
        corpus_duplicate REAL NOT NULL DEFAULT 0,  -- share of agent turns seen in earlier transcripts
        UNIQUE (source, transcript_id)
    );
    CREATE INDEX records_decided_at ON records (decided_at);
    """,
    2: """
    CREATE TABLE corpus_turns (
        turn_key INTEGER NOT NULL PRIMARY KEY,  -- echogate.corpus.turn_keys, as a signed 64-bit integer
        seen     INTEGER NOT NULL                -- earlier transcripts that had this turn (decayed)
    );
    """,
    3: """
    DROP INDEX records_decided_at;
    CREATE INDEX records_decided_at ON records (decided_at, record_id);
    CREATE INDEX records_source_decided_at ON records (source, decided_at, record_id);
    """,
    4: """
    CREATE TABLE reviews (
        record_id        TEXT NOT NULL PRIMARY KEY,  -- the reviewed record (records.record_id)
        source           TEXT NOT NULL,
        model_decision   TEXT NOT NULL,  -- the verdict's decision when queued (review)
        queued_at        TEXT NOT NULL,
        lease_owner      TEXT,           -- the reviewer holding the item, until lease_expires_at
        lease_expires_at TEXT,
        reviewer         TEXT,           -- set when reviewed
        label            TEXT,           -- human | machine
        final_decision   TEXT,
        note             TEXT,
        reviewed_at      TEXT
    );
    CREATE INDEX reviews_open ON reviews (reviewed_at, queued_at);
    """,
    5: """
    ALTER TABLE records ADD COLUMN repetition TEXT NOT NULL DEFAULT '{}';  -- JSON object: echogate.types.RepetitionStats
    """,
}

_INSERT = f"INSERT OR IGNORE INTO records ({COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"
_QUEUE_REVIEW = ("INSERT OR IGNORE INTO reviews (record_id, source, model_decision, queued_at) "
                 "VALUES (?, ?, ?, ?)")
_U64 = (1 << 64) - 1
_UPSERT_CORPUS = ("INSERT INTO corpus_turns (turn_key, seen) "
                  "SELECT value ->> 0, value ->> 1 FROM json_each(?) WHERE true "
                  "ON CONFLICT (turn_key) DO UPDATE SET seen = excluded.seen")
_MAX_PARAMS = 900  # SQLite builds may cap host parameters per statement

DIALECT = Dialect(
    param="?",
    time_param=iso,
    any_of=lambda column, values: (f"{column} IN ({', '.join('?' * len(values))})", values),
    has_tag="EXISTS (SELECT 1 FROM json_each(records.tags) WHERE json_each.value = ?)",
    # LIKE folds ASCII letters only (SQLite has no Unicode case folding without ICU)
    text_match="EXISTS (SELECT 1 FROM json_each(records.turns) WHERE json_each.value ->> 'text' LIKE ? ESCAPE '\\')",
    day="substr(decided_at, 1, 10)",
    epoch_minute="(CAST(strftime('%s', decided_at) AS INTEGER) / 60 * 60)",
    json_param="?",
    for_update="",  # BEGIN IMMEDIATE already holds the database's write lock
    skip_locked="",
)


def _connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


def _rollback(con: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: on a full disk or an I/O error SQLite has
    already rolled back itself, and a second ROLLBACK would hide the original error."""
    if con.in_transaction:
        con.execute("ROLLBACK")


class SQLiteStore(SQLStore):
    backend = "sqlite"
    dialect = DIALECT

    def __init__(self, path: str, max_group: int = 4096):
        super().__init__(max_group)
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = _connect(path)
        self._migrate()
        self._reader = _connect(path)
        self._read_lock = threading.Lock()
        self.start()

    def _migrate(self) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
            applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations")}
            for version in sorted(set(_MIGRATIONS) - applied):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, iso(datetime.now(timezone.utc))))
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def _commit(self, items: list[StoreItem]) -> dict[tuple[str, str], tuple[Verdict, bool]]:
        ids = [record_id_for(*item.transcript.key) for item in items]
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            existing = {}
            for start in range(0, len(ids), _MAX_PARAMS):
                chunk = ids[start : start + _MAX_PARAMS]
                for row in con.execute(f"SELECT {COLUMN_LIST} FROM records WHERE record_id IN "
                                       f"({', '.join('?' * len(chunk))})", chunk):
                    existing[(row[1], row[2])] = row_to_verdict(row)
            fresh = [(rid, item) for rid, item in zip(ids, items) if item.transcript.key not in existing]
            con.executemany(_INSERT, [row_values(rid, item) for rid, item in fresh])
            con.executemany(_QUEUE_REVIEW, queued_reviews(fresh, iso))
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        out: dict[tuple[str, str], tuple[Verdict, bool]] = {}
        for rid, item in zip(ids, items):
            key = item.transcript.key
            out[key] = (existing[key], True) if key in existing else (replace(item.verdict, record_id=rid), False)
        return out

    def _fetch(self, sql: str, params: list) -> list[tuple]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    @contextmanager
    def _admin_transaction(self):
        con = _connect(self.path)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        finally:
            con.close()

    def load_corpus(self) -> dict[int, int]:
        with self._read_lock:
            return {k & _U64: c for k, c in self._reader.execute("SELECT turn_key, seen FROM corpus_turns")}

    def _write_corpus_chunk(self, keys: list[int], counts: list[int], clear_first: bool) -> None:
        # One JSON parameter that SQLite unpacks itself (binding rows one by one would hold the
        # GIL), and no sync of its own: the next verdict commit (synchronous=FULL) syncs the WAL.
        rows = np.column_stack([np.array(keys, np.uint64).view(np.int64), np.array(counts, np.int64)])
        con = self._con
        con.execute("PRAGMA synchronous=NORMAL")
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                if clear_first:
                    con.execute("DELETE FROM corpus_turns")
                con.execute(_UPSERT_CORPUS, (orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY),))
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        finally:
            con.execute("PRAGMA synchronous=FULL")

    def _close(self) -> None:
        self._reader.close()
        self._con.close()
