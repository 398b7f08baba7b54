"""Group-robust training against the dataset/label confound, on the trainer's held-out folds.

  python bench/group_robust_folds.py [--data ../shared/datasets] [--folds cucom,spc,l2r,star]
      [--method none|penalty|invariance] [--alpha 0.5] [--weight 0.3] [--pairs 600]
      [--labels human,machine] [--kinds transcript,turn] [--seed 0]

In most shared files the label follows the collection, so a model can learn the collection instead
of who wrote the text. The issue suggests training that resists this. This fits each held-out fold
of `echogate train` whose name starts with one of `--folds` as the trainer does: the same
documents, features, weights, masks, matched pairs and lower-cased copies. It changes the fit in
one of two ways:

- `penalty`: the fold's training rows give each hashed n-gram a document rate in every collection
  (each file; l2r and STAR split by domain). Its column is then scaled by
  s = ((second-highest rate + 1e-4) / (highest + 1e-4)) ** alpha, and the fitted weight is
  multiplied by s again. That is an L2 penalty 1/s² on the weight: an n-gram that one collection
  alone uses costs more to learn than one several collections share.
- `invariance`: for every two collections of one label and one kind (`--labels`, `--kinds`; STAR's
  two files are one collection), `--pairs` random pairs of documents. Each pair adds the row
  x_a - x_b (random sign) twice, once labelled machine and once human. This symmetric loss is
  lowest where the weights score the two documents alike. All these rows together weigh
  `--weight` times the fold's training weight.

Printed: AUROC of the raw model score (no corpus signal, no calibration) per fold and slice
(transcripts, turns, l2r chunks). Dialogue and l2r rankings equal the training report's calibrated
ones, so `--method none` reproduces those rows of the report. STAR turns do not: the report's
include the corpus signal. Results for bot-origin-0.16.0 are in docs/benchmarks.md. At `jobs` 2
this takes 2 minutes for the features and about 8 minutes per fold, with 20-23 GB in use.
"""
from __future__ import annotations

import argparse
import dataclasses
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from joblib import delayed

from echogate import evaluation
from echogate.training.data import is_chunk, source_dataset
from echogate.training.config import TrainConfig
from echogate.training.folds import make_folds
from echogate.training.rows import TrainingData
from echogate.training.train import fit, fold_pool, read_scores, training_docs

ROOT = Path(__file__).resolve().parents[1]
PRIOR = 1e-4  # a document rate's smoothing in the penalty: about one document in 10,000
LABELS = {"human": 0, "machine": 1}


def collection_scales(x: sp.csr_matrix, groups: np.ndarray, rows: np.ndarray, alpha: float) -> np.ndarray:
    """Per column, (second-highest / highest document rate over the groups of `rows`) ** alpha, `x`
    TrainingRows.x (its first rows are the documents', in order) and `rows` a mask of documents."""
    present = x[np.flatnonzero(rows)]  # a copy
    present.data[:] = 1.0
    group_ids, of_row = np.unique(groups[rows], return_inverse=True)
    member = sp.csr_matrix((np.ones(of_row.size), (of_row, np.arange(of_row.size))),
                           shape=(group_ids.size, of_row.size))
    sizes = np.asarray(member.sum(axis=1)).ravel()
    rates = (member @ present).toarray() / sizes[:, None]
    second, first = np.sort(rates, axis=0)[-2:]
    return (((second + PRIOR) / (first + PRIOR)) ** alpha).astype(np.float32)


def invariance_rows(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, kinds: np.ndarray, collections: np.ndarray,
                    rows: np.ndarray, labels: tuple[int, ...], kind_names: tuple[str, ...], pairs: int, weight: float,
                    seed: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The symmetric difference rows (see the module docstring) among the training `rows` (a mask of
    documents), `x` TrainingRows.x (its first rows are the documents', in order)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in labels:
        for kind in kind_names:
            chosen = rows & (y == label) & (kinds == kind)
            for a, b in combinations(sorted(set(collections[chosen])), 2):
                first.append(rng.choice(np.flatnonzero(chosen & (collections == a)), pairs))
                second.append(rng.choice(np.flatnonzero(chosen & (collections == b)), pairs))
    a, b = np.concatenate(first), np.concatenate(second)
    sign = rng.choice([-1.0, 1.0], a.size).astype(np.float32)
    diff = (sp.diags(sign) @ (x[a] - x[b])).tocsr()
    return (sp.vstack([diff, diff]).tocsr(), np.r_[np.ones(a.size), np.zeros(a.size)],
            np.full(2 * a.size, weight * w[rows].sum() / (2 * a.size)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--folds", default="cucom,spc,l2r,star", help="prefixes of make_folds' fold names")
    parser.add_argument("--method", choices=("none", "penalty", "invariance"), default="invariance")
    parser.add_argument("--alpha", type=float, default=0.5, help="penalty: the power of the rate ratio")
    parser.add_argument("--weight", type=float, default=0.3, help="invariance: the rows' share of the training weight")
    parser.add_argument("--pairs", type=int, default=600, help="invariance: pairs per two collections")
    parser.add_argument("--labels", default="human,machine", help="invariance: labels whose collections are paired")
    parser.add_argument("--kinds", default="transcript,turn", help="invariance: kinds of documents paired")
    parser.add_argument("--seed", type=int, default=0, help="invariance: the pairs' draw")
    args = parser.parse_args()
    cfg = TrainConfig()
    docs = training_docs(args.data, cfg)
    run = TrainingData.build(docs, cfg)
    training, x, pooled, y, w = run.rows, run.x, run.pooled, run.y, run.w
    files = np.array([source_dataset(d.dataset) for d in docs])
    kinds = np.array([d.kind for d in docs])
    # the penalty's collections split l2r and STAR by domain; the invariance rows pair whole files
    penalty_groups = np.array([f"{f.split('_')[0]}/{d.domain}" if f == "l2r" or f.startswith("star") else f
                        for d, f in zip(docs, files)])
    collections = np.array(["star" if f.startswith("star") else f for f in files])
    folds = {name: masks for name, masks in make_folds(docs).items() if name.startswith(tuple(args.folds.split(",")))}
    labels = tuple(LABELS[name] for name in args.labels.split(","))
    kind_names = tuple(args.kinds.split(","))

    def one(excluded: np.ndarray, scale: np.ndarray | None):
        rows = ~excluded
        features, targets, weights = training.documents_of(y, w, rows)
        pair_rows = training.pairs_of(w, rows)
        if args.method == "invariance":
            extra = invariance_rows(training.x, y, w, kinds, collections, rows, labels, kind_names, args.pairs,
                                    args.weight, args.seed)
            features = sp.vstack([features, extra[0]]).tocsr()
            targets, weights = np.r_[targets, extra[1]], np.r_[weights, extra[2]]
        if scale is not None:  # columns scaled in place: the training set is a copy already
            features = features.tocsr()
            features.data *= scale[features.indices]
            if pair_rows is not None:
                scaled = pair_rows[0].tocsr()
                scaled.data *= scale[scaled.indices]
                pair_rows = (scaled, pair_rows[1], pair_rows[2])
        clf = fit(features, targets, weights, cfg, pair_rows)
        if scale is not None:
            clf = dataclasses.replace(clf, weights=clf.weights * scale)
        return clf

    # computed here, one fold after another, so one binary copy of a fold's features is held at a time
    scales = [collection_scales(training.x, penalty_groups, ~excluded, args.alpha) if args.method == "penalty" else None
              for _, excluded in folds.values()]
    transcript = kinds == "transcript"
    print(f"raw-score AUROC per held-out fold, method {args.method}")
    models = fold_pool(cfg.jobs)(delayed(one)(excluded, scale) for (_, excluded), scale in zip(folds.values(), scales))
    for (name, (test, _)), clf in zip(folds.items(), models):
        raw = read_scores(clf, x[test], transcript[test], cfg.transcript_count_power, pooled[test])
        held = [docs[i] for i in np.flatnonzero(test)]
        slices = np.array(["chunk" if is_chunk(d.dataset) else d.kind for d in held])
        for part in ("transcript", "turn", "chunk"):
            chosen = slices == part
            if len(set(y[test][chosen])) == 2:
                print(f"{name:34s} {part + 's':12s} {evaluation.auroc(y[test][chosen], raw[chosen]):.4f}", flush=True)


if __name__ == "__main__":
    main()
