"""echogate.evaluation: the bot-origin threshold `echogate eval` offers a platform for its policy."""
from __future__ import annotations

import math

import numpy as np

from echogate.evaluation import threshold_for_fpr


def test_threshold_flags_at_most_the_share_of_humans_and_is_the_lowest_that_does():
    """Flagged means scored at or over it, as the policy compares; one step (0.0001) lower would
    flag more humans than the share allows."""
    rng = np.random.default_rng(0)
    human, machine = rng.beta(2, 5, 1000), rng.beta(5, 2, 500)
    labels = np.r_[np.zeros(human.size, bool), np.ones(machine.size, bool)]
    scores = np.r_[human, machine]
    for fpr in (0.001, 0.01, 0.05, 0.1):
        row = threshold_for_fpr(labels, scores, fpr)
        t = row["threshold"]
        assert row["max_human_share"] == fpr and round(t, 4) == t
        assert row["human_flagged"] == (human >= t).mean() <= fpr
        assert (human >= t - 1e-4).mean() > fpr
        assert row["machine_caught"] == (machine >= t).mean()


def test_threshold_where_humans_tie_or_score_one():
    """Tied humans are flagged together, so the threshold clears both; where more humans score 1
    than the share allows, no threshold up to 1 keeps it."""
    labels = np.array([False, False, False, False, True])
    row = threshold_for_fpr(labels, np.array([0.3, 0.7, 0.7, 0.2, 0.9]), 0.25)  # one human of four may be flagged
    assert (row["threshold"], row["human_flagged"], row["machine_caught"]) == (0.7001, 0.0, 1.0)
    ones = threshold_for_fpr(labels, np.array([1.0, 1.0, 0.2, 0.1, 1.0]), 0.25)
    assert ones["threshold"] is None and math.isnan(ones["human_flagged"]) and math.isnan(ones["machine_caught"])
    humans_only = threshold_for_fpr(np.zeros(3, bool), np.array([0.1, 0.5, 0.2]), 0.01)
    assert humans_only["threshold"] == 0.5001 and math.isnan(humans_only["machine_caught"])
