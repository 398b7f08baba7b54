"""How the model's held-out ranking survives text written the way older dialogue corpora write it.

  python bench/tokenised_folds.py [--data ../shared/datasets] [--folds l2r,star] [--lowercase-share S]

Older dialogue corpora (and the bots trained on them) are often tokenised ("i 'm fine , thanks .")
and lower-cased, on both sides of the conversation; the training files are neither. For each
held-out fold of `echogate train` whose name starts with one of `--folds` (l2r: unseen domains
and generator; star: unseen task domains; spc, cucom: whole dialogue collections), this fits the
fold's model as the trainer does (same documents, features, weights and masks), then scores the
fold's held-out documents rewritten each way, both labels alike, through the trainer's
featurisation (so through echogate.text.normalize_all and model_texts, as the server reads
them). Printed: AUROC of the raw model score per fold, slice (turn, transcript) and rewrite.
Raw scores carry no corpus signal, so STAR's turns rank lower here than in the training report.
`--lowercase-share` overrides TrainConfig.lowercase_share (each training document also trains
lower-cased, with that share of its weight). About 15 minutes and 8 GB on 2 cores for all
folds; with lower-cased copies, 16 minutes and up to 20 GB for the l2r and STAR folds alone
(measured before bot-origin-0.15.0 added l2r's chunks, a quarter more documents).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
from joblib import delayed

from echogate import evaluation
from echogate.training.data import is_chunk
from echogate.training.config import TrainConfig
from echogate.training.folds import make_folds
from echogate.training.rows import TrainingData, document_features
from echogate.training.train import fit, fold_pool, training_docs

ROOT = Path(__file__).resolve().parents[1]


def tokenise(text: str) -> str:
    """Penn-Treebank-like: sentence punctuation and clitics split off, brackets and quotes spaced."""
    text = re.sub(r"([.,!?;:])(?=\s|$)", r" \1", text)
    text = re.sub(r"([()\"])", r" \1 ", text)
    text = re.sub(r"(?i)(\w)n't\b", r"\1 n't", text)
    text = re.sub(r"(?i)(\w)'(s|m|re|ve|ll|d)\b", r"\1 '\2", text)
    return " ".join(text.split())


REWRITES = {"as written": lambda t: t, "tokenised": tokenise, "lower-cased": str.lower,
            "tokenised, lower-cased": lambda t: tokenise(t).lower()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--folds", default="l2r,star,spc,cucom", help="prefixes of make_folds' fold names")
    parser.add_argument("--lowercase-share", type=float, default=None, help="TrainConfig.lowercase_share")
    args = parser.parse_args()
    cfg = TrainConfig()
    if args.lowercase_share is not None:
        cfg = dataclasses.replace(cfg, lowercase_share=args.lowercase_share)
    docs = training_docs(args.data, cfg)
    run = TrainingData.build(docs, cfg)
    training, y, w = run.rows, run.y, run.w
    # the model trains on l2r's paragraph chunks as the trainer's does; the rewrites are judged on whole texts
    whole = np.array([not is_chunk(d.dataset) for d in docs])
    folds = {name: (test & whole, excluded) for name, (test, excluded) in make_folds(docs).items()
             if name.startswith(tuple(args.folds.split(",")))}

    def one(name: str, test: np.ndarray, excluded: np.ndarray) -> tuple[str, dict]:
        rows = ~excluded
        clf = fit(*training.select(y, w, rows), cfg)
        held = [docs[i] for i in np.flatnonzero(test)]
        kinds, labels = np.array([d.kind for d in held]), y[test]
        out = {}
        for rewrite, change in REWRITES.items():
            rewritten = [dataclasses.replace(d, texts=tuple(map(change, d.texts))) for d in held]
            scores = clf.evidence(document_features(rewritten, cfg)[1])
            out[rewrite] = {kind: evaluation.auroc(labels[kinds == kind], scores[kinds == kind])
                            for kind in ("turn", "transcript") if len(set(labels[kinds == kind])) == 2}
        return name, out

    print(f"raw-score AUROC per held-out fold (lowercase_share {cfg.lowercase_share}); rewrites: {', '.join(REWRITES)}")
    for name, out in fold_pool(cfg.jobs)(delayed(one)(n, *m) for n, m in folds.items()):
        for kind in ("turn", "transcript"):
            if kind in out["as written"]:
                print(f"{name:34s} {kind:10s} " + "  ".join(f"{out[r][kind]:.3f}" for r in REWRITES), flush=True)


if __name__ == "__main__":
    main()
