"""A dialogue calibration that trusts a dialogue's mean less when it has little text: measured on the held-out folds.

  python bench/dialogue_evidence.py [--data ../shared/datasets] [--scores /tmp/dialogue_fold_scores.npz]
      [--prior fit|N] [--p0 5,20,80]

A dialogue's raw score is the mean of its turns' single-text scores (graph.Calibration), and the
dialogue calibration reads it as logit = scale * mean + offset. A mean over twenty turns is firmer
evidence than one over a single agent turn, yet both are read with the same slope, so a two-turn
dialogue can score 0.99 while its turns score 0.49 and 0.28. If turn scores share a dialogue-wide
bias (variance t2) beside their own noise (s2 per unit of text), the best slope grows with the
amount of text P as P / (P + P0), P0 = s2 / t2, and what is left goes to a prior:

  logit = lam * (scale * mean + offset) + (1 - lam) * prior,   lam = P / (P + P0)

P is the dialogue's pooled count (featurize: its turns' n-gram counts, square-rooted and
role-weighted, what the mean is weighted by). `--prior fit` fits the prior with the slope and
offset; a number fixes it (0: no evidence reads 0.5; -1.38: the single-text calibration's offset).

The folds' held-out raw scores come from the trainer's own functions (`cross_validate` on
`make_folds`' dialogue folds and `in_collection_fold`; 20-25 minutes at jobs 2, 18 GB) and are
kept in `--scores`, so later runs take seconds. Each fold is read with a calibration fitted on the
other dialogue folds' transcripts (both labels of each fold weighing the same); the in-collection
fold with one fitted on all four. Printed per fold: AUROC, ECE, TPR at 1% FPR and the mean
probability of human dialogues with under 20 agent words. Results in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from echogate import evaluation
from echogate.training.data import Doc
from echogate.training.config import TrainConfig
from echogate.training.folds import in_collection_fold, make_folds
from echogate.training.rows import TrainingData
from echogate.training.train import cross_validate, training_docs

ROOT = Path(__file__).resolve().parents[1]
DIALOGUE_FOLDS = ("cucom_vs_taskmaster4", "spc_vs_sgd", "star_unseen_domains_0", "star_unseen_domains_1")
REPORT_ONLY = "in_collection_support"


def dialogue_folds(docs: list[Doc]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The folds this bench reads (DIALOGUE_FOLDS, then REPORT_ONLY), as make_folds' (test, excluded) masks."""
    folds = {n: m for n, m in make_folds(docs).items() if n in DIALOGUE_FOLDS}
    folds[REPORT_ONLY] = in_collection_fold(docs)
    return folds


def fold_scores(data: Path, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per fold, its held-out transcripts' raw score, pooled count, label and agent words (cached
    at `path`), in document order."""
    if not path.exists():
        cfg = TrainConfig()
        docs = training_docs(data, cfg)
        run = TrainingData.build(docs, cfg)
        folds = dialogue_folds(docs)
        raw = cross_validate(run, folds, np.ones(len(docs), bool), cfg)
        words = np.array([d.words for d in docs])
        arrays = {}
        for name, (test, _) in folds.items():
            held = run.transcript[test]
            rows = np.flatnonzero(test)[held]
            arrays.update({f"{name}/raw": raw[name][held], f"{name}/pooled": run.pooled[rows],
                           f"{name}/y": run.y[rows], f"{name}/words": words[rows]})
        np.savez(path, **arrays)
    saved = np.load(path)
    return {name: {k: saved[f"{name}/{k}"] for k in ("raw", "pooled", "y", "words")}
            for name in (*DIALOGUE_FOLDS, REPORT_ONLY)}


def terms(fold: dict[str, np.ndarray], p0: float) -> np.ndarray:
    """Columns multiplying (scale, offset, prior); p0 = 0 is the shipped form, lam = 1."""
    lam = fold["pooled"] / (fold["pooled"] + p0)
    return np.stack([lam * fold["raw"], lam, 1.0 - lam], axis=1)


def fit(folds: list[dict[str, np.ndarray]], p0: float, prior: float | None) -> np.ndarray:
    """(scale, offset, prior) by logistic loss, each fold's two labels weighing the same; a given prior is kept."""
    x = np.concatenate([terms(f, p0) for f in folds])
    y = np.concatenate([f["y"] for f in folds])
    group = np.concatenate([f["y"] + 2 * i for i, f in enumerate(folds)])
    _, of_row, sizes = np.unique(group, return_inverse=True, return_counts=True)
    w = 1.0 / sizes[of_row]
    free = np.array([1.0, 1.0, 0.0 if prior is not None or p0 == 0 else 1.0])

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ params
        return float(w @ (np.logaddexp(0, z) - y * z)), (x.T @ (w * (1 / (1 + np.exp(-z)) - y))) * free

    start = np.array([1.0, 0.0, prior or 0.0])
    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0, None), (None, None), (None, None)]).x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--scores", type=Path, default=Path("/tmp/dialogue_fold_scores.npz"))
    parser.add_argument("--prior", default="fit", help="'fit', or the prior logit to keep")
    parser.add_argument("--p0", default="5,20,80", help="pooled counts at which a dialogue's mean weighs half")
    args = parser.parse_args()
    prior = None if args.prior == "fit" else float(args.prior)
    folds = fold_scores(args.data, args.scores)
    for p0 in (0.0, *(float(p) for p in args.p0.split(","))):
        cells = []
        for name in (*DIALOGUE_FOLDS, REPORT_ONLY):
            params = fit([folds[n] for n in DIALOGUE_FOLDS if n != name], p0, prior)
            fold = folds[name]
            probs = 1 / (1 + np.exp(-(terms(fold, p0) @ params)))
            short_human = (fold["words"] < evaluation.SHORT_WORDS) & (fold["y"] == 0)
            y = fold["y"]
            cells.append(f"{name}: AUROC {evaluation.auroc(y, probs):.3f} ECE {evaluation.ece(y, probs):.3f} "
                         f"TPR {evaluation.tpr_at_fpr(y, probs):.3f} short human p {probs[short_human].mean():.3f}")
        params = np.round(fit([folds[n] for n in DIALOGUE_FOLDS], p0, prior), 3).tolist()
        label = (f"shipped form (all four folds: scale, offset {params[:2]})" if p0 == 0 else
                 f"P0 {p0:g}, prior {args.prior} (all four folds: scale, offset, prior {params})")
        print(label + "\n  " + "\n  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
