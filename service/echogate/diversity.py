"""Corpus diversity: distinct-3 of the agent side over each source's most recent trigrams.

Model collapse shows first as a narrowing corpus (Shumailov et al. 2024): fewer distinct
phrasings, more of the same canned turns. Per source, this keeps the word-trigram hashes
of the last `window` agent-side trigrams scored (echogate.repetition: the same trigram has
the same hash in every conversation) and reports distinct trigrams over trigrams in that
window: 1.0 when nothing repeats, falling as a source's bots settle into templates. A
fixed number of trigrams, not of transcripts, keeps sources with long and short
conversations comparable. Computed when metrics are read (one sort per source), so the
scoring path only appends an array. Hashes are kept as 32 bits: 200 KB per source at the
default window of 50,000 (40 MB at the metrics' cap of 200 sources); two trigrams sharing a
32-bit hash among 50,000 happens about once per window, a 0.002% error.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np


class CorpusDiversity:
    def __init__(self, window: int = 50_000, label: Callable[[str], str] = str):
        self.window = window
        self._label = label  # bounds the number of sources (echogate.metrics.Metrics.source_label)
        self._lock = threading.Lock()
        self._chunks: dict[str, deque[np.ndarray]] = {}
        self._sizes: dict[str, int] = {}

    def add(self, sources: Sequence[str], trigrams: np.ndarray, trigram_transcript: np.ndarray) -> None:
        """Append a scored batch: `sources` per transcript, trigram hashes with their transcript index."""
        if trigrams.size == 0:
            return
        trigrams = trigrams.astype(np.uint32)  # the low half of a mixed 64-bit hash
        labels = [self._label(s or "default") for s in sources]
        if len(set(labels)) == 1:  # the common case: a batch from one source
            parts = [(labels[0], trigrams)]
        else:
            of_trigram = np.asarray(labels, dtype=object)[trigram_transcript]
            parts = [(name, trigrams[of_trigram == name]) for name in sorted(set(labels))]
        with self._lock:
            for name, part in parts:
                chunks = self._chunks.setdefault(name, deque())
                chunks.append(part)
                size = self._sizes.get(name, 0) + part.size
                while size - chunks[0].size >= self.window:
                    size -= chunks.popleft().size
                self._sizes[name] = size

    def distinct_3(self) -> dict[str, float]:
        """Per source: distinct trigrams over trigrams among its last `window` (fewer at first)."""
        with self._lock:
            windows = {name: list(chunks) for name, chunks in self._chunks.items()}
        out = {}
        for name, chunks in windows.items():
            recent = np.concatenate(chunks)[-self.window :]
            out[name] = np.unique(recent).size / recent.size
        return out
