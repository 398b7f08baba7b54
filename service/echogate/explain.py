"""The phrases of a turn that read as machine-written: what a reviewer is shown beside a score.

The model is linear in its hashed n-grams, so a turn's score is a sum over the n-grams in it,
and each n-gram covers a few bytes. Spreading every n-gram's weight evenly over its bytes
gives each byte, and so each word, its share of the score; the run of a few consecutive words
with the largest positive sum is the phrase that pushed the score up most ("I sincerely
apologize for the inconvenience" rather than "turn 3 scored 0.91"). This reads the same
weight table the ONNX graph holds, through the NumPy reference of its hashing
(echogate.features), so the phrases explain the shipped model, not a stand-in.

It runs on the scoring thread, on the most machine-like turn of each transcript a policy could
flag, all of them in one vectorised pass per batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from echogate.features import HashSpec, ngram_spans
from echogate.text import pack_turns

WEIGHT_TABLE = "ngram_weights"  # the graph's initializer (echogate.training.graph)
PHRASE_WORDS = 4  # words per phrase: long enough to read as wording, short enough to point at it
MAX_PHRASE_CHARS = 80


class PhraseExplainer:
    def __init__(self, weights: np.ndarray, spec: HashSpec, max_turn_bytes: int):
        self.weights = np.asarray(weights, np.float32)  # half the cache misses of float64
        self.spec = spec
        self.max_turn_bytes = max_turn_bytes

    @classmethod
    def from_onnx(cls, path: str | Path, meta: dict[str, str]) -> PhraseExplainer:
        """The explainer of a model file: its weight table and its hashing, from its metadata."""
        graph = onnx.load(str(path)).graph
        table = next(t for t in graph.initializer if t.name == WEIGHT_TABLE)

        def orders(key: str) -> tuple[int, ...]:  # a model from before word n-grams has no hash_word_orders
            return tuple(int(n) for n in meta.get(key, "").split(",") if n)

        spec = HashSpec(orders("hash_orders"), orders("hash_shape_orders"), int(meta["hash_table_size"]),
                        orders("hash_function_orders"), orders("hash_word_orders"))
        # the table is fixed point; its unit does not matter here: phrases are ranked and kept by
        # the sign of their sums, which any positive scale leaves alone
        return cls(numpy_helper.to_array(table), spec, int(meta["max_turn_bytes"]))

    def phrases(self, texts: Sequence[str], k: int = 2, words: int = PHRASE_WORDS) -> list[tuple[str, ...]]:
        """Up to k non-overlapping phrases of up to `words` words per (normalised) text, most
        machine-like first; only phrases whose n-grams add up to machine evidence (a positive sum).
        One vectorised pass over all the texts: no Python loop per byte, word or text but the last
        decoding of the chosen phrases."""
        if not texts:
            return []
        packed = pack_turns(list(texts), self.max_turn_bytes)
        stream, byte_turn = packed.stream, packed.byte_turn
        size = stream.shape[0]
        # each n-gram's weight, spread evenly over the bytes it spans: +share where it starts,
        # -share past its end, summed up. Within one stream and order no two n-grams start (or
        # end) at the same byte, so plain fancy-index adds do (a bincount of them all took 9 ms
        # for 256 turns, these 1)
        diff = np.zeros(size + 1)
        for hashes, starts, ends in ngram_spans(stream, byte_turn, self.spec):
            share = self.weights[hashes] / (ends - starts).astype(np.float32)
            diff[starts] += share
            diff[ends] -= share
        per_byte = np.cumsum(diff[:size])
        # words: runs of non-space bytes within a turn, each scored by the sum of its bytes' shares
        text = stream != ord(" ")
        new_turn = np.ones(size + 1, bool)
        new_turn[1:-1] = byte_turn[1:] != byte_turn[:-1]
        before = np.concatenate([[False], text[:-1]])
        after = np.concatenate([text[1:], [False]])
        word_begins = text & (new_turn[:-1] | ~before)
        first = np.flatnonzero(word_begins)
        last = np.flatnonzero(text & (new_turn[1:] | ~after))
        word_of_byte = np.cumsum(word_begins) - 1
        score = np.bincount(word_of_byte[text], per_byte[text], first.size)
        turn_of_word = byte_turn[first]
        # windows of `words` words starting at each word, kept within the turn (a shorter turn
        # has one window, all of it)
        turn_first = np.searchsorted(turn_of_word, turn_of_word)
        turn_end = np.searchsorted(turn_of_word, turn_of_word, side="right")
        index = np.arange(first.size)
        stop = np.minimum(index + words, turn_end)
        valid = (index + words <= turn_end) | (index == turn_first)
        cumulative = np.concatenate([[0.0], np.cumsum(score)])
        sums = np.where(valid, cumulative[stop] - cumulative[index], -np.inf)
        begins = np.flatnonzero(index == turn_first)  # each turn's first word
        chosen: list[list[str]] = [[] for _ in texts]
        for _ in range(k):
            best = self._best_per_turn(sums, begins, turn_end[begins] - begins)
            best = best[sums[best] > 0]
            for i in best.tolist():
                chosen[turn_of_word[i]].append(_decode(stream[first[i] : last[stop[i] - 1] + 1]))
            # the next phrase may not overlap this one: no window starting within `words` of it
            taken = np.full(first.size, -2 * words, np.int64)
            taken[turn_first[best]] = best  # at most one chosen window per turn per round
            sums = np.where(np.abs(index - taken[turn_first]) < words, -np.inf, sums)
        return [tuple(c) for c in chosen]

    @staticmethod
    def _best_per_turn(sums: np.ndarray, begins: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Index of the largest window sum of each turn (words begins[t] .. + counts[t]) that has
        a window left; the first, on a tie. Turns are contiguous runs: reduceat, no sort."""
        if sums.size == 0:
            return np.zeros(0, np.int64)
        top = np.maximum.reduceat(sums, begins)
        from_end = np.where(sums == np.repeat(top, counts), sums.size - np.arange(sums.size), 0)
        best = sums.size - np.maximum.reduceat(from_end, begins)
        return best[np.isfinite(top)]


def _decode(raw: np.ndarray) -> str:
    text = raw.tobytes().decode("utf-8", errors="replace")
    return text if len(text) <= MAX_PHRASE_CHARS else text[: MAX_PHRASE_CHARS - 1] + "…"
