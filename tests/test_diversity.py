"""Corpus diversity (echogate.diversity): distinct-3 over each source's most recent trigrams."""
from __future__ import annotations

import numpy as np
import pytest

from echogate.diversity import CorpusDiversity


def test_distinct_share_per_source_over_the_window_only():
    d = CorpusDiversity(window=100)
    d.add(["a"], np.arange(100, dtype=np.uint64), np.zeros(100, np.int64))  # all distinct
    d.add(["b", "b"], np.array([7, 7, 7, 8], np.uint64), np.array([0, 0, 1, 1]))
    assert d.distinct_3() == {"a": 1.0, "b": 0.5}
    # a's bots settle into one template: the window keeps only the last 100 trigrams
    for _ in range(4):
        d.add(["a"], np.full(30, 5, np.uint64), np.zeros(30, np.int64))
    assert d.distinct_3()["a"] == pytest.approx(1 / 100)


def test_a_mixed_batch_is_split_by_source_and_sources_are_capped():
    labels = {"a": "a", "b": "b"}
    d = CorpusDiversity(window=1000, label=lambda s: labels.get(s, "__other__"))
    d.add(["a", "b", "c", ""], np.array([1, 2, 2, 3, 3, 4], np.uint64), np.array([0, 1, 1, 2, 3, 3]))
    assert d.distinct_3() == {"a": 1.0, "b": 0.5, "__other__": pytest.approx(2 / 3)}
    d.add(["a"], np.zeros(0, np.uint64), np.zeros(0, np.int64))  # nothing to add: nothing changes
    assert d.distinct_3()["a"] == 1.0
