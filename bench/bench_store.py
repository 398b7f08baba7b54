"""The tagged store at a million records: write throughput, filtered queries and exports, per backend.

  python bench/bench_store.py                       # both backends, 1,000,000 records each
  python bench/bench_store.py --records 100000 --backends sqlite

Records are 10-turn support conversations (texts from ../shared/datasets/sgd.jsonl when
present), 20 sources, decisions and scores drawn at random, decision times spread over 90
days. They are written through the store's group-commit path in groups of 1,000 (what a
loaded server commits), then each query runs five times and the median is reported.
PostgreSQL runs in its own schema of the `test` database, dropped afterwards.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from itertools import islice
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from echogate.export import export_parquet
from echogate.query import Cursor, GroupBy, RecordFilter, ScoreRange
from echogate.store import StoreItem, open_store
from echogate.types import DeclaredOrigin, Decision, Role, Scores, Transcript, Turn, TurnScore, Verdict

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sgd.jsonl"
END = datetime(2026, 11, 1, tzinfo=timezone.utc)


def texts() -> list[str]:
    if DATA.is_file():
        out = []
        with DATA.open() as fh:
            for line in fh:
                out += [t["text"] for t in json.loads(line)["turns"]]
                if len(out) > 20_000:
                    break
        return out
    return [f"Sample support turn number {i} about an order, a refund or a delivery." for i in range(1000)]


def items(n: int, pool: list[str], rng: random.Random):
    decisions = [Decision.ACCEPT] * 6 + [Decision.TAG] * 2 + [Decision.REVIEW, Decision.BLOCK]
    for i in range(n):
        decided = END - timedelta(seconds=rng.uniform(0, 90 * 86400))
        turns = tuple(Turn(Role.CUSTOMER if j % 2 == 0 else Role.AGENT, rng.choice(pool)) for j in range(10))
        t = Transcript(f"t{i}", f"source-{rng.randrange(20):02d}", turns, {"channel": "chat"},
                       rng.choice(list(DeclaredOrigin)), "en")
        scores = Scores(rng.random(), rng.random() ** 3, tuple(TurnScore(rng.random(), 0.0, 0) for _ in turns),
                        corpus_duplicate=rng.random() ** 4)
        tags = ("likely_machine",) if scores.bot_origin > 0.5 else ()
        v = Verdict(t.id, t.source, uuid.UUID(int=rng.getrandbits(128)).hex * 2, scores, rng.choice(decisions),
                    tags, ("rule: reason",), "bot-origin-0.2.0", "default-1", decided)
        yield StoreItem(t, v, decided)


def write(store, n: int, pool: list[str]) -> float:
    """Records per second of store time (making the records is not counted)."""
    generated = items(n, pool, random.Random(1))
    seconds = 0.0
    while group := list(islice(generated, 1000)):
        started = time.perf_counter()
        store.put(group).result()
        seconds += time.perf_counter() - started
    return n / seconds


def median_ms(fn, runs: int = 5) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        size = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), size


def queries(store) -> dict[str, tuple[float, int]]:
    last30 = END - timedelta(days=30)
    page = RecordFilter(sources=("source-07",), decisions=(Decision.ACCEPT,), since=last30)
    middle = store.query(RecordFilter(), None, 1)[0].verdict.decided_at + timedelta(days=45)
    cases = {
        "count, all records": lambda: store.count(RecordFilter())[0].count,
        "count by decision": lambda: len(store.count(RecordFilter(), (GroupBy.DECISION,))),
        "count by source and day, last 7 days": lambda: len(store.count(
            RecordFilter(since=END - timedelta(days=7)), (GroupBy.SOURCE, GroupBy.DAY))),
        "page of 100: source + accept + last 30 days": lambda: len(store.query(page, None, 100)),
        "page of 100 after a cursor mid-way": lambda: len(store.query(RecordFilter(), Cursor(middle, ""), 100)),
        "page of 100: bot_origin < 0.3 and repetitiveness < 0.3": lambda: len(store.query(
            RecordFilter(bot_origin=ScoreRange(below=0.3), repetitiveness=ScoreRange(below=0.3)), None, 100)),
        "page of 100: tag likely_machine, one source": lambda: len(store.query(
            RecordFilter(tags=("likely_machine",), sources=("source-03",)), None, 100)),
        "page of 100: text contains 'reservation'": lambda: len(store.query(
            RecordFilter(text_contains="reservation"), None, 100)),
        "count: text contains 'vegan', one source, last 7 days": lambda: store.count(RecordFilter(
            text_contains="vegan", sources=("source-03",), since=END - timedelta(days=7)))[0].count,
    }
    return {name: median_ms(fn) for name, fn in cases.items()}


def export(store, f: RecordFilter, out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    manifest = export_parquet(store, f, out)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    shutil.rmtree(out)
    return seconds, manifest["rows"], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    pool = texts()
    tmp = Path(tempfile.mkdtemp(prefix="echogate-bench-store-"))
    for backend in args.backends.split(","):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        if backend == "sqlite":
            url = str(tmp / "bench.db")
        else:
            with psycopg.connect(POSTGRES, autocommit=True) as con:
                con.execute(f"CREATE SCHEMA {schema}")
            url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
        store = open_store(url)
        try:
            rate = write(store, args.records, pool)
            print(f"\n== {backend}: {args.records:,} records written at {rate:,.0f} records/s "
                  f"(groups of 1,000)", flush=True)
            if backend == "sqlite":
                print(f"   file size {sum(p.stat().st_size for p in tmp.glob('bench.db*')) / 2**20:,.0f} MiB")
            for name, (ms, size) in queries(store).items():
                print(f"   {name:58s} {ms:9.1f} ms  ({size} rows/groups)", flush=True)
            for name, f in (("export accepted, last 30 days", RecordFilter(decisions=(Decision.ACCEPT,),
                                                                           since=END - timedelta(days=30))),
                            ("export everything", RecordFilter())):
                seconds, rows, size = export(store, f, tmp / "export")
                print(f"   {name:58s} {seconds:9.1f} s   ({rows:,} rows, {rows / seconds:,.0f} rows/s, "
                      f"{size / 2**20:,.0f} MiB Parquet)", flush=True)
        finally:
            store.close()
            if backend != "sqlite":
                with psycopg.connect(POSTGRES, autocommit=True) as con:
                    con.execute(f"DROP SCHEMA {schema} CASCADE")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
