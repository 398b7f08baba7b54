"""The issue's reference detector on the training report's held-out folds: a yardstick for them.

  python bench/baseline_folds.py [--data ../shared/datasets] [--report service/echogate/models/training_report.json]

Issue #3 quotes, on its hidden evaluation, character 2-5-gram TF-IDF + logistic regression trained
on all of the shared data. This fits that detector on each fold of `echogate train` (the same
documents, the same held-out masks: echogate.training.folds.make_folds and in_collection_fold)
and prints its AUROC and TPR at 1% FPR beside the shipped model's from its training report.
The folds stand in for the hidden groups. Comparing the reference's figures here with its
figures on the hidden groups (in the issue) shows which fold behaves like which group, and so
which rows of the training report to read as evidence about the hidden set.

The reference as built here: a document's turns joined by newlines (no role names, as the model
reads them); scikit-learn's HashingVectorizer (character 2-5-grams, 2**20 buckets, standing in
for a vocabulary) with sublinear TF-IDF fitted on the fold's training documents;
LogisticRegression(C=1, 300 iterations), no sample weights. Its scores are ranked as they are
(AUROC and TPR need no calibration). About 7 minutes and 6.5 GB on 2 cores.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression

from echogate import evaluation
from echogate.training.data import load_docs
from echogate.training.folds import headline_slice, in_collection_fold, make_folds

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--report", type=Path, default=ROOT / "service/echogate/models/training_report.json")
    args = parser.parse_args()

    report = json.loads(args.report.read_text())
    docs = load_docs(args.data, report["config"]["max_turn_docs_per_dataset"], report["config"]["seed"])
    y = np.array([d.label for d in docs], bool)
    kinds = np.array([d.kind for d in docs])
    vectorizer = HashingVectorizer(analyzer="char", ngram_range=(2, 5), n_features=1 << 20,
                                   alternate_sign=False, norm=None)
    counts = vectorizer.transform(["\n".join(d.texts) for d in docs])
    shipped = {(r["fold"], r["slice"]): r for r in report["validation"]}
    held_out = make_folds(docs)  # the report's folds; its macro is over these alone
    folds = {**held_out, "in_collection_support": in_collection_fold(docs)}

    version = report["config"]["version"]
    print(f"reference: char 2-5-gram TF-IDF + LR; {version}: its training report; {len(docs):,} documents")
    print(f"| fold | slice | n | machine | reference AUROC | TPR@1%FPR | {version} AUROC | TPR@1%FPR |")
    print("|---|---|---|---|---|---|---|---|")
    headline = {"reference": [], "shipped": []}
    for name, (test, excluded) in folds.items():
        if not (test.any() and y[test].any() and (~y[test]).any()):
            continue  # banking77: one label, no ranking to measure
        tfidf = TfidfTransformer(sublinear_tf=True).fit(counts[~excluded])
        clf = LogisticRegression(C=1.0, max_iter=300).fit(tfidf.transform(counts[~excluded]), y[~excluded])
        scores = clf.decision_function(tfidf.transform(counts[test]))
        for kind in ("turn", "transcript"):
            sel = kinds[test] == kind
            labels = y[test][sel]
            if not (labels.any() and (~labels).any()):
                continue
            auroc, tpr = evaluation.auroc(labels, scores[sel]), evaluation.tpr_at_fpr(labels, scores[sel])
            ours = shipped.get((name, f"{kind}s"), {})
            print(f"| {name} | {kind}s | {sel.sum()} | {labels.sum()} | {auroc:.3f} | {tpr:.3f} | "
                  f"{_metric(ours, 'auroc'):.3f} | {_metric(ours, 'tpr_at_1pct_fpr'):.3f} |",
                  flush=True)
            if name in held_out and f"{kind}s" == headline_slice(name):
                headline["reference"].append(auroc)
                headline["shipped"].append(_metric(ours, "auroc"))
    print(f"macro AUROC over the headline rows: reference {np.mean(headline['reference']):.3f}, "
          f"{version} {np.mean(headline['shipped']):.3f}")


def _metric(row: dict, name: str) -> float:
    """A report metric; NaN where the report has none (written as null since one label leaves it undefined)."""
    value = row.get(name)
    return float("nan") if value is None else value


if __name__ == "__main__":
    main()
