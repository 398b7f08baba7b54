"""Offline scoring and evaluation: the server's code path without the network or a store.

`echogate score` reads JSONL records, converts them exactly as the client would, sends
them through the same validation, batcher, model and policy as a Score call, and writes
each record back unchanged with an `echogate` object added. Records are scored in file
order, batch by batch, as a stream through the service would be.
"""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from echogate import evaluation
from echogate.gate import GateCore
from echogate.grpc_api import convert
from echogate.metrics import Metrics
from echogate.settings import Limits, Settings
from echogate_client.records import read_jsonl, transcript_from_record, verdict_to_dict

# Offline files are the user's own: accept what the model can read (it cuts turns itself).
OFFLINE_LIMITS = Limits(max_batch=100_000, max_turns=100_000, max_turn_bytes=10_000_000, max_id_bytes=100_000,
                        max_metadata_entries=100_000, max_metadata_bytes=100_000_000, max_message_bytes=2**31 - 1)


def _core(model_path: str | None, config: str | None) -> GateCore:
    settings = Settings.load(config, model_path=model_path, metrics_port=None)
    settings.limits = OFFLINE_LIMITS
    return GateCore(settings, Metrics(), store=None)


def _scored(path: Path, core: GateCore, batch_size: int) -> Iterator[tuple[dict, dict]]:
    """(record, echogate object) pairs in file order."""
    records = list(read_jsonl(path))
    bar = tqdm(total=len(records), unit="record", file=sys.stderr)
    loop = asyncio.new_event_loop()
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            messages = [transcript_from_record(rec, n) for n, rec in chunk]
            transcripts = convert.transcripts_from_pb(messages, 0, OFFLINE_LIMITS)
            verdicts = loop.run_until_complete(core.score(transcripts))
            for (_, rec), v in zip(chunk, verdicts):
                yield rec, verdict_to_dict(convert.verdict_to_pb(v), with_turns=bool(rec.get("turns")))
            bar.update(len(chunk))
    finally:
        bar.close()
        loop.close()


def score_file(path: Path, out: IO[str], model_path: str | None = None, config: str | None = None,
               batch_size: int = 256) -> None:
    core = _core(model_path, config)
    try:
        for rec, result in _scored(path, core, batch_size):
            out.write(json.dumps({**rec, "echogate": result}, ensure_ascii=False) + "\n")
    finally:
        core.close()


def evaluate_file(path: Path, model_path: str | None = None) -> dict:
    """Metrics on a labelled file (`label`: human or machine), overall and per dataset/generator."""
    core = _core(model_path, None)
    labels, probs, datasets, generators = [], [], [], []
    try:
        for rec, result in _scored(path, core, 256):
            if rec.get("label") not in ("human", "machine"):
                continue
            labels.append(rec["label"] == "machine")
            probs.append(result["bot_origin"])
            datasets.append(rec.get("dataset"))
            generators.append(rec.get("generator"))
    finally:
        core.close()
    y, p = np.array(labels, bool), np.array(probs, float)
    groups = {"all": evaluation.summary(y, p)}
    for name in sorted({d for d in datasets if d}):
        sel = np.array([d == name for d in datasets])
        groups[f"dataset={name}"] = evaluation.summary(y[sel], p[sel])
    for name in sorted({g for g in generators if g}):
        # a generator against every human record: can it be told apart from people?
        sel = np.array([g == name or not lab for g, lab in zip(generators, labels)])
        groups[f"generator={name}"] = evaluation.summary(y[sel], p[sel])
    return {"groups": groups, "reliability": evaluation.reliability(y, p)}
