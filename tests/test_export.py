"""Exports read back with pyarrow and DuckDB and compared with the store; purge and export on the
command line."""
from __future__ import annotations

import json
import random
from collections import Counter

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest

from echogate.export import EXPORT_SCHEMA, export_jsonl, export_parquet, record_row
from echogate.query import RecordFilter
from echogate.store import open_store
from echogate.types import Decision
from echogate_client.cli import main
from tests.test_store import make_item


@pytest.fixture
def filled(store_url):
    rng = random.Random(11)
    items = [make_item(i, rng) for i in range(90)]
    store = open_store(store_url)
    store.put(items).result()
    yield store, items
    store.close()


def test_parquet_export_reads_back_identically_in_pyarrow_and_duckdb(filled, tmp_path):
    store, items = filled
    f = RecordFilter(decisions=(Decision.ACCEPT, Decision.TAG, Decision.REVIEW))
    expected = {r.verdict.record_id: r for r in store.iter_records(f)}
    assert 0 < len(expected) < len(items)
    out = tmp_path / "export"
    manifest = export_parquet(store, f, out)

    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(expected) == manifest["rows"]
    assert set(table.schema.names) == set(EXPORT_SCHEMA.names)
    for row in table.to_pylist():
        record = expected[row["record_id"]]
        assert row["decision"] == record.verdict.decision and row["source"] == record.transcript.source
        assert row["decided_at"] == record.verdict.decided_at and row["date"] == f"{record.verdict.decided_at:%Y-%m-%d}"
        assert [t["text"] for t in row["turns"]] == [t.text for t in record.transcript.turns]
        assert [t["seen_before"] for t in row["turns"]] == [t.seen_before for t in record.verdict.scores.turns]
        assert row["bot_origin"] == record.verdict.scores.bot_origin and row["tags"] == list(record.verdict.tags)
        assert dict(row["metadata"]) == record.transcript.metadata

    # Hive partitions: date=YYYY-MM-DD/decision=NAME/, which DuckDB reads as columns
    partitions = {(p["date"], p["decision"]): p["rows"] for p in manifest["partitions"]}
    assert all(name.count("/") == 2 and name.startswith("date=") for name in manifest["files"])
    got = duckdb.sql(f"SELECT date::VARCHAR, decision, count(*) FROM read_parquet('{out}/**/*.parquet', "
                     "hive_partitioning = true) GROUP BY ALL").fetchall()
    assert {(d, dec): n for d, dec, n in got} == partitions
    assert manifest["model_versions"] == dict(Counter(r.verdict.model_version for r in expected.values()))
    assert manifest["filter"] == {"decisions": ["accept", "tag", "review"]}
    assert json.loads((out / "_manifest.json").read_text()) == manifest

    with pytest.raises(FileExistsError):
        export_parquet(store, f, out)


def test_jsonl_export_matches_the_store_and_an_empty_export_still_has_a_manifest(filled, tmp_path):
    store, items = filled
    out = tmp_path / "all.jsonl"
    manifest = export_jsonl(store, RecordFilter(), out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == manifest["rows"] == len(items)
    by_id = {line["transcript_id"]: line for line in lines}
    for record in store.iter_records(RecordFilter()):  # the export's fast path says what record_row says
        encoded = orjson.dumps(record_row(record), option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
        assert by_id[record.transcript.id] == json.loads(encoded)
    for item in items:
        line = by_id[item.transcript.id]
        assert [t["role"] for t in line["turns"]] == [str(t.role) for t in item.transcript.turns]
        assert line["corpus_duplicate"] == item.verdict.scores.corpus_duplicate
    empty = export_parquet(store, RecordFilter(sources=("nobody",)), tmp_path / "none")
    assert empty["rows"] == 0 and (tmp_path / "none" / "_manifest.json").is_file()


def test_cli_export_and_purge(filled, store_url, tmp_path, capsys):
    store, items = filled
    beta = sum(i.transcript.source == "beta" for i in items)
    assert main(["export", "--store", store_url, "--where", "source=beta", "--format", "jsonl",
                 str(tmp_path / "beta.jsonl")]) == 0
    assert len((tmp_path / "beta.jsonl").read_text().splitlines()) == beta
    assert main(["purge", "--store", store_url]) == 2  # no condition: refuses
    assert main(["purge", "--store", store_url, "--where", "source=beta", "--dry-run"]) == 0
    assert store.count(RecordFilter())[0].count == len(items)
    assert main(["purge", "--store", store_url, "--where", "source=beta"]) == 0
    assert f"deleted {beta} records" in capsys.readouterr().out
    assert store.count(RecordFilter())[0].count == len(items) - beta
    assert main(["purge", "--store", store_url, "--older-than", "1"]) == 0  # every test record is older
    assert store.count(RecordFilter())[0].count == 0
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--store", store_url, "--where", "decision=maybe", str(tmp_path / "x")])
    assert exit_.value.code == 2
