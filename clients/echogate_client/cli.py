"""The `echogate` command line.

  echogate serve [--port P] [--metrics-port P] [--store PATH] [--config FILE]
  echogate gate FILE.jsonl --target HOST:PORT       gate a JSONL file through a server
  echogate get --target HOST:PORT (--record-id ID | --source S --id ID)
  echogate info --target HOST:PORT
  echogate score INPUT.jsonl > OUTPUT.jsonl         offline scoring, the server's code path
  echogate eval INPUT.jsonl [--json]                accuracy on a labelled file
  echogate train --data DIR --out DIR               train the bot-origin model
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echogate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--store", help="embedded store file (SQLite)")
    p.add_argument("--model", help="ONNX model file (default: the shipped model)")
    p.add_argument("--config", help="YAML settings file")

    p = sub.add_parser("gate", help="gate a JSONL file through a running server")
    p.add_argument("file", type=Path)
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--source", default="", help="source for records that name none")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="write one verdict per line here")

    p = sub.add_parser("get", help="read a stored record back")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--record-id", default="")
    p.add_argument("--source", default="")
    p.add_argument("--id", default="")

    p = sub.add_parser("info", help="server versions and limits")
    p.add_argument("--target", default="127.0.0.1:50051")

    p = sub.add_parser("score", help="score a JSONL file offline (no server, nothing stored)")
    p.add_argument("file", type=Path)
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--batch-size", type=int, default=256)

    p = sub.add_parser("eval", help="AUROC, TPR at 1%% FPR and calibration on a labelled JSONL file")
    p.add_argument("file", type=Path)
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train the bot-origin model on the shared datasets")
    p.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="JSON file overriding TrainConfig fields")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130


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

    from echogate_client.client import Client, field_violations
    from echogate_client.records import read_jsonl, transcript_from_record, verdict_to_dict

    decisions: Counter[str] = Counter()
    duplicates = 0
    out = args.out.open("w") if args.out else None
    lines = sum(1 for line in args.file.open(encoding="utf-8") if line.strip())
    transcripts = (transcript_from_record(rec, n, args.source) for n, rec in read_jsonl(args.file))
    try:
        with Client(args.target) as client, tqdm(total=lines, unit="transcript", file=sys.stderr) as bar:
            for verdict in client.gate_all(transcripts, args.batch_size):
                decisions[verdict_to_dict(verdict)["decision"]] += 1
                duplicates += verdict.duplicate
                if out:
                    out.write(json.dumps({"id": verdict.transcript_id, "source": verdict.source,
                                          **verdict_to_dict(verdict)}) + "\n")
                bar.update()
    except grpc.RpcError as err:
        print(f"echogate gate: {err.code().name}: {err.details()}", file=sys.stderr)
        for field, why in field_violations(err):
            print(f"  {field}: {why}", file=sys.stderr)
        return 1
    finally:
        if out:
            out.close()
    total = sum(decisions.values())
    print(f"gated {total} transcripts ({duplicates} already recorded)")
    for name in ("accept", "tag", "review", "block"):
        print(f"  {name:7s} {decisions[name]:8d}  {100 * decisions[name] / max(total, 1):5.1f}%")
    return 0


def _get(args) -> int:
    from google.protobuf.json_format import MessageToDict

    from echogate_client.client import Client

    with Client(args.target) as client:
        record = client.get_record(args.record_id, args.source, args.id)
    print(json.dumps(MessageToDict(record), indent=2))
    return 0


def _info(args) -> int:
    from google.protobuf.json_format import MessageToDict

    from echogate_client.client import Client

    with Client(args.target) as client:
        print(json.dumps(MessageToDict(client.server_info()), indent=2))
    return 0


def _score(args) -> int:
    from echogate.offline import score_file

    score_file(args.file, sys.stdout, model_path=args.model, config=args.config, batch_size=args.batch_size)
    return 0


def _eval(args) -> int:
    from echogate.offline import evaluate_file

    report = evaluate_file(args.file, model_path=args.model)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'group':40s} {'n':>7s} {'machine':>7s} {'AUROC':>6s} {'TPR@1%':>6s} {'ECE':>6s}")
    for name, row in report["groups"].items():
        print(f"{name:40s} {row['n']:7d} {row['machine']:7d} {row['auroc']:6.3f} {row['tpr_at_1pct_fpr']:6.3f} "
              f"{row['ece']:6.3f}")
    print("\nreliability (all records): bin, count, mean predicted, observed machine share")
    for row in report["reliability"]:
        print(f"  {row['bin_low']:.1f}-{row['bin_high']:.1f} {row['count']:7d} {row['mean_prob']:.3f} "
              f"{row['machine_share']:.3f}")
    return 0


def _train(args) -> int:
    from echogate.training.train import TrainConfig, train

    overrides = json.loads(args.config.read_text()) if args.config else {}
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    report = train(args.data, args.out, cfg)
    for row in report["validation"]:
        print(f"{row['fold']:22s} {row['slice']:30s} n={row['n']:6d} AUROC={row['auroc']:.3f} "
              f"TPR@1%FPR={row['tpr_at_1pct_fpr']:.3f} ECE={row['ece']:.3f}")
    return 0


COMMANDS = {"serve": _serve, "gate": _gate, "get": _get, "info": _info, "score": _score, "eval": _eval,
            "train": _train}

if __name__ == "__main__":
    sys.exit(main())
