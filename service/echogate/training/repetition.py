"""Fit the repetitiveness head: which mix of repetition features marks a needless repeat.

No file in the shared data labels repetition, so the head learns from controlled edits of
real dialogues: at a random agent turn that has earlier turns, either the original turn
stays (a negative) or it is replaced by a redundant one built from what was said before (a
positive), one of four kinds (shares in KIND_SHARES):

- ``verbatim``   an earlier agent turn sent again;
- ``partial``    an earlier agent turn with a fifth to two fifths of its words dropped, the
                 original turn's opening words in front (a template re-sent with changes);
- ``sentence``   one sentence of an earlier agent turn appended to the original turn;
- ``echo``       the customer's last turn said back, restated like ``partial``.

Negatives are the real turns at those positions, repetitive ones included (a wizard who
re-sends a template is a negative here), so the head cannot mistake every overlap for a
repeat. Validation leaves one dialogue collection out at a time; the shipped head is fitted
on all of them, classes balanced: its probability reads "redundant", at even odds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from echogate import evaluation, repetition
from echogate.text import normalize_all
from echogate.training.data import Doc, TrainingDataError

KINDS = ("verbatim", "partial", "sentence", "echo")
KIND_SHARES = (0.3, 0.3, 0.3, 0.1)  # echoing the customer is often a confirmation, not a repeat
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


CORPUS_HALF_COUNT = 4.0


@dataclass(frozen=True)
class RepetitionHead:
    """P(redundant) = sigmoid(weights . TURN_FEATURES + bias) per turn; in a transcript's score a
    turn seen in c earlier transcripts also counts as repetition by c / (c + corpus_half_count)."""

    weights: tuple[float, ...]
    bias: float
    corpus_half_count: float = CORPUS_HALF_COUNT


@dataclass(frozen=True)
class Example:
    roles: tuple[str, ...]
    texts: tuple[str, ...]  # the dialogue up to and including the judged (last) turn
    label: int
    kind: str
    dataset: str


def _restated(rng: np.random.Generator, source: str, original: str) -> str | None:
    """`source` with a fifth to two fifths of its words dropped, the original's opening words in front."""
    words = source.split()
    keep = rng.random(len(words)) >= rng.uniform(0.2, 0.4)
    lead = original.split()[: rng.integers(1, 5)]
    return " ".join(lead + [w for w, k in zip(words, keep) if k]) if keep.sum() >= 3 else None


def _redundant(rng: np.random.Generator, kind: str, earlier_agent: list[str], last_customer: str | None,
               original: str) -> str | None:
    source = earlier_agent[rng.integers(len(earlier_agent))]
    if kind == "verbatim":
        return source
    if kind == "partial":
        return _restated(rng, source, original)
    if kind == "sentence":
        sentences = [s for s in _SENTENCE.split(source) if len(s.split()) >= 3]
        return f"{original} {sentences[rng.integers(len(sentences))]}" if sentences else None
    return _restated(rng, last_customer, original) if last_customer else None  # echo


def make_examples(docs: list[Doc], seed: int, per_dataset: int = 3000) -> list[Example]:
    """Positive and negative judged turns from the dialogues of each collection."""
    rng = np.random.default_rng(seed)
    by_dataset: dict[str, list[Doc]] = {}
    for d in docs:
        if d.kind == "transcript" and d.roles.count("agent") >= 2:
            by_dataset.setdefault(d.dataset, []).append(d)
    examples = []
    for name in sorted(by_dataset):
        pool = by_dataset[name]
        for i in rng.permutation(len(pool))[:per_dataset]:
            d = pool[i]
            agent_at = [j for j, r in enumerate(d.roles) if r == "agent"][1:]
            j = agent_at[rng.integers(len(agent_at))]
            roles, texts = d.roles[: j + 1], list(d.texts[: j + 1])
            earlier_agent = [t for r, t in zip(roles[:j], texts[:j]) if r == "agent"]
            last_customer = next((t for r, t in zip(roles[j - 1 :: -1], texts[j - 1 :: -1]) if r == "customer"), None)
            examples.append(Example(roles, tuple(texts), 0, "original", name))
            kind = KINDS[rng.choice(len(KINDS), p=KIND_SHARES)]
            text = _redundant(rng, kind, earlier_agent, last_customer, texts[j])
            if text:
                examples.append(Example(roles, tuple(texts[:j] + [text]), 1, kind, name))
    return examples


def features(examples: list[Example]) -> np.ndarray:
    """TURN_FEATURES of each example's judged (last) turn, computed as the scorer does."""
    counts = [len(e.texts) for e in examples]
    rep = repetition.analyse_texts(normalize_all([t for e in examples for t in e.texts]),
                                   [r for e in examples for r in e.roles], np.repeat(np.arange(len(examples)), counts),
                                   len(examples))
    return rep.turn[np.cumsum(counts) - 1].astype(np.float64)


def _fit(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit(x, y)


def train_head(docs: list[Doc], seed: int) -> tuple[RepetitionHead, list[dict]]:
    """The shipped head and its validation rows (one collection held out at a time, per kind,
    where another is left to fit on)."""
    examples = make_examples(docs, seed)
    if not examples:
        raise TrainingDataError("the repetitiveness head needs dialogues with at least two agent turns, and no "
                                "training file has one")
    x = features(examples)
    y = np.array([e.label for e in examples])
    dataset = np.array([e.dataset for e in examples])
    kind = np.array([e.kind for e in examples])
    rows = []
    for name in sorted(set(dataset)):
        held = dataset == name
        if held.all():
            break
        p = _fit(x[~held], y[~held]).predict_proba(x[held])[:, 1]
        rows.append({"held_out": name, "kind": "all", **evaluation.summary(y[held], p)})
        for k in KINDS:
            sel = held & ((kind == k) | (y == 0))
            rows.append({"held_out": name, "kind": k, **evaluation.summary(y[sel], p[sel[held]])})
    final = _fit(x, y)
    return RepetitionHead(tuple(float(w) for w in final.coef_[0]), float(final.intercept_[0])), rows
