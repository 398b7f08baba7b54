"""Corpus memory: how often each turn was already seen in earlier transcripts.

Scripted bots and generic neural bots repeat the same turns verbatim across thousands of
conversations; people rarely write the same sentence twice. Each turn of at least
`MIN_WORDS` words is keyed by its role and its text, lower-cased with digits folded
(so "order 123" and "order 456" match); the count of earlier transcripts that had the
same key becomes the model's `turn_seen` input (log1p of the count).

Counts are in memory, per process, bounded: when more than `capacity` keys are held, all
counts are halved and the zeros dropped, so the memory keeps what is frequent and
recent. A transcript whose (source, id) was already observed (a retry) is not counted
again; two different transcripts with the same text both count, because a template bot
sending the same turn a thousand times is exactly what this memory is for.
"""
from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

MIN_WORDS = 3
_DIGITS = re.compile(r"\d")


def turn_key(role: str, normalized_text: str) -> int | None:
    """Stable 64-bit key of a turn, or None for turns too short to be telling."""
    if normalized_text.count(" ") + 1 < MIN_WORDS:
        return None
    folded = _DIGITS.sub("0", normalized_text.lower())
    digest = hashlib.blake2b(f"{role}\x1f{folded}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class CorpusMemory:
    def __init__(self, capacity: int = 500_000, seen_transcripts: int = 100_000):
        self.capacity = capacity
        self._counts: dict[int, int] = {}
        self._transcripts: OrderedDict[str, None] = OrderedDict()
        self._max_transcripts = seen_transcripts
        self._lock = threading.Lock()
        self.most_repeated = 0  # the highest count held: how often the most common turn was seen

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: int | None) -> int:
        """How many earlier transcripts had this turn key (read-only)."""
        return self._counts.get(key, 0) if key is not None else 0

    def observe(self, transcripts: Sequence[tuple[str, Sequence[int | None]]]) -> list[np.ndarray]:
        """For each (transcript key, turn keys) in order: the prior count of each turn, then count it.

        Returns one float array per transcript: log1p(prior count), 0 for keyless turns.
        """
        out = []
        with self._lock:
            counts = self._counts
            for transcript_key, keys in transcripts:
                prior = np.fromiter((counts.get(k, 0) if k is not None else 0 for k in keys), np.float64, len(keys))
                out.append(np.log1p(prior))
                if transcript_key in self._transcripts:
                    continue
                self._transcripts[transcript_key] = None
                if len(self._transcripts) > self._max_transcripts:
                    self._transcripts.popitem(last=False)
                for k in set(keys):
                    if k is not None:
                        c = counts[k] = counts.get(k, 0) + 1
                        if c > self.most_repeated:
                            self.most_repeated = c
            if len(counts) > self.capacity:
                self._counts = {k: c // 2 for k, c in counts.items() if c > 1}
                self.most_repeated //= 2
        return out
