"""Training-set exports: stored records as Parquet (Hive-partitioned) or JSONL, with a manifest.

The columns are stable (EXPORT_SCHEMA): a pipeline reading last quarter's export reads this
quarter's the same way. Parquet is partitioned `date=YYYY-MM-DD/decision=NAME/` (UTC date
of the decision), which DuckDB (`hive_partitioning`), Spark and pyarrow.dataset read as
columns. The manifest (`_manifest.json` in the Parquet directory, `OUT.manifest.json` beside
a JSONL file; readers skip `_`-prefixed files) records the filter, the row counts per
partition and the model and policy versions that decided the rows, so a training run can
say exactly what it was trained on.

Records stream from the store page by page, so memory stays flat whatever the export size.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from echogate import __version__
from echogate.query import RecordFilter
from echogate.store.sql import SQLStore
from echogate.types import Record, RepetitionStats

_TURN = pa.struct([("role", pa.string()), ("text", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                   ("declared_author", pa.string()), ("bot_origin", pa.float64()),
                   ("repetitiveness", pa.float64()), ("seen_before", pa.int64())])
EXPORT_SCHEMA = pa.schema([
    ("record_id", pa.string()), ("source", pa.string()), ("transcript_id", pa.string()),
    ("content_sha256", pa.string()), ("declared_origin", pa.string()), ("language", pa.string()),
    ("metadata", pa.map_(pa.string(), pa.string())), ("turns", pa.list_(_TURN)),
    ("bot_origin", pa.float64()), ("repetitiveness", pa.float64()), ("corpus_duplicate", pa.float64()),
    ("repetition", pa.struct([(name, pa.float64()) for name in RepetitionStats._fields])),
    ("decision", pa.string()), ("tags", pa.list_(pa.string())), ("reasons", pa.list_(pa.string())),
    ("model_version", pa.string()), ("policy_version", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")), ("decided_at", pa.timestamp("us", tz="UTC")),
    ("date", pa.string()),
])
PARTITIONING = ("date", "decision")
_ROWS_PER_BATCH = 5000
_ROWS_PER_GROUP = 20_000


def record_row(r: Record) -> dict:
    """One record as a flat row of EXPORT_SCHEMA's columns (Python values): what `echogate query`
    prints, and what an export writes (the export reads the same values straight from the store's
    rows, `SQLStore.iter_rows`, without building Records)."""
    t, v = r.transcript, r.verdict
    return {
        "record_id": v.record_id, "source": t.source, "transcript_id": t.id, "content_sha256": v.content_sha256,
        "declared_origin": str(t.declared_origin), "language": t.language, "metadata": t.metadata,
        "turns": [{"role": str(turn.role), "text": turn.text, "ts": turn.timestamp,
                   "declared_author": str(turn.declared_author), "bot_origin": s.bot_origin,
                   "repetitiveness": s.repetitiveness, "seen_before": s.seen_before}
                  for turn, s in zip(t.turns, v.scores.turns)],
        "bot_origin": v.scores.bot_origin, "repetitiveness": v.scores.repetitiveness,
        "corpus_duplicate": v.scores.corpus_duplicate, "repetition": v.scores.repetition._asdict(),
        "decision": str(v.decision), "tags": list(v.tags),
        "reasons": list(v.reasons), "model_version": v.model_version, "policy_version": v.policy_version,
        "received_at": r.received_at, "decided_at": v.decided_at,
        "date": v.decided_at.astimezone(timezone.utc).strftime("%Y-%m-%d"),
    }


class _Tally:
    """Counts what passes through an export, for the manifest."""

    def __init__(self):
        self.partitions: Counter[tuple[str, str]] = Counter()
        self.models: Counter[str] = Counter()
        self.policies: Counter[str] = Counter()

    def rows(self, rows: Iterable[dict]) -> Iterator[dict]:
        for row in rows:
            row["date"] = row["decided_at"].astimezone(timezone.utc).strftime("%Y-%m-%d")
            self.partitions[(row["date"], row["decision"])] += 1
            self.models[row["model_version"]] += 1
            self.policies[row["policy_version"]] += 1
            yield row

    def manifest(self, fmt: str, f: RecordFilter, files: list[str]) -> dict:
        return {
            "format": fmt, "created_at": datetime.now(timezone.utc).isoformat(), "echogate_version": __version__,
            "filter": _filter_dict(f), "rows": sum(self.partitions.values()),
            "partitions": [{"date": d, "decision": dec, "rows": n} for (d, dec), n in sorted(self.partitions.items())],
            "model_versions": dict(self.models), "policy_versions": dict(self.policies),
            "columns": [{"name": fld.name, "type": str(fld.type)} for fld in EXPORT_SCHEMA], "files": files,
        }


def export_parquet(store: SQLStore, f: RecordFilter, out_dir: Path) -> dict:
    """Write the matching records under `out_dir` (which must not exist yet); returns the manifest."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; exports never overwrite")
    tally = _Tally()
    rows = tally.rows(store.iter_rows(f))

    def batches() -> Iterator[pa.RecordBatch]:
        while chunk := list(islice(rows, _ROWS_PER_BATCH)):
            yield pa.RecordBatch.from_pylist(chunk, schema=EXPORT_SCHEMA)

    files: list[str] = []
    ds.write_dataset(batches(), out_dir, schema=EXPORT_SCHEMA, format="parquet",
                     partitioning=list(PARTITIONING), partitioning_flavor="hive",
                     existing_data_behavior="error", basename_template="part-{i}.parquet",
                     # records arrive in decision-time order, so only a day's few partitions are open
                     # at once: buffering them gives readers row groups of useful size
                     min_rows_per_group=_ROWS_PER_GROUP, max_rows_per_group=4 * _ROWS_PER_GROUP,
                     file_visitor=lambda written: files.append(str(Path(written.path).relative_to(out_dir))))
    out_dir.mkdir(parents=True, exist_ok=True)  # an export of nothing is still a directory with a manifest
    manifest = tally.manifest("parquet", f, sorted(files))
    (out_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_jsonl(store: SQLStore, f: RecordFilter, out_file: Path) -> dict:
    """One JSON object per line (EXPORT_SCHEMA's columns; times as ISO 8601); returns the manifest.
    Each line is also a valid `echogate score` input record (it has `turns` with role and text)."""
    out_file = Path(out_file)
    if out_file.exists():
        raise FileExistsError(f"{out_file} exists; exports never overwrite")
    tally = _Tally()
    with out_file.open("wb") as fh:
        for row in tally.rows(store.iter_rows(f)):
            fh.write(orjson.dumps(row, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC) + b"\n")
    manifest = tally.manifest("jsonl", f, [out_file.name])
    Path(f"{out_file}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _filter_dict(f: RecordFilter) -> dict:
    """The non-empty filter fields, JSON-ready (the manifest says what was selected)."""
    out = {}
    for name, value in dataclasses.asdict(f).items():
        if isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                out[name] = value
        elif value:
            out[name] = [str(x) for x in value] if isinstance(value, tuple) else value
    return out


def export_reviews(store: SQLStore, out_file: Path, since: datetime | None = None) -> dict:
    """Reviewers' labels as training data in the schema of ../shared/datasets (id, dataset, label,
    generator, domain, lang, turns, text), so `echogate train` can learn from what people
    decided. Provenance (record, reviewer, note, model score) rides along in extra fields."""
    out_file = Path(out_file)
    if out_file.exists():
        raise FileExistsError(f"{out_file} exists; exports never overwrite")
    labels: Counter[str] = Counter()
    with out_file.open("wb") as fh:
        for record, review in store.iter_reviewed(since):
            t, v = record.transcript, record.verdict
            turns = [{"role": str(turn.role), "text": turn.text} for turn in t.turns]
            labels[review["label"]] += 1
            fh.write(orjson.dumps({
                "id": f"{t.source}/{t.id}", "dataset": "echogate_reviews", "label": review["label"],
                "generator": None, "domain": t.source, "lang": t.language or "en", "turns": turns,
                "text": "\n".join(f"{x['role']}: {x['text']}" for x in turns),
                "record_id": v.record_id, "reviewer": review["reviewer"], "note": review["note"],
                "final_decision": review["final_decision"], "reviewed_at": review["reviewed_at"],
                "model_version": v.model_version, "model_bot_origin": v.scores.bot_origin,
            }, option=orjson.OPT_UTC_Z) + b"\n")
    manifest = {"format": "jsonl-reviews", "created_at": datetime.now(timezone.utc).isoformat(),
                "echogate_version": __version__, "rows": sum(labels.values()), "labels": dict(labels),
                "since": since.isoformat() if since else None, "files": [out_file.name]}
    Path(f"{out_file}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
