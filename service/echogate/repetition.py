"""Within-transcript repetitiveness, per turn and per transcript, for a whole batch at once.

A turn's repetitiveness is the share of its distinct word trigrams (lower-cased) that the
same role already used earlier in the same conversation: 1.0 for a verbatim repeat, high
for a template re-sent with one slot changed, 0 for new content. Turns of fewer than three
words have no trigram and score 0, so a repeated "Thanks." is not looping.

The transcript's score is the mean over agent turns (all turns when there is no agent
side): the share of the bot's output that was repetition.

Vectorised over the batch with NumPy (no Python loop per word): words are hashed from the
packed bytes with a position-weighted sum (np.add.reduceat, uint64 arithmetic wraps), word
trigrams combine three word hashes, and one sort by (conversation and role, trigram, turn)
tells for every trigram whether an earlier turn of the same role had it. Keys are 44-bit
hashes: a collision (odds about 1 in 10^13 per pair in a batch) could only mark a trigram
as repeated that was not.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

ROLE_CODES = {"customer": 0, "agent": 1, "system": 2}
_POSITION_WEIGHTS = np.random.default_rng(0x5EED).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_TURN_BITS = 20  # turns per batch stay below 2**20 (max_batch x max_turns is far less)
_TURN_MASK = np.uint64(2**_TURN_BITS - 1)


def turn_scores(normalized: Sequence[str], roles: Sequence[str], turn_transcript: np.ndarray) -> np.ndarray:
    """Per-turn repetitiveness (float64 [R]) for turns of several transcripts.

    `normalized` are whitespace-normalised turn texts (no newlines), `turn_transcript` the
    transcript index of each turn, non-decreasing.
    """
    n_turns = len(normalized)
    out = np.zeros(n_turns)
    if n_turns == 0:
        return out
    if n_turns >= 2**_TURN_BITS:  # beyond the sort key's turn field: split between transcripts
        cut = int(np.searchsorted(turn_transcript, turn_transcript[n_turns // 2]))
        if 0 < cut < n_turns:
            return np.concatenate([turn_scores(normalized[:cut], roles[:cut], turn_transcript[:cut]),
                                   turn_scores(normalized[cut:], roles[cut:], turn_transcript[cut:])])
        raise ValueError(f"one transcript of {n_turns} turns is beyond the repetition scorer's limit")
    b = np.frombuffer("\n".join(normalized).lower().encode("utf-8"), np.uint8)
    is_newline = b == 10
    content = ~(is_newline | (b == 32))
    idx = np.flatnonzero(content)
    if idx.size == 0:
        return out
    starts_mask = np.empty(idx.size, bool)
    starts_mask[0] = True
    starts_mask[1:] = idx[1:] != idx[:-1] + 1  # a gap means a separator came before
    word_starts = np.flatnonzero(starts_mask)
    word_index = np.cumsum(starts_mask) - 1
    pos_in_word = (np.arange(idx.size) - word_starts[word_index]) & 63
    contrib = (b[idx].astype(np.uint64) + np.uint64(1)) * _POSITION_WEIGHTS[pos_in_word]
    word_hash = np.add.reduceat(contrib, word_starts)
    word_turn = np.searchsorted(np.flatnonzero(is_newline), idx[word_starts])
    if word_hash.size < 3:
        return out
    same_turn = word_turn[:-2] == word_turn[2:]
    tri = (word_hash[:-2] * _K1 + word_hash[1:-1] * _K2 + word_hash[2:])[same_turn]
    tri_turn = word_turn[:-2][same_turn]
    if tri.size == 0:
        return out
    role_code = np.fromiter(map(ROLE_CODES.get, roles, repeat(3, n_turns)), np.uint64, n_turns)
    group = (np.asarray(turn_transcript).astype(np.uint64) * np.uint64(4) + role_code)[tri_turn]
    # Sort key: the top 44 bits hash (conversation and role, trigram), the low 20 bits are
    # the turn index, so one plain sort groups each key with its turns in order.
    key = ((tri ^ (group * _K3)) & ~_TURN_MASK) | tri_turn.astype(np.uint64)
    key.sort()
    k, turn = key >> np.uint64(_TURN_BITS), (key & _TURN_MASK).astype(np.int64)
    distinct = np.ones(k.size, bool)  # a trigram counts once per turn
    distinct[1:] = key[1:] != key[:-1]
    k, turn = k[distinct], turn[distinct]
    first = np.ones(k.size, bool)  # first turn of this role in this conversation to use it
    first[1:] = k[1:] != k[:-1]
    total = np.bincount(turn, minlength=n_turns)
    repeated = np.bincount(turn, weights=~first, minlength=n_turns)
    np.divide(repeated, total, out=out, where=total > 0)
    return out


def transcript_scores(turn_values: np.ndarray, roles: Sequence[str], turn_transcript: np.ndarray,
                      n_transcripts: int) -> np.ndarray:
    """Mean of per-turn values over each transcript's agent turns (all turns if it has none).

    `turn_values` is [R] (one score per turn: the result is [T]) or [k, R] (k scores per
    turn, sharing one pass over the roles: the result is [k, T]).
    """
    agent = np.fromiter((r == "agent" for r in roles), bool, len(roles))
    has_agent = np.bincount(turn_transcript, weights=agent, minlength=n_transcripts) > 0
    use = agent | ~has_agent[turn_transcript]
    count = np.bincount(turn_transcript, weights=use, minlength=n_transcripts)
    rows = np.atleast_2d(turn_values)
    means = np.zeros((len(rows), n_transcripts))
    for row, out in zip(rows, means):
        np.divide(np.bincount(turn_transcript, weights=row * use, minlength=n_transcripts), count, out=out,
                  where=count > 0)
    return means if np.ndim(turn_values) == 2 else means[0]
