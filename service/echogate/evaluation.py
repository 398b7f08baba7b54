"""Detection metrics: AUROC, TPR at a fixed FPR, expected calibration error, reliability.

Used by the trainer's validation report and by `echogate eval` on a customer's file, so
both report the same numbers the same way. Pure NumPy: no scikit-learn at serving time.
"""
from __future__ import annotations

import numpy as np


SHORT_WORDS = 20  # texts under this many words are reported apart: they carry little evidence
# shares of a file's human records for which `echogate eval` gives the threshold that flags no more
THRESHOLD_FPRS = (0.001, 0.01, 0.05, 0.1)


def word_count(texts) -> int:
    """Words of a text's parts (a transcript's turns), the measure of SHORT_WORDS; a part written
    as a number (a JSON record's) counts as one word."""
    return sum(len(str(t or "").split()) for t in texts)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    labels = np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """Share of machine documents scored above the threshold that flags `fpr` of humans."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    threshold = np.quantile(np.asarray(scores)[~labels], 1 - fpr, method="higher")
    return float((np.asarray(scores)[labels] > threshold).mean())


def threshold_for_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float, decimals: int = 4) -> dict:
    """The lowest threshold of `decimals` places that flags at most `fpr` of the human documents,
    with the shares of humans and machines it flags.

    Flagged means scored at or over the threshold, as a policy's thresholds compare, and rounding
    is upwards, so a threshold copied into a policy keeps its promise on this data. The threshold
    is None where none up to 1 keeps it (too many humans score 1). Needs a human document."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, float)
    human = np.sort(scores[~labels])[::-1]
    allowed = int(np.floor(fpr * human.size + 1e-9))  # humans it may flag (the epsilon: 0.29 * 100 is 28.99...)
    # the smallest value of `decimals` places above the highest human score it must not flag
    threshold = (np.floor(human[allowed] * 10**decimals) + 1) / 10**decimals
    if threshold > 1:
        return {"max_human_share": fpr, "threshold": None, "human_flagged": float("nan"),
                "machine_caught": float("nan")}
    machine = scores[labels]
    return {"max_human_share": fpr, "threshold": float(threshold), "human_flagged": float((human >= threshold).mean()),
            "machine_caught": float((machine >= threshold).mean()) if machine.size else float("nan")}


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin: count, mean predicted probability, observed machine share."""
    labels = np.asarray(labels, float)
    idx = np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            table.append({"bin_low": b / bins, "bin_high": (b + 1) / bins, "count": int(sel.sum()),
                          "mean_prob": float(probs[sel].mean()), "machine_share": float(labels[sel].mean())})
    return table


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: count-weighted gap between predicted and observed."""
    table = reliability(labels, probs, bins)
    total = sum(row["count"] for row in table)
    return float(sum(row["count"] * abs(row["mean_prob"] - row["machine_share"]) for row in table) / max(total, 1))


def summary(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels, bool)
    probs = np.asarray(probs, float)
    return {"n": int(len(labels)), "machine": int(labels.sum()), "auroc": auroc(labels, probs),
            "tpr_at_1pct_fpr": tpr_at_fpr(labels, probs), "ece": ece(labels, probs),
            "mean_prob_human": float(probs[~labels].mean()) if (~labels).any() else float("nan"),
            "mean_prob_machine": float(probs[labels].mean()) if labels.any() else float("nan")}


def without_nan(report):
    """The report with every NaN (a metric one label cannot define) as None: JSON has no NaN, and
    strict readers (jq, JavaScript, most other languages) refuse Python's bare `NaN`."""
    if isinstance(report, float):
        return None if report != report else report
    if isinstance(report, dict):
        return {k: without_nan(v) for k, v in report.items()}
    if isinstance(report, list | tuple):
        return [without_nan(v) for v in report]
    return report
