"""The `echogate` command line.

  echogate serve [--port P] [--metrics-port P] [--store PATH] [--config FILE]
  echogate gate FILE.jsonl --target HOST:PORT       gate a JSONL file through a server
  echogate get --target HOST:PORT (--record-id ID | --source S --id ID)
  echogate info --target HOST:PORT
  echogate query --target HOST:PORT [--where COND]... [--count-by FIELDS] [--format table|jsonl]
  echogate export --store URL [--where COND]... --format parquet|jsonl OUT
  echogate purge --store URL [--where COND]... [--older-than DAYS] [--dry-run]
  echogate review --target HOST:PORT --reviewer NAME   walk the human review queue
  echogate export --store URL --reviews OUT.jsonl      reviewers' labels as training data
  echogate score INPUT.jsonl > OUTPUT.jsonl         offline scoring, the server's code path
  echogate eval INPUT.jsonl [--json] [--config F]   accuracy and policy thresholds on a labelled file
  echogate train --data DIR --out DIR               train the bot-origin model
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

from echogate_client.records import RecordError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echogate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--store", help="store: a file path (embedded SQLite) or postgresql://user@host:port/db")
    p.add_argument("--model", help="ONNX model file (default: the shipped model)")
    p.add_argument("--config", help="YAML settings file")

    p = sub.add_parser("gate", help="gate a JSONL file through a running server")
    p.add_argument("file", type=_input_file, help="JSONL file, or - for standard input")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--source", default="", help="source for records that name none")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--out", type=Path, help="write one verdict per line here")

    p = sub.add_parser("get", help="read a stored record back")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--record-id", default="")
    p.add_argument("--source", default="")
    p.add_argument("--id", default="")

    p = sub.add_parser("info", help="server versions and limits")
    p.add_argument("--target", default="127.0.0.1:50051")

    where_help = "a condition such as source=acme, decision=accept,tag, tag=X, text~refund, bot_origin<0.3, " \
                 "decided_at>=2026-07-01 (repeatable; all must hold)"
    p = sub.add_parser("query", help="list or count stored records through a running server")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--where", action="append", default=[], metavar="COND", help=where_help)
    p.add_argument("--limit", type=int, default=0, help="at most this many records (0: all)")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--count-by", metavar="FIELDS", help="count instead of listing: comma-separated "
                   "decision, source, day ('' for one total)")

    p = sub.add_parser("export", help="write stored records as a training set (reads the store directly)")
    p.add_argument("out", type=Path, help="a new directory (parquet) or file (jsonl)")
    p.add_argument("--store", help="store URL or file (default: the server's, from settings)")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--where", action="append", default=[], metavar="COND", help=where_help)
    p.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    p.add_argument("--reviews", action="store_true", help="export reviewers' labels (JSONL in the shared "
                   "datasets schema) instead of records")

    p = sub.add_parser("review", help="walk the human review queue: label each transcript human or machine")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--reviewer", required=True)
    p.add_argument("--source", action="append", default=[], help="only items from this source (repeatable)")
    p.add_argument("--lease", type=int, default=600, help="seconds an item stays yours")

    p = sub.add_parser("purge", help="delete stored records by source, age or any condition")
    p.add_argument("--store", help="store URL or file (default: the server's, from settings)")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--where", action="append", default=[], metavar="COND", help=where_help)
    p.add_argument("--older-than", type=float, metavar="DAYS", help="decided more than DAYS days ago")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")

    p = sub.add_parser("token", help="make an API token: prints the secret once and the settings entry")
    p.add_argument("--name", required=True, help="who holds it (shown in the audit log)")
    p.add_argument("--scopes", required=True, help="comma-separated: ingest, read, review, admin")
    p.add_argument("--sources", default="", help="comma-separated sources it may use (default: all)")

    p = sub.add_parser("score", help="score a JSONL file offline (no server, nothing stored)",
                       description="Writes each record of FILE to stdout, unchanged but for an added `echogate` "
                                   "object, in file order. Records are read and scored a batch at a time: a "
                                   "record that cannot be scored stops the run (exit status 2, its line named) "
                                   "after the batches before it were written, unless --keep-going.")
    p.add_argument("file", type=_input_file, help="JSONL file, or - for standard input")
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--keep-going", action="store_true",
                   help="write a record that cannot be scored back with `\"echogate\": {\"error\": ...}` and go on; "
                        "the exit status is still 2 when there was one")

    p = sub.add_parser("eval", help="AUROC, TPR at 1%% FPR and calibration on a labelled JSONL file",
                       description="Grades each record's score by its `label` (human or machine) and each turn's by "
                                   "its own `origin` where it has one (groups named `turns`), overall, per `dataset` "
                                   "and `generator`, and texts under 20 words apart (groups ending `<20w`). For "
                                   "labelled records it also gives the bot-origin thresholds that flag at most "
                                   "0.1%, 1%, 5% and 10% of their humans, and the decisions the policy gave each "
                                   "label.")
    p.add_argument("file", type=_input_file,
                   help="JSONL file with `label` (human or machine) on records or `origin` on turns, or - for "
                        "standard input")
    p.add_argument("--model")
    p.add_argument("--config", help="settings file whose policy decides (as for score); the default policy without")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep-going", action="store_true",
                   help="leave out records that cannot be scored, each named on stderr, and count them (`unreadable`); "
                        "the exit status is still 2 when there was one")

    p = sub.add_parser("train", help="train the bot-origin model on the shared datasets")
    p.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="JSON file overriding TrainConfig fields")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except RecordError as exc:  # a file's record the schema cannot read: say which line, exit as a usage error
        print(f"echogate {args.command}: {_shown(args.file)}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`echogate score f | head`): stop without a traceback,
        # and point stdout at /dev/null so that flushing it at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def _input_file(name: str) -> Path | IO[str]:
    """A file argument: - for standard input, otherwise a file that must exist (argparse says so)."""
    if name == "-":
        return sys.stdin
    if not Path(name).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {name}")
    return Path(name)


def _shown(file: Path | IO[str]) -> str:
    return "<stdin>" if file is sys.stdin else str(file)


def _serve(args) -> int:
    from echogate.grpc_api.server import serve
    from echogate.settings import Settings

    overrides = {"host": args.host, "port": args.port, "metrics_port": args.metrics_port, "model_path": args.model}
    settings = Settings.load(args.config, **overrides)
    if args.store:
        settings.store.url = args.store
    asyncio.run(serve(settings))
    return 0


def _gate(args) -> int:
    import grpc

    from echogate_client.client import connect, field_violations
    from echogate_client.records import DECISION_NAMES, count_lines, read_jsonl, transcript_from_record, verdict_to_dict

    decisions: Counter[str] = Counter()
    duplicates = 0
    out = args.out.open("w") if args.out else None
    lines = count_lines(args.file)
    # (record index, line) of the last batch_size records read: a batch the server rejects is the last
    # one read, and its violations name records by their place in it, shown by line instead
    recent: deque[tuple[int, int]] = deque(maxlen=args.batch_size)

    def transcripts() -> Iterator:
        for i, (n, rec) in enumerate(read_jsonl(args.file)):
            recent.append((i, n))
            yield transcript_from_record(rec, n, args.source)

    gated = 0
    try:
        with connect(args.target) as client, tqdm(total=lines, unit="transcript", file=sys.stderr) as bar:
            for verdict in client.gate_all(transcripts(), args.batch_size):
                gated += 1
                decisions[DECISION_NAMES[verdict.decision]] += 1
                duplicates += verdict.duplicate
                if out:
                    out.write(json.dumps({"id": verdict.transcript_id, "source": verdict.source,
                                          **verdict_to_dict(verdict)}) + "\n")
                bar.update()
            bar.total = bar.n  # the count held blank lines too
    except grpc.RpcError as err:
        violations = field_violations(err)
        line_of = dict(recent)
        rejected = [line for i, line in line_of.items() if i >= gated]  # the batch in flight: the last one read
        if violations and rejected:
            # the server's own message names records by their place in the batch; the lines say it once
            print(f"echogate gate: {err.code().name}: the server refused the batch of lines {rejected[0]}-"
                  f"{rejected[-1]}, {gated} transcript(s) before it were gated:", file=sys.stderr)
        else:
            print(f"echogate gate: {err.code().name}: {err.details()}", file=sys.stderr)
        for field, why in violations:
            print(f"  {_field_on_line(field, line_of, gated)}: {why}", file=sys.stderr)
        return 1
    finally:
        if out:
            out.close()
    total = sum(decisions.values())
    print(f"gated {total} transcripts ({duplicates} already recorded)")
    for name in ("accept", "tag", "review", "block"):
        print(f"  {name:7s} {decisions[name]:8d}  {100 * decisions[name] / max(total, 1):5.1f}%")
    return 0


def _field_on_line(field: str, line_of: dict[int, int], first: int) -> str:
    """A violation's field in a batch that starts at record `first` of the file ("transcripts[3].id"),
    named by the record's line ("line 12: id") where it is known."""
    match = re.match(r"transcripts\[(\d+)\]\.?", field)
    line = line_of.get(first + int(match[1])) if match else None
    return f"line {line}: {field[match.end():]}" if line is not None else field


def _get(args) -> int:
    from google.protobuf.json_format import MessageToDict

    from echogate_client.client import connect

    with connect(args.target) as client:
        record = client.get_record(args.record_id, args.source, args.id)
    print(json.dumps(MessageToDict(record), indent=2))
    return 0


def _info(args) -> int:
    from google.protobuf.json_format import MessageToDict

    from echogate_client.client import connect

    with connect(args.target) as client:
        print(json.dumps(MessageToDict(client.server_info()), indent=2))
    return 0


def _filter(args):
    """The --where conditions (and --older-than) as a RecordFilter; exits 2 with the reason if bad."""
    from dataclasses import replace
    from datetime import datetime, timedelta, timezone

    from echogate.errors import InvalidArgument
    from echogate_client.where import WhereError, parse_where

    try:
        f = parse_where(args.where)
        if getattr(args, "older_than", None) is not None:
            cutoff = datetime.now(timezone.utc) - timedelta(days=args.older_than)
            f = replace(f, until=min(f.until, cutoff) if f.until else cutoff)
        return f
    except (WhereError, InvalidArgument) as exc:
        print(f"echogate {args.command}: --where {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _open_store(args):
    from echogate.settings import Settings
    from echogate.store import open_store

    return open_store(args.store or Settings.load(args.config).store.url)


def _audit(args, action: str, **details) -> None:
    """Exports and purges go to the audit log named in the settings, as the local user."""
    from echogate.security import AuditLog, local_user
    from echogate.settings import Settings

    AuditLog(Settings.load(args.config).security.audit_log).record(local_user(), action, **details)


def _query(args) -> int:
    import grpc

    from echogate.export import record_row
    from echogate.grpc_api.convert import filter_to_pb, record_from_pb
    from echogate.v1 import gate_pb2 as pb
    from echogate_client.client import connect
    from echogate_client.records import DECISION_NAMES

    f = filter_to_pb(_filter(args))
    try:
        with connect(args.target) as client:
            if args.count_by is not None:
                names = [x.strip() for x in args.count_by.split(",") if x.strip()]
                groups = [getattr(pb, f"GROUP_BY_{n.upper()}", None) for n in names]
                if None in groups:
                    print("echogate query: --count-by takes decision, source, day", file=sys.stderr)
                    return 2
                reply = client.count_records(f, groups)
                for g in reply.groups if names else ():
                    cells = {"decision": DECISION_NAMES[g.decision], "source": g.source, "day": g.day}
                    print("  ".join(f"{cells[n]:12s}" for n in names) + f"  {g.count:10d}")
                print(f"total {reply.total}")
                return 0
            if args.format == "table":
                print(f"{'decided_at':20s} {'source':14s} {'transcript_id':24s} {'decision':8s} {'bot':>5s} "
                      f"{'rep':>5s} {'dup':>5s}  tags")
            for record in client.query_records(f, limit=args.limit):
                row = record_row(record_from_pb(record))
                if args.format == "jsonl":
                    sys.stdout.write(_jsonl_line(row))
                else:
                    print(f"{row['decided_at']:%Y-%m-%d %H:%M:%S}  {row['source'][:14]:14s} "
                          f"{row['transcript_id'][:24]:24s} {row['decision']:8s} {row['bot_origin']:5.2f} "
                          f"{row['repetitiveness']:5.2f} {row['corpus_duplicate']:5.2f}  {','.join(row['tags'])}")
    except grpc.RpcError as err:
        from echogate_client.client import field_violations

        print(f"echogate query: {err.code().name}: {err.details()}", file=sys.stderr)
        for field, why in field_violations(err):
            print(f"  {field}: {why}", file=sys.stderr)
        return 1
    return 0


def _jsonl_line(row: dict) -> str:
    import orjson

    return orjson.dumps(row, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode() + "\n"


def _export(args) -> int:
    from echogate.export import export_jsonl, export_parquet, export_reviews

    f = _filter(args)
    store = _open_store(args)
    try:
        if args.reviews:
            manifest = export_reviews(store, args.out, f.since)
            _audit(args, "export_reviews", out=str(args.out), rows=manifest["rows"])
            print(f"exported {manifest['rows']} reviewed transcripts to {args.out} ({manifest['labels']})")
            return 0
        write = export_parquet if args.format == "parquet" else export_jsonl
        manifest = write(store, f, args.out)
        _audit(args, "export", out=str(args.out), format=args.format, filter=manifest["filter"], rows=manifest["rows"])
    except FileExistsError as exc:
        print(f"echogate export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"exported {manifest['rows']} records to {args.out} ({len(manifest['partitions'])} date/decision "
          f"partitions; models {sorted(manifest['model_versions'])})")
    return 0


def _review(args) -> int:
    from echogate_client.review import review_loop

    return review_loop(args.target, args.reviewer, tuple(args.source), args.lease)


def _purge(args) -> int:
    from echogate.query import GroupBy

    f = _filter(args)
    if f.is_empty():
        print("echogate purge: give at least one --where or --older-than (refusing to delete everything)",
              file=sys.stderr)
        return 2
    store = _open_store(args)
    try:
        groups = (store.count(f, (GroupBy.SOURCE, GroupBy.DECISION)) if args.dry_run else store.purge(f))
    finally:
        store.close()
    if not args.dry_run:
        _audit(args, "purge", filter=f, deleted=sum(g.count for g in groups))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {sum(g.count for g in groups)} records")
    for g in groups:
        print(f"  {g.source:24s} {g.decision:8s} {g.count:10d}")
    return 0


def _token(args) -> int:
    import yaml

    from echogate.security import new_token
    from echogate.settings import TokenSettings

    secret, digest = new_token()
    entry = TokenSettings(name=args.name, sha256=digest, scopes=[x.strip() for x in args.scopes.split(",") if x.strip()],
                          sources=[x.strip() for x in args.sources.split(",") if x.strip()])
    print(f"token (give it to {args.name}; it is not stored anywhere): {secret}", file=sys.stderr)
    print(yaml.safe_dump({"security": {"tokens": [entry.model_dump()]}}, sort_keys=False), end="")
    return 0


def _score(args) -> int:
    from echogate.offline import score_file

    unreadable = score_file(args.file, sys.stdout, model_path=args.model, config=args.config,
                            batch_size=args.batch_size, keep_going=args.keep_going)
    if unreadable:
        print(f"echogate score: {_shown(args.file)}: {unreadable} record(s) could not be scored; each was written "
              "with `echogate.error` saying why", file=sys.stderr)
        return 2
    return 0


def _metric(x: float | None, width: int = 6) -> str:
    """A metric to three places, right-aligned in `width`, or "n/a" where one label leaves it
    undefined (None: evaluation.without_nan)."""
    return f"{x:{width}.3f}" if x is not None else f"{'n/a':>{width}s}"


def _eval(args) -> int:
    from echogate.evaluation import without_nan
    from echogate.offline import evaluate_file
    from echogate.types import Decision

    # None where one label leaves a metric undefined
    report = without_nan(evaluate_file(args.file, model_path=args.model, keep_going=args.keep_going,
                                       config=args.config))
    status = 2 if report["unreadable"] else 0
    if report["unreadable"]:
        print(f"echogate eval: {_shown(args.file)}: {report['unreadable']} record(s) could not be scored and are left "
              "out of every group", file=sys.stderr)
    if report["unlabelled"]:
        seen = ", ".join(f"{label} {count}" for label, count in report["unlabelled"].items())
        print(f"echogate eval: {_shown(args.file)}: {sum(report['unlabelled'].values())} record(s) have no `label` of "
              f"human or machine (label, records: {seen}): scored, in no group", file=sys.stderr)
    if not report["groups"]:
        print(f"echogate eval: {_shown(args.file)}: no record has a `label` of human or machine, nor any turn "
              "an `origin`, so there is nothing to measure", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
        return status

    width = max([40, *map(len, report["groups"])])  # the columns line up past a long generator name
    print(f"{'group':{width}s} {'n':>7s} {'machine':>7s} {'AUROC':>6s} {'TPR@1%':>6s} {'ECE':>6s}")
    for name, row in report["groups"].items():
        print(f"{name:{width}s} {row['n']:7d} {row['machine']:7d} {_metric(row['auroc'])} "
              f"{_metric(row['tpr_at_1pct_fpr'])} {_metric(row['ece'])}")
    for key, what in (("reliability", "records"), ("turn_reliability", "turns with an origin")):
        if key in report:
            print(f"\nreliability ({what}): bin, count, mean predicted, observed machine share")
            for row in report[key]:
                print(f"  {row['bin_low']:.1f}-{row['bin_high']:.1f} {row['count']:7d} {row['mean_prob']:.3f} "
                      f"{row['machine_share']:.3f}")
    if "thresholds" in report:
        print("\nbot-origin thresholds (records): the lowest that flags at most this share of the human records,\n"
              "for a policy's tag_bot_origin, review_bot_origin or block_bot_origin")
        print(f"  {'at most':>7s} {'threshold':>9s} {'humans flagged':>14s} {'machine caught':>14s}")
        for row in report["thresholds"]:
            threshold = f"{row['threshold']:9.4f}" if row["threshold"] is not None else f"{'none <= 1':>9s}"
            print(f"  {row['max_human_share'] * 100:6g}% {threshold} {_metric(row['human_flagged']):>14s} "
                  f"{_metric(row['machine_caught']):>14s}")
    if "decisions" in report:
        decisions = report["decisions"]
        print(f"\ndecisions under policy {decisions['policy_version']} (records)")
        print(f"  {'label':8s} {'n':>7s}" + "".join(f" {d:>7s}" for d in Decision))
        for label in ("human", "machine"):
            if label in decisions:
                counts = decisions[label]
                print(f"  {label:8s} {sum(counts.values()):7d}" + "".join(f" {counts[d]:7d}" for d in Decision))
    return status


def _train(args) -> int:
    from echogate.evaluation import without_nan
    from echogate.training.config import ConfigError, TrainConfig
    from echogate.training.data import TrainingDataError
    from echogate.training.train import train

    try:
        cfg = TrainConfig.from_json(args.config.read_bytes()) if args.config else TrainConfig()
    except (OSError, ConfigError) as exc:
        print(f"echogate train: --config {args.config}: {exc}", file=sys.stderr)
        return 2
    try:
        report = train(args.data, args.out, cfg)
    except TrainingDataError as exc:
        print(f"echogate train: --data: {exc}", file=sys.stderr)
        return 2
    rows = without_nan(report["validation"])
    width = max([22, *(len(row["fold"]) for row in rows)])  # a customer's file's fold name
    for row in rows:
        print(f"{row['fold']:{width}s} {row['slice']:30s} n={row['n']:6d} AUROC={_metric(row['auroc'], 1)} "
              f"TPR@1%FPR={_metric(row['tpr_at_1pct_fpr'], 1)} ECE={_metric(row['ece'], 1)}")
    return 0


COMMANDS = {"serve": _serve, "gate": _gate, "get": _get, "info": _info, "query": _query, "export": _export,
            "purge": _purge, "review": _review, "token": _token, "score": _score, "eval": _eval, "train": _train}

if __name__ == "__main__":
    sys.exit(main())
