"""Within-transcript repetitiveness, per turn and per transcript.

A turn's repetitiveness is how much of it was already said earlier in the same
conversation by the same role: 1.0 for an exact repeat (after normalisation), otherwise
the share of its word trigrams found in one earlier turn (containment), so a bot that
re-sends a template with one slot changed scores high while a short "yes" does not.
Turns too short to have a trigram count only exact repeats, and only when they carry
at least three words of content (so "Thanks." twice is not looping).

The transcript's score is the mean over agent turns (all turns when there is no agent
side): the share of the bot's output that was repetition.
"""
from __future__ import annotations

from collections.abc import Sequence

MIN_EXACT_WORDS = 3


def _trigrams(words: list[str]) -> set[tuple[str, str, str]]:
    return set(zip(words, words[1:], words[2:]))


def turn_repetitiveness(roles: Sequence[str], normalized: Sequence[str]) -> list[float]:
    scores: list[float] = []
    seen_text: dict[str, set[str]] = {}
    seen_grams: dict[str, list[set]] = {}
    for role, text in zip(roles, normalized):
        lowered = text.lower()
        words = lowered.split()
        grams = _trigrams(words)
        earlier = seen_grams.setdefault(role, [])
        if lowered in seen_text.setdefault(role, set()) and len(words) >= MIN_EXACT_WORDS:
            score = 1.0
        elif grams and earlier:
            score = max(len(grams & prev) for prev in earlier) / len(grams)
        else:
            score = 0.0
        scores.append(score)
        seen_text[role].add(lowered)
        if grams:
            earlier.append(grams)
    return scores


def transcript_repetitiveness(roles: Sequence[str], turn_scores: Sequence[float]) -> float:
    agent = [s for r, s in zip(roles, turn_scores) if r == "agent"]
    pool = agent or list(turn_scores)
    return sum(pool) / len(pool) if pool else 0.0
