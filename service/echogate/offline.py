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
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from tqdm import tqdm

from echogate import evaluation
from echogate.gate import GateCore
from echogate.grpc_api import convert
from echogate.metrics import Metrics
from echogate.settings import Limits, Settings
from echogate.types import Transcript
from echogate_client.records import (RecordError, count_lines, read_jsonl_lines, transcript_from_record, turn_list,
                                     verdict_to_dict)

# Offline files are the user's own: accept what the model can read (it cuts turns itself).
OFFLINE_LIMITS = Limits(max_batch=100_000, max_turns=100_000, max_turn_bytes=10_000_000, max_id_bytes=100_000,
                        max_metadata_entries=100_000, max_metadata_bytes=100_000_000, max_message_bytes=2**31 - 1)


def _core(model_path: str | None, config: str | None) -> GateCore:
    settings = Settings.load(config, model_path=model_path, metrics_port=None)
    settings.limits = OFFLINE_LIMITS
    return GateCore(settings, Metrics(), store=None)


def _read_batches(source: Path | IO[str], batch_size: int) -> Iterator[tuple[list, list[Transcript]]]:
    """([(line number, line, record)], transcripts) a batch at a time, converted as the client and
    the server convert a request."""
    lines = read_jsonl_lines(source)
    while chunk := list(islice(lines, batch_size)):
        messages = [transcript_from_record(rec, n) for n, _, rec in chunk]
        yield chunk, convert.transcripts_from_pb(messages, 0, OFFLINE_LIMITS)


def _scored(source: Path | IO[str], core: GateCore, batch_size: int
            ) -> Iterator[tuple[str, dict, dict, Transcript]]:
    """(line, record, echogate object, the transcript the record was read as) in file order, with
    at most three batches of records in memory.
    The progress bar's total counts blank lines too, so it is set to what was scored at the end.

    Batches are scored one after another, in file order (the corpus memory sees the file as a stream
    would show it), on a thread of their own: while one is scored, the next is read and converted
    and the last one's results are written. A record the schema cannot read raises RecordError
    after the batches before its own have been yielded."""
    bar = tqdm(total=count_lines(source), unit="record", file=sys.stderr)
    loop = asyncio.new_event_loop()  # runs on the scoring thread only

    def results(chunk: list, transcripts: list[Transcript], verdicts: Future
                ) -> Iterator[tuple[str, dict, dict, Transcript]]:
        for (_, line, rec), transcript, v in zip(chunk, transcripts, verdicts.result()):
            yield line, rec, verdict_to_dict(convert.verdict_to_pb(v), with_turns=bool(turn_list(rec)[1])), transcript
        bar.update(len(chunk))

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="echogate-score") as scoring:
            in_flight, unreadable = None, None  # (chunk, transcripts, future verdicts) of the batch being scored
            try:
                for chunk, transcripts in _read_batches(source, batch_size):
                    done = in_flight
                    if done is not None:
                        done[2].result()  # the corpus memory sees the previous batch before this one
                    in_flight = chunk, transcripts, scoring.submit(loop.run_until_complete, core.score(transcripts))
                    if done is not None:
                        yield from results(*done)
            except RecordError as exc:
                unreadable = exc
            if in_flight is not None:
                yield from results(*in_flight)
            if unreadable is not None:
                raise unreadable
        bar.total = bar.n
    finally:
        bar.close()
        loop.close()


def with_echogate(line: str, record: dict, result: dict) -> str:
    """The input line with `"echogate": {...}` added before its closing brace.

    Splicing keeps the record's own text (key order, number spelling, escapes) byte for byte and
    spares re-encoding its turns, most of the output. The result holds only finite floats and valid
    Unicode, which orjson encodes at a fourteenth of json's cost. A record that already has an
    `echogate` key (a scored file scored again) is encoded anew with that key's value replaced."""
    if "echogate" in record:
        return json.dumps({**record, "echogate": result}, ensure_ascii=False)
    body = line.rstrip()  # a JSON object's text ends in its closing brace; a record is never empty
    return f"{body[:-1]}, \"echogate\": {orjson.dumps(result).decode()}}}"


def score_file(source: Path | IO[str], out: IO[str], model_path: str | None = None, config: str | None = None,
               batch_size: int = 256) -> None:
    """Score every record of `source` (a path, or an open text stream such as stdin) into `out`."""
    core = _core(model_path, config)
    try:
        for line, rec, result, _ in _scored(source, core, batch_size):
            out.write(with_echogate(line, rec, result) + "\n")
    finally:
        core.close()


class _Labelled:
    """Labelled scores of one kind (records, or turns with an `origin`) and what groups them."""

    def __init__(self) -> None:
        self.labels: list[bool] = []
        self.probs: list[float] = []
        self.short: list[bool] = []
        self.datasets: list[str | None] = []
        self.generators: list[str | None] = []

    def add(self, label: str, prob: float, words: int, dataset: str | None, generator: str | None) -> None:
        self.labels.append(label == "machine")
        self.probs.append(prob)
        self.short.append(words < evaluation.SHORT_WORDS)
        self.datasets.append(dataset)
        self.generators.append(generator)

    def groups(self, prefix: str) -> dict[str, dict]:
        """Summaries for everything (named `prefix`, or `all`), each dataset and each generator
        against every human, each followed by its texts under evaluation.SHORT_WORDS words where
        some, not all, are; nothing when no score of this kind was labelled."""
        if not self.labels:
            return {}
        y, p, short = np.array(self.labels, bool), np.array(self.probs, float), np.array(self.short, bool)
        datasets, generators = np.array(self.datasets, object), np.array(self.generators, object)
        selections = {"": np.ones(len(y), bool)}
        for name in sorted({d for d in self.datasets if d}):
            selections[f"dataset={name}"] = datasets == name
        for name in sorted({g for g in self.generators if g}):
            # a generator against every human text: can it be told apart from people?
            selections[f"generator={name}"] = (generators == name) | ~y
        out = {}
        for name, sel in selections.items():
            label = " ".join(part for part in (prefix, name) if part) or "all"
            out[label] = evaluation.summary(y[sel], p[sel])
            if 0 < (sel & short).sum() < sel.sum():
                out[f"{label}<{evaluation.SHORT_WORDS}w"] = evaluation.summary(y[sel & short], p[sel & short])
        return out

    def reliability(self) -> list[dict[str, float]]:
        return evaluation.reliability(np.array(self.labels, bool), np.array(self.probs, float))


def evaluate_file(source: Path | IO[str], model_path: str | None = None) -> dict:
    """Metrics on a labelled file, overall, per dataset and generator, and for short texts apart.

    A record's `label` (human or machine) grades its transcript score. A turn's own `origin`
    (human or machine, as in STAR, where a wizard either picked a template or typed) grades that
    turn's score, in groups prefixed `turns`: a file can measure the per-turn output as well."""
    core = _core(model_path, None)
    records, turns = _Labelled(), _Labelled()
    try:
        for _, rec, result, transcript in _scored(source, core, 256):
            dataset, generator = rec.get("dataset"), rec.get("generator")
            # words as the reader took the text (a turn's `content`, a dialogue's `role: text` lines)
            texts = [t.text for t in transcript.turns]
            if rec.get("label") in ("human", "machine"):
                records.add(rec["label"], result["bot_origin"], evaluation.word_count(texts), dataset, generator)
            for turn, text, scored in zip(turn_list(rec)[1] or [], texts, result["turns"]):
                if turn.get("origin") in ("human", "machine"):  # a record's generator need not have written it
                    turns.add(turn["origin"], scored["bot_origin"], evaluation.word_count([text]), dataset, None)
    finally:
        core.close()
    report = {"groups": {**records.groups(""), **turns.groups("turns")}}
    if records.labels:
        report["reliability"] = records.reliability()
    if turns.labels:
        report["turn_reliability"] = turns.reliability()
    return report
