"""The embedded store: one DuckDB file, no server to run.

DuckDB syncs its write-ahead log on every commit, so a committed group survives a hard
kill; on the next open the log is replayed. Data engineers can open the file with the
`duckdb` CLI or Python for SQL and Parquet export (see docs/store.md). One process owns
the file at a time; several replicas need a shared server database.

Rows are handed to DuckDB as an Arrow table per group (one vectorised INSERT ... SELECT
instead of a statement per row).
"""
from __future__ import annotations

import json
import threading
from itertools import accumulate
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa

from echogate.store.base import Store, StoreItem, record_id_for
from echogate.types import (
    DeclaredOrigin,
    Decision,
    Record,
    Role,
    Scores,
    Transcript,
    Turn,
    TurnScore,
    Verdict,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    record_id       VARCHAR NOT NULL PRIMARY KEY,
    source          VARCHAR NOT NULL,
    transcript_id   VARCHAR NOT NULL,
    content_sha256  VARCHAR NOT NULL,
    declared_origin VARCHAR NOT NULL,
    language        VARCHAR NOT NULL,
    metadata        JSON NOT NULL,
    turns           STRUCT(role VARCHAR, text VARCHAR, ts TIMESTAMPTZ, declared_author VARCHAR,
                           bot_origin FLOAT, repetitiveness FLOAT)[] NOT NULL,
    bot_origin      FLOAT NOT NULL,
    repetitiveness  FLOAT NOT NULL,
    decision        VARCHAR NOT NULL,
    tags            VARCHAR[] NOT NULL,
    reasons         VARCHAR[] NOT NULL,
    model_version   VARCHAR NOT NULL,
    policy_version  VARCHAR NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    decided_at      TIMESTAMPTZ NOT NULL
);
"""

_TURN_TYPE = pa.struct([("role", pa.string()), ("text", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                        ("declared_author", pa.string()), ("bot_origin", pa.float32()),
                        ("repetitiveness", pa.float32())])
_ARROW_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("source", pa.string()), ("transcript_id", pa.string()),
    ("content_sha256", pa.string()), ("declared_origin", pa.string()), ("language", pa.string()),
    ("metadata", pa.string()), ("turns", pa.list_(_TURN_TYPE)), ("bot_origin", pa.float32()),
    ("repetitiveness", pa.float32()), ("decision", pa.string()), ("tags", pa.list_(pa.string())),
    ("reasons", pa.list_(pa.string())), ("model_version", pa.string()), ("policy_version", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")), ("decided_at", pa.timestamp("us", tz="UTC")),
])
_COLUMNS = ", ".join(_ARROW_SCHEMA.names)


class DuckDBStore(Store):
    backend = "duckdb"

    def __init__(self, path: str, max_group: int = 4096):
        super().__init__(max_group)
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = duckdb.connect(path)
        self._read_lock = threading.Lock()
        self._reader = self._con.cursor()
        self._migrate()
        self.start()

    def _migrate(self) -> None:
        self._con.execute(_SCHEMA)
        applied = {v for (v,) in self._con.execute("SELECT version FROM schema_migrations").fetchall()}
        if SCHEMA_VERSION not in applied:
            self._con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [SCHEMA_VERSION, datetime.now(timezone.utc)])

    def _commit(self, items: list[StoreItem]) -> dict[tuple[str, str], tuple[Verdict, bool]]:
        con = self._con
        con.register("incoming", _to_arrow(items))
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                # The primary key decides: rows whose record_id exists are skipped, and
                # RETURNING names the ones that were new. No scan of the whole table.
                inserted = {r for (r,) in con.execute(
                    f"INSERT OR IGNORE INTO records SELECT {_COLUMNS} FROM incoming RETURNING record_id").fetchall()}
                existing: dict[tuple[str, str], Verdict] = {}
                skipped = [record_id_for(*i.transcript.key) for i in items
                           if record_id_for(*i.transcript.key) not in inserted]
                if skipped:
                    rows = con.execute(f"SELECT {_COLUMNS} FROM records WHERE record_id IN "
                                       f"({', '.join('?' * len(skipped))})", skipped).fetchall()
                    existing = {(row[1], row[2]): _row_to_verdict(row) for row in rows}
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("incoming")
        out: dict[tuple[str, str], tuple[Verdict, bool]] = {}
        for item in items:
            key = item.transcript.key
            out[key] = (existing[key], True) if key in existing else (_with_record_id(item.verdict), False)
        return out

    def get(self, record_id: str | None = None, key: tuple[str, str] | None = None) -> Record | None:
        if record_id is None:
            if key is None:
                raise ValueError("record_id or key is required")
            record_id = record_id_for(*key)
        with self._read_lock:
            row = self._reader.execute(f"SELECT {_COLUMNS} FROM records WHERE record_id = ?", [record_id]).fetchone()
        if row is None:
            return None
        return Record(verdict=_row_to_verdict(row), transcript=_row_to_transcript(row), received_at=row[15])

    def _close(self) -> None:
        self._reader.close()
        self._con.close()


def _with_record_id(verdict: Verdict) -> Verdict:
    return replace(verdict, record_id=record_id_for(verdict.source, verdict.transcript_id))


def _to_arrow(items: list[StoreItem]) -> pa.Table:
    """Column-wise Arrow table of a group (much faster than building a dict per row)."""
    ts = [i.transcript for i in items]
    vs = [i.verdict for i in items]
    turns = [turn for t in ts for turn in t.turns]
    scores = [score for v in vs for score in v.scores.turns]
    offsets = pa.array([0, *accumulate(len(t.turns) for t in ts)], pa.int32())
    turn_struct = pa.StructArray.from_arrays([
        pa.array([x.role.value for x in turns], pa.string()),
        pa.array([x.text for x in turns], pa.string()),
        pa.array([x.timestamp for x in turns], pa.timestamp("us", tz="UTC")),
        pa.array([x.declared_author.value for x in turns], pa.string()),
        pa.array([x.bot_origin for x in scores], pa.float32()),
        pa.array([x.repetitiveness for x in scores], pa.float32()),
    ], fields=list(_TURN_TYPE))
    return pa.Table.from_arrays([
        pa.array([record_id_for(t.source, t.id) for t in ts]), pa.array([t.source for t in ts]),
        pa.array([t.id for t in ts]), pa.array([v.content_sha256 for v in vs]),
        pa.array([t.declared_origin.value for t in ts]), pa.array([t.language for t in ts]),
        pa.array([json.dumps(t.metadata, ensure_ascii=False, sort_keys=True) for t in ts]),
        pa.ListArray.from_arrays(offsets, turn_struct),
        pa.array([v.scores.bot_origin for v in vs], pa.float32()),
        pa.array([v.scores.repetitiveness for v in vs], pa.float32()),
        pa.array([v.decision.value for v in vs]), pa.array([list(v.tags) for v in vs], pa.list_(pa.string())),
        pa.array([list(v.reasons) for v in vs], pa.list_(pa.string())), pa.array([v.model_version for v in vs]),
        pa.array([v.policy_version for v in vs]),
        pa.array([i.received_at for i in items], pa.timestamp("us", tz="UTC")),
        pa.array([v.decided_at for v in vs], pa.timestamp("us", tz="UTC")),
    ], schema=_ARROW_SCHEMA)


def _row_to_verdict(row: tuple) -> Verdict:
    (record_id, source, transcript_id, sha, _declared, _lang, _meta, turns, bot, rep, decision, tags, reasons,
     model_version, policy_version, _received, decided) = row
    return Verdict(
        transcript_id=transcript_id, source=source, content_sha256=sha,
        scores=Scores(bot, rep, tuple(TurnScore(t["bot_origin"], t["repetitiveness"]) for t in turns)),
        decision=Decision(decision), tags=tuple(tags), reasons=tuple(reasons), model_version=model_version,
        policy_version=policy_version, decided_at=decided, record_id=record_id,
    )


def _row_to_transcript(row: tuple) -> Transcript:
    turns = tuple(Turn(Role(t["role"]), t["text"], t["ts"], DeclaredOrigin(t["declared_author"])) for t in row[7])
    return Transcript(id=row[2], source=row[1], turns=turns, metadata=json.loads(row[6]),
                      declared_origin=DeclaredOrigin(row[4]), language=row[5])
