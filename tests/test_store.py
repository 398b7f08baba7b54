"""One suite for every store backend: the embedded SQLite file and the real PostgreSQL server.

Filters and counts are checked against a plain-Python reading of the same records, over
filters that each select a different subset, so a wrong clause fails here.
"""
from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from echogate.query import Cursor, GroupBy, RecordFilter, ScoreRange
from echogate.store import StoreItem, open_store, record_id_for
from echogate.store.sql import COLUMNS
from echogate.types import DeclaredOrigin, Decision, RepetitionStats, Role, Scores, Transcript, Turn, TurnScore, Verdict

T0 = datetime(2026, 9, 30, 22, 0, tzinfo=timezone.utc)
TEXTS = ["Where is my parcel?", "I want a REFUND now", "100% sure_thing", "Ça marche, merci", "hello"]


def make_item(i: int, rng: random.Random) -> StoreItem:
    decided = T0 + timedelta(hours=7 * (i // 3))  # three records share each time: the cursor must break ties
    turns = (Turn(Role.CUSTOMER, rng.choice(TEXTS), decided), Turn(Role.AGENT, f"Answer number {i}."))
    t = Transcript(id=f"t{i}", source=rng.choice(["acme", "beta", "gamma"]), turns=turns,
                   metadata={"n": str(i)}, declared_origin=rng.choice(list(DeclaredOrigin)), language="en")
    scores = Scores(round(rng.random(), 3), round(rng.random(), 3),
                    (TurnScore(0.1, 0.0, 0), TurnScore(0.9, 0.5, i % 4)), corpus_duplicate=round(rng.random(), 3),
                    repetition=RepetitionStats(*(round(rng.random(), 3) for _ in RepetitionStats._fields)))
    tags = tuple(tag for tag in ("likely_machine", "repetitive") if rng.random() < 0.4)
    v = Verdict(t.id, t.source, f"{i:064x}", scores, rng.choice(list(Decision)), tags, (f"rule{i % 3}: why",),
                rng.choice(["m1", "m2"]), "p1", decided)
    return StoreItem(t, v, decided - timedelta(seconds=1))


@pytest.fixture
def items():
    rng = random.Random(7)
    return [make_item(i, rng) for i in range(60)]


@pytest.fixture
def store(store_url, items):
    s = open_store(store_url)
    s.put(items).result()
    yield s
    s.close()


def matches(f: RecordFilter, item: StoreItem) -> bool:
    """The filter's meaning, in plain Python."""
    t, v = item.transcript, item.verdict

    def within(r: ScoreRange, x: float) -> bool:
        return (r.at_least is None or x >= r.at_least) and (r.below is None or x < r.below)

    return ((f.since is None or v.decided_at >= f.since) and (f.until is None or v.decided_at < f.until)
            and (not f.sources or t.source in f.sources) and (not f.decisions or v.decision in f.decisions)
            and all(tag in v.tags for tag in f.tags)
            and (not f.declared_origins or t.declared_origin in f.declared_origins)
            and (not f.model_versions or v.model_version in f.model_versions)
            and within(f.bot_origin, v.scores.bot_origin) and within(f.repetitiveness, v.scores.repetitiveness)
            and within(f.corpus_duplicate, v.scores.corpus_duplicate)
            and (not f.text_contains or any(f.text_contains.lower() in x.text.lower() for x in t.turns)))


FILTERS = [
    RecordFilter(),
    RecordFilter(since=T0 + timedelta(hours=21), until=T0 + timedelta(hours=49)),  # both on record times
    RecordFilter(sources=("acme", "gamma")),
    RecordFilter(decisions=(Decision.ACCEPT,)),
    RecordFilter(tags=("likely_machine",)),
    RecordFilter(tags=("likely_machine", "repetitive")),
    RecordFilter(declared_origins=(DeclaredOrigin.HUMAN, DeclaredOrigin.UNKNOWN)),
    RecordFilter(model_versions=("m2",)),
    RecordFilter(bot_origin=ScoreRange(below=0.3), repetitiveness=ScoreRange(at_least=0.5)),
    RecordFilter(corpus_duplicate=ScoreRange(at_least=0.2, below=0.6)),
    RecordFilter(text_contains="refund"),
    RecordFilter(text_contains="100%"),  # LIKE wildcards are literal characters
    RecordFilter(text_contains="_thing"),
    RecordFilter(decisions=(Decision.ACCEPT, Decision.TAG), sources=("beta",), bot_origin=ScoreRange(below=0.8)),
]


@pytest.mark.parametrize("f", FILTERS, ids=range(len(FILTERS)))
def test_query_returns_exactly_the_matching_records_in_order(store, items, f):
    expected = [i for i in items if matches(f, i)]
    got = store.query(f, limit=1000)
    assert [r.verdict.record_id for r in got] == sorted(
        (record_id_for(*i.transcript.key) for i in expected),
        key=lambda rid: next((i.verdict.decided_at, rid) for i in expected if record_id_for(*i.transcript.key) == rid))
    assert store.count(f)[0].count == len(expected)


def test_every_filter_selects_a_proper_subset(items):
    """Guards the suite itself: a filter matching all or nothing would test nothing."""
    for f in FILTERS[1:]:
        assert 0 < sum(matches(f, i) for i in items) < len(items), f


def test_records_read_back_as_written(store, items):
    item = items[5]
    record = store.get(key=item.transcript.key)
    assert record.transcript == item.transcript
    assert record.received_at == item.received_at
    v = record.verdict
    assert (v.scores, v.decision, v.tags, v.reasons, v.model_version, v.decided_at) == (
        item.verdict.scores, item.verdict.decision, item.verdict.tags, item.verdict.reasons,
        item.verdict.model_version, item.verdict.decided_at)
    assert store.get(record_id=v.record_id) == record
    assert store.get(key=("acme", "no-such-id")) is None


def test_cursor_pages_through_every_record_once(store, items):
    f = RecordFilter(sources=("acme", "beta"))
    seen, after = [], None
    while page := store.query(f, after, limit=4):
        seen += [r.verdict.record_id for r in page]
        after = Cursor.decode(Cursor(page[-1].verdict.decided_at, page[-1].verdict.record_id).encode())
    assert len(seen) == len(set(seen)) == sum(matches(f, i) for i in items)
    assert [r.verdict.record_id for r in store.iter_records(f, page_size=7)] == seen


def test_counts_group_by_decision_source_and_day(store, items):
    groups = store.count(RecordFilter(), (GroupBy.SOURCE, GroupBy.DECISION, GroupBy.DAY))
    got = {(g.source, g.decision, g.day): g.count for g in groups}
    expected = Counter((i.transcript.source, i.verdict.decision, i.verdict.decided_at.strftime("%Y-%m-%d"))
                       for i in items)
    assert got == expected
    by_day = store.count(RecordFilter(decisions=(Decision.BLOCK,)), (GroupBy.DAY,))
    assert [g.day for g in by_day] == sorted(g.day for g in by_day)
    assert sum(g.count for g in by_day) == sum(i.verdict.decision is Decision.BLOCK for i in items)


def test_purge_removes_what_matches_and_says_what(store, items):
    f = RecordFilter(sources=("beta",), until=T0 + timedelta(days=2))
    removed = store.purge(f)
    expected = Counter((i.transcript.source, i.verdict.decision) for i in items if matches(f, i))
    assert {(g.source, g.decision): g.count for g in removed} == expected
    assert store.count(f)[0].count == 0
    assert store.count(RecordFilter())[0].count == len(items) - sum(expected.values())


def test_a_key_is_stored_once_across_groups_and_restarts(store_url, items):
    s = open_store(store_url)
    first = s.put(items[:3] + items[:1]).result()
    assert [v.duplicate for v in first] == [False, False, False, True]
    s.close()
    s = open_store(store_url)  # migrations run again and change nothing
    again = s.put(items[:5]).result()
    assert [v.duplicate for v in again] == [True, True, True, False, False]
    assert again[0].record_id == first[0].record_id and again[0].decided_at == first[0].decided_at
    assert s.count(RecordFilter())[0].count == 5
    s.close()


def test_two_writers_sharing_the_database_store_each_key_once(postgres_url, items):
    """Two stores on one PostgreSQL, as two replicas: overlapping keys, concurrent groups."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    results: dict[str, list] = {"a": [], "b": []}

    def write(name, store, order):
        for start in range(0, len(order), 5):
            results[name] += store.put([items[i] for i in order[start : start + 5]]).result()

    forward, backward = list(range(60)), list(range(59, -1, -1))
    threads = [threading.Thread(target=write, args=("a", a, forward)),
               threading.Thread(target=write, args=("b", b, backward))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    fresh = Counter(v.transcript_id for v in results["a"] + results["b"] if not v.duplicate)
    assert fresh == Counter({f"t{i}": 1 for i in range(60)})
    assert a.count(RecordFilter())[0].count == 60
    a.close()
    b.close()


def test_corpus_counts_round_trip_with_64_bit_keys(store_url):
    s = open_store(store_url)
    big = (1 << 64) - 5
    s.save_corpus({big: 3, 12345: 2}, replace_all=False)
    s.save_corpus({12345: 4}, replace_all=False)
    assert s.load_corpus() == {big: 3, 12345: 4}
    s.save_corpus({7: 2}, replace_all=True)
    assert s.load_corpus() == {7: 2}
    s.close()


def test_migration_keeps_the_rows_of_an_older_embedded_schema(tmp_path, items):
    """A store file written at schema version 2 opens at the latest version with every row intact."""
    import sqlite3

    from echogate.store import sqlite_store

    path = str(tmp_path / "old.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    for version in (1, 2):
        con.executescript(sqlite_store._MIGRATIONS[version])
        con.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    old_columns = COLUMNS[:COLUMNS.index("repetition")]  # the columns of schema version 2
    con.executemany(f"INSERT INTO records ({', '.join(old_columns)}) VALUES ({', '.join('?' * len(old_columns))})",
                    [sqlite_store.row_values(record_id_for(*i.transcript.key), i)[:len(old_columns)]
                     for i in items[:10]])
    con.close()
    s = open_store(path)
    assert s.count(RecordFilter())[0].count == 10
    old = s.get(key=items[3].transcript.key)
    assert old.transcript == items[3].transcript
    assert old.verdict.scores.repetition == RepetitionStats()  # stored before the statistics existed: zeros
    assert len(s.query(RecordFilter(sources=(items[0].transcript.source,)), limit=100)) >= 1
    s.close()
    with sqlite3.connect(path) as con:
        assert [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY 1")] == sorted(
            sqlite_store._MIGRATIONS)
        assert "records_source_decided_at" in {n for (n,) in con.execute("SELECT name FROM sqlite_master")}
