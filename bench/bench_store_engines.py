"""Why the embedded store is SQLite: CPU per durable commit, SQLite vs DuckDB.

  pip install duckdb   # not a dependency of echogate; only this comparison needs it
  python bench/bench_store_engines.py

Writes 18-turn transcripts, one per transaction (the single-transcript Gate path) and 256
per transaction (the batched path), each engine in its durable configuration.
"""
from __future__ import annotations

import json
import resource
import sqlite3
import tempfile
import uuid
from datetime import datetime, timezone

TURNS = [{"role": "agent", "text": "I can help you with that. Could you share your order number?", "ts": None,
          "declared_author": "unknown", "bot_origin": 0.5, "repetitiveness": 0.1}] * 18


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sqlite_run(path: str, per_commit: int, commits: int) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE r (id TEXT PRIMARY KEY, source TEXT, turns TEXT, bot REAL, reasons TEXT, decided TEXT)")
    now = datetime.now(timezone.utc).isoformat()
    start = cpu()
    for _ in range(commits):
        rows = [(uuid.uuid4().hex, "s", json.dumps(TURNS), 0.5, json.dumps(["a reason"]), now)
                for _ in range(per_commit)]
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR IGNORE INTO r VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    return (cpu() - start) / commits


def duckdb_run(path: str, per_commit: int, commits: int) -> float:
    import duckdb

    con = duckdb.connect(path)
    con.execute("CREATE TABLE r (id VARCHAR PRIMARY KEY, source VARCHAR, turns STRUCT(role VARCHAR, text VARCHAR, "
                "ts TIMESTAMPTZ, declared_author VARCHAR, bot_origin FLOAT, repetitiveness FLOAT)[], bot FLOAT, "
                "reasons VARCHAR[], decided TIMESTAMPTZ)")
    now = datetime.now(timezone.utc)
    start = cpu()
    for _ in range(commits):
        rows = [(uuid.uuid4().hex, "s", TURNS, 0.5, ["a reason"], now) for _ in range(per_commit)]
        con.execute("BEGIN")
        con.executemany("INSERT OR IGNORE INTO r VALUES (?, ?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    return (cpu() - start) / commits


def main() -> None:
    engines = {"sqlite (WAL, synchronous=FULL)": sqlite_run}
    try:
        import duckdb  # noqa: F401

        engines["duckdb"] = duckdb_run
    except ImportError:
        print("duckdb not installed: pip install duckdb to compare")
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in engines.items():
            one = run(f"{tmp}/{name[:6]}1.db", 1, 300)
            many = run(f"{tmp}/{name[:6]}256.db", 256, 10)
            print(f"{name:32s} 1 transcript/commit: {one * 1000:6.2f} ms CPU   "
                  f"256/commit: {many * 1000:7.1f} ms CPU ({many / 256 * 1e6:5.0f} us per transcript)")


if __name__ == "__main__":
    main()
