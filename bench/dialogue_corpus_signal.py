"""The corpus signal's weight in a dialogue's score: the held-out folds against a retrieval bot.

  python bench/dialogue_corpus_signal.py [--data ../shared/datasets] [--scores /tmp/dialogue_fold_scores.npz]
      [--signal count|agent_count|agent_share] [--weights 0,0.5,1,2,4,8,fit]

A dialogue's calibrated score is sigmoid(scale * raw + offset + weight * signal).
TrainConfig.transcript_seen_weight fixes the weight at 0: fitted, it cost the held-out
cucom_vs_taskmaster4 dialogues 0.2 AUROC (Taskmaster-4's human agents reuse formulaic lines). But
a bot that answers with a person's wording (the pre-LLM retrieval bot of bench/retrieval_bot.py,
the hidden group most likely under the issue's 0.80 floor) is seen by nothing else. This measures
the trade at each weight, for three signals, each turn's part scaled by its length
(graph.seen_scale) as the trainer simulates it in streams of its files:

- `count`, the shipped form: the role-weighted mean over turns of log1p(how often the turn was
  seen before in the stream) (calibration.simulate_seen);
- `agent_count`: the same over agent turns only (customers' turns are the same whoever answers);
- `agent_share`: the share of agent turns seen before at all, the signal closest to
  retrieval_bot.py's "corpus signal alone" (Scores.corpus_duplicate).

Read with it:
- the held-out dialogue folds, each with a calibration fitted on the other dialogue folds at
  that weight (the trainer's own fit_calibration), and the in-collection fold with one fitted on
  all four (as the shipped model is); their out-of-fold raw scores come from
  bench/dialogue_evidence.py's cache (`--scores`; 20-25 minutes to build), their signal from the
  trainer's streams (seconds);
- the retrieval bot's streams of bench/retrieval_bot.py, scored by `echogate score`'s code with
  the shipped model: each dialogue's raw score is its probability read back through the shipped
  dialogue calibration (whose corpus weight is 0, so the probability holds the raw score alone),
  its signal taken over the whole stream in one memory, read with the calibration fitted on all
  four folds at that weight.

"fit" lets the calibration fit the weight (the trainer's None). Printed: each fold's and file's
AUROC for the signal alone, then per weight AUROC (TPR at 1% FPR). Results in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dialogue_evidence import DIALOGUE_FOLDS, REPORT_ONLY, dialogue_folds, fold_scores
from retrieval_bot import FILES, SEED, bot_stream
from echogate import evaluation
from echogate.offline import score_file
from echogate.settings import default_model_path
from echogate.training.data import Doc, load_docs, read_records
from echogate.training.graph import seen_scale
from echogate.training.calibration import apply_calibration, fit_calibration, simulate_seen, simulated_streams
from echogate.training.config import TrainConfig
from echogate.training.train import training_docs

ROOT = Path(__file__).resolve().parents[1]
Signal = Callable[[list[Doc], int], np.ndarray]  # (documents, stream size) -> one value per document


def agent_share(docs: list[Doc], seed: int, stream_size: int, full_bytes: int) -> np.ndarray:
    """Per document, the length-scaled share of its agent turns seen before in its stream: the
    trainer's streams (calibration.simulated_streams), (count > 0) in place of log1p(count), agent
    turns only."""
    feature = np.zeros(len(docs))
    for stream in simulated_streams(docs, seed, stream_size):
        seen = (stream.prior > 0) * seen_scale(stream.model_lengths, full_bytes)
        agent = np.array([r == "agent" for r in stream.roles], np.float64)
        doc = np.repeat(np.arange(len(stream.docs)), stream.turns)
        feature[stream.docs] = np.bincount(doc, weights=agent * seen, minlength=len(stream.docs)) / np.maximum(
            np.bincount(doc, weights=agent, minlength=len(stream.docs)), 1e-6)
    return feature


def signals(cfg: TrainConfig) -> dict[str, Signal]:
    return {
        "count": lambda docs, size: simulate_seen(docs, cfg.role_weights, cfg.seed, size, cfg.seen_full_bytes),
        "agent_count": lambda docs, size: simulate_seen(docs, {"agent": 1.0}, cfg.seed, size, cfg.seen_full_bytes),
        "agent_share": lambda docs, size: agent_share(docs, cfg.seed, size, cfg.seen_full_bytes),
    }


def fold_arrays(data: Path, scores: Path, cfg: TrainConfig, signal: Signal) -> dict[str, dict[str, np.ndarray]]:
    """bench/dialogue_evidence.py's held-out dialogue scores, with the signal of each transcript
    (each fold's transcripts in document order, as fold_scores keeps them)."""
    folds = fold_scores(data, scores)
    docs = training_docs(data, cfg)
    transcript = np.array([d.kind == "transcript" for d in docs])
    values = signal(docs, cfg.stream_size)
    for name, (test, _) in dialogue_folds(docs).items():
        folds[name]["seen"] = values[test & transcript]
    return folds


def retrieval_streams(data: Path, cfg: TrainConfig, signal: Signal) -> dict[str, dict[str, np.ndarray]]:
    """Per file of bench/retrieval_bot.py, its stream's dialogues: raw score, signal, label."""
    model = onnx.load(default_model_path())
    consts = {t.name: float(numpy_helper.to_array(t)) for t in model.graph.initializer
              if t.name.startswith("dialogue_bot_origin_")}
    assert consts["dialogue_bot_origin_seen_w"] == 0.0, "the shipped dialogue score must not read the corpus signal"
    scale, offset = consts["dialogue_bot_origin_a"], consts["dialogue_bot_origin_b"]
    out = {}
    for name, split in FILES.items():
        stream = bot_stream(list(read_records(data / f"{name}.jsonl")), split, random.Random(SEED))
        jsonl = "".join(json.dumps(r) + "\n" for r in stream)
        with tempfile.TemporaryDirectory() as tmp:  # the trainer's reader takes a folder of files
            (Path(tmp) / f"{name}_retrieval_bot.jsonl").write_text(jsonl)
            docs = [d for d in load_docs(Path(tmp), 0, cfg.seed) if len(d.texts) > 1]
        scored = io.StringIO()
        score_file(io.StringIO(jsonl), scored, model_path=None)
        # a dialogue of one non-empty turn takes the single-text calibration: read back only dialogues
        p = np.array([r["echogate"]["bot_origin"] for r in map(json.loads, scored.getvalue().splitlines())
                      if sum(bool(t["text"].strip()) for t in r["turns"]) > 1], np.float64)
        assert len(p) == len(docs), (len(p), len(docs))
        p = np.clip(p, 1e-7, 1 - 1e-7)
        out[name] = {"raw": (np.log(p / (1 - p)) - offset) / scale, "seen": signal(docs, len(docs)),
                     "y": np.array([d.label for d in docs])}
    return out


def cell(y: np.ndarray, probs: np.ndarray) -> str:
    return f"{evaluation.auroc(y, probs):.3f} ({evaluation.tpr_at_fpr(y, probs):.3f})"


def calibration(folds: list[dict[str, np.ndarray]], weight: float | None):
    """The trainer's dialogue calibration on these folds' transcripts, each fold weighing the same."""
    cat = {k: np.concatenate([f[k] for f in folds]) for k in ("raw", "seen", "y")}
    fold = np.concatenate([np.full(len(f["y"]), i) for i, f in enumerate(folds)])
    return fit_calibration(cat["raw"], cat["seen"], cat["y"], fold, weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--scores", type=Path, default=Path("/tmp/dialogue_fold_scores.npz"))
    parser.add_argument("--signal", default="count", choices=("count", "agent_count", "agent_share"))
    parser.add_argument("--weights", default="0,0.5,1,2,4,8,fit")
    args = parser.parse_args()
    cfg = TrainConfig()
    signal = signals(cfg)[args.signal]
    folds = fold_arrays(args.data, args.scores, cfg, signal)
    bots = retrieval_streams(args.data, cfg, signal)
    every = {**folds, **{f"retrieval_{n}": b for n, b in bots.items()}}
    print(f"signal {args.signal} alone, AUROC: "
          + ", ".join(f"{n} {evaluation.auroc(f['y'], f['seen']):.3f}" for n, f in every.items()))
    print("| weight (all-fold fit: weight, scale) | " + " | ".join(every) + " |")
    print("|---" * (len(every) + 1) + "|")
    for text in args.weights.split(","):
        weight = None if text == "fit" else float(text)
        cells = []
        for name in DIALOGUE_FOLDS:
            cal = calibration([folds[n] for n in DIALOGUE_FOLDS if n != name], weight)
            cells.append(cell(folds[name]["y"], apply_calibration(cal, folds[name]["raw"], folds[name]["seen"])))
        shipped = calibration([folds[n] for n in DIALOGUE_FOLDS], weight)
        for fold in (folds[REPORT_ONLY], *bots.values()):
            cells.append(cell(fold["y"], apply_calibration(shipped, fold["raw"], fold["seen"])))
        print(f"| {text} ({shipped.seen_weight:.2f}, {shipped.scale:.2f}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
