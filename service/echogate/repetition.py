"""Within-transcript repetitiveness, per turn and per transcript.

A turn's repetitiveness is the share of its word trigrams (lower-cased) that the same
role already used earlier in the conversation: 1.0 for a verbatim repeat, high for a
template re-sent with one slot changed, 0 for new content. Turns of fewer than three
words have no trigram and score 0, so a repeated "Thanks." is not looping.

The transcript's score is the mean over agent turns (all turns when there is no agent
side): the share of the bot's output that was repetition. One set intersection per turn
against everything the role said before keeps this linear in the transcript length.
"""
from __future__ import annotations

from collections.abc import Sequence


def turn_repetitiveness(roles: Sequence[str], normalized: Sequence[str]) -> list[float]:
    scores: list[float] = []
    seen: dict[str, set[tuple[str, str, str]]] = {}
    for role, text in zip(roles, normalized):
        words = text.lower().split()
        grams = set(zip(words, words[1:], words[2:]))
        earlier = seen.setdefault(role, set())
        scores.append(len(grams & earlier) / len(grams) if grams else 0.0)
        earlier |= grams
    return scores


def transcript_repetitiveness(roles: Sequence[str], turn_scores: Sequence[float]) -> float:
    agent = [s for r, s in zip(roles, turn_scores) if r == "agent"]
    pool = agent or list(turn_scores)
    return sum(pool) / len(pool) if pool else 0.0
