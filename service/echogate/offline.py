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
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import orjson
from tqdm import tqdm

from echogate import evaluation
from echogate.errors import InvalidArgument
from echogate.gate import GateCore
from echogate.grpc_api import convert
from echogate.metrics import Metrics
from echogate.settings import Limits, Settings
from echogate.types import Decision, Transcript, Verdict
from echogate.validation import validate_batch
from echogate_client.records import (RecordError, count_lines, read_jsonl_lines, transcript_from_record, turn_list,
                                     verdict_to_dict)

# Offline files are the user's own: accept what the model can read (it cuts turns itself).
OFFLINE_LIMITS = Limits(max_batch=100_000, max_turns=100_000, max_turn_bytes=10_000_000, max_id_bytes=100_000,
                        max_metadata_entries=100_000, max_metadata_bytes=100_000_000, max_message_bytes=2**31 - 1)


def _core(model_path: str | None, config: str | None) -> GateCore:
    settings = Settings.load(config, model_path=model_path, metrics_port=None)
    settings.limits = OFFLINE_LIMITS
    return GateCore(settings, Metrics(), store=None)


class _Batch(NamedTuple):
    """Records as read: (line number, line, parsed JSON) each, and what each was read as: its
    transcript, or the RecordError that says why it cannot be scored."""

    lines: list[tuple[int, str, object]]
    read: list[Transcript | RecordError]


def _read_batches(source: Path | IO[str], batch_size: int, keep_going: bool) -> Iterator[_Batch]:
    """The file a batch at a time, converted as the client and the server convert a request. A
    record the schema cannot read raises RecordError, or with `keep_going` stands in its batch as
    that error."""
    lines = read_jsonl_lines(source, keep_going)
    batch_size = min(batch_size, OFFLINE_LIMITS.max_batch)  # the size changes no score, and the limit holds
    while chunk := list(islice(lines, batch_size)):
        messages, problems = [], []
        for n, _, value in chunk:
            problem = value if isinstance(value, RecordError) else None
            if problem is None:
                try:
                    messages.append(transcript_from_record(value, n))
                except RecordError as exc:
                    problem = exc
            if problem is not None and not keep_going:
                raise problem
            problems.append(problem)
        transcripts = iter(convert.transcripts_from_pb(messages, 0, OFFLINE_LIMITS))
        yield _Batch(chunk, [next(transcripts) if p is None else p for p in problems])


async def _verdicts(core: GateCore, batch: _Batch, keep_going: bool) -> list[Verdict | RecordError]:
    """A verdict per record of the batch, or the RecordError that says why it has none.

    The limits (OFFLINE_LIMITS) still reject a few records the schema reads, such as a blank `id`:
    GateCore.score validates a batch before it scores any of it, so a rejected batch is validated
    again a record at a time, to name the lines at fault, and scored without them."""
    out: list[Verdict | RecordError] = list(batch.read)
    readable = [i for i, t in enumerate(batch.read) if isinstance(t, Transcript)]
    try:
        verdicts = await core.score([batch.read[i] for i in readable]) if readable else []
    except InvalidArgument:
        for i in readable:
            try:
                validate_batch([batch.read[i]], core.settings.limits)
            except InvalidArgument as exc:
                out[i] = RecordError(f"line {batch.lines[i][0]}: " + "; ".join(
                    f"{v.field.removeprefix('transcripts[0].')}: {v.description}" for v in exc.violations))
                if not keep_going:
                    raise out[i] from None
        readable = [i for i in readable if isinstance(out[i], Transcript)]
        verdicts = await core.score([batch.read[i] for i in readable]) if readable else []
    for i, v in zip(readable, verdicts):
        out[i] = v
    return out


def _scored(source: Path | IO[str], core: GateCore, batch_size: int, keep_going: bool = False
            ) -> Iterator[tuple[str, object, dict, Transcript | None]]:
    """(line, record, echogate object, the transcript the record was read as) in file order, with
    at most three batches of records in memory. With `keep_going`, a record that cannot be scored
    comes as (line, its parsed JSON or None, {"error": why}, None); without, it raises RecordError
    after the batches before its own have been yielded.
    The progress bar's total counts blank lines too, so it is set to what was scored at the end.

    Batches are scored one after another, in file order (the corpus memory sees the file as a stream
    would show it), on a thread of their own: while one is scored, the next is read and converted
    and the last one's results are written."""
    bar = tqdm(total=count_lines(source), unit="record", file=sys.stderr)
    loop = asyncio.new_event_loop()  # runs on the scoring thread only

    def results(batch: _Batch, verdicts: Future) -> Iterator[tuple[str, object, dict, Transcript | None]]:
        for (_, line, value), read, v in zip(batch.lines, batch.read, verdicts.result()):
            if isinstance(v, RecordError):
                yield line, None if isinstance(value, RecordError) else value, {"error": str(v)}, None
            else:
                with_turns = bool(turn_list(value)[1])
                yield line, value, verdict_to_dict(convert.verdict_to_pb(v), with_turns=with_turns), read
        bar.update(len(batch.lines))

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="echogate-score") as scoring:
            in_flight, unreadable = None, None  # (batch, future verdicts) of the batch being scored
            try:
                for batch in _read_batches(source, batch_size, keep_going):
                    done = in_flight
                    if done is not None:
                        done[1].result()  # the corpus memory sees the previous batch before this one
                    in_flight = batch, scoring.submit(loop.run_until_complete, _verdicts(core, batch, keep_going))
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


def with_echogate(line: str, record: object, result: dict) -> str:
    """The input line with `"echogate": {...}` added before its closing brace.

    Splicing keeps the record's own text (key order, number spelling, escapes) byte for byte and
    spares re-encoding its turns, most of the output. The result holds only finite floats and valid
    Unicode, which orjson encodes at a fourteenth of json's cost. A record that already has an
    `echogate` key (a scored file scored again) is encoded anew with that key's value replaced; a
    line that holds no JSON object (an unreadable record, --keep-going) becomes `{"echogate": ...}`."""
    if not isinstance(record, dict):
        return orjson.dumps({"echogate": result}).decode()
    if "echogate" in record:
        return json.dumps({**record, "echogate": result}, ensure_ascii=False)
    body = line.rstrip()  # a JSON object's text ends in its closing brace; a record is never empty
    return f"{body[:-1]}, \"echogate\": {orjson.dumps(result).decode()}}}"


def score_file(source: Path | IO[str], out: IO[str], model_path: str | None = None, config: str | None = None,
               batch_size: int = 256, keep_going: bool = False) -> int:
    """Score every record of `source` (a path, or an open text stream such as stdin) into `out`;
    returns how many records could not be scored (only `keep_going` goes past one).

    With `keep_going`, such a record is written back with `"echogate": {"error": why}` in place of
    its scores, so the output still has one line per record, and why is also said on stderr."""
    core = _core(model_path, config)
    unreadable = 0
    try:
        for line, rec, result, transcript in _scored(source, core, batch_size, keep_going):
            if transcript is None:
                unreadable += 1
                tqdm.write(f"not scored, written with its error: {result['error']}", file=sys.stderr)
            out.write(with_echogate(line, rec, result) + "\n")
    finally:
        core.close()
    return unreadable


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

    def thresholds(self) -> list[dict]:
        """evaluation.threshold_for_fpr at each of evaluation.THRESHOLD_FPRS; needs a human score."""
        y, p = np.array(self.labels, bool), np.array(self.probs, float)
        return [evaluation.threshold_for_fpr(y, p, fpr) for fpr in evaluation.THRESHOLD_FPRS]


def evaluate_file(source: Path | IO[str], model_path: str | None = None, keep_going: bool = False,
                  config: str | None = None) -> dict:
    """Metrics on a labelled file, overall, per dataset and generator, and for short texts apart.

    A record's `label` (human or machine) grades its transcript score. A turn's own `origin`
    (human or machine, as in STAR, where a wizard either picked a template or typed) grades that
    turn's score, in groups prefixed `turns`: a file can measure the per-turn output as well.
    With `keep_going`, records that cannot be scored are left out and counted (`unreadable`).
    Records without a label of human or machine are scored (they are part of the stream) but in
    no group; `unlabelled` counts them by the label they have (`null` for none), so that a
    misspelt label ("Machine", "bot") is seen rather than silently left out.

    For the labelled records the report also says what a platform sets its policy from: the
    bot-origin thresholds that flag at most 0.1%, 1%, 5% and 10% of the file's human records
    (`thresholds`), and the decisions the policy of `config` (the default policy without one)
    gave each label (`decisions`). A model ranks a new source better than it is calibrated for
    it, so thresholds read off the platform's own labelled sample beat the default ones."""
    core = _core(model_path, config)
    records, turns = _Labelled(), _Labelled()
    decisions = {label: dict.fromkeys(Decision, 0) for label in ("human", "machine")}  # mildest first
    unreadable, unlabelled = 0, Counter()
    try:
        for _, rec, result, transcript in _scored(source, core, 256, keep_going):
            if transcript is None:
                unreadable += 1
                tqdm.write(f"left out: {result['error']}", file=sys.stderr)
                continue
            dataset, generator = rec.get("dataset"), rec.get("generator")
            # words as the reader took the text (a turn's `content`, a dialogue's `role: text` lines)
            texts = [t.text for t in transcript.turns]
            if rec.get("label") in ("human", "machine"):
                records.add(rec["label"], result["bot_origin"], evaluation.word_count(texts), dataset, generator)
                decisions[rec["label"]][result["decision"]] += 1
            else:
                unlabelled[json.dumps(rec.get("label"))] += 1
            for turn, text, scored in zip(turn_list(rec)[1] or [], texts, result["turns"]):
                if turn.get("origin") in ("human", "machine"):  # a record's generator need not have written it
                    turns.add(turn["origin"], scored["bot_origin"], evaluation.word_count([text]), dataset, None)
    finally:
        core.close()
    report = {"groups": {**records.groups(""), **turns.groups("turns")}, "unreadable": unreadable,
              "unlabelled": dict(unlabelled.most_common())}
    if records.labels:
        report["reliability"] = records.reliability()
        report["decisions"] = {"policy_version": core.policy.version,
                               **{label: counts for label, counts in decisions.items() if sum(counts.values())}}
    if False in records.labels:  # a human record: thresholds are read off the humans' scores
        report["thresholds"] = records.thresholds()
    if turns.labels:
        report["turn_reliability"] = turns.reliability()
    return report
