"""The calibration shipped in the graph, fitted on out-of-fold scores, and the corpus signal it
is fitted with: each document's seen-before value as `echogate score` would count it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from echogate.corpus import CorpusMemory, turn_keys
from echogate.text import model_texts, normalize_all, pack_turns
from echogate.training.config import MAX_TURN_BYTES
from echogate.training.data import Doc, is_chunk
from echogate.training.folds import SHARED_FILES, report_rows
from echogate.training.graph import Calibration, seen_scale

EXACT_SINGLE_TEXTS = ("star_agent_turns", "star_dialogues", "l2r", "banking77")


def fit_calibration(raw: np.ndarray, seen: np.ndarray, y: np.ndarray, fold: np.ndarray,
                    seen_weight: float | None = None) -> Calibration:
    """Calibration on out-of-fold scores: sigmoid(scale * raw + offset + seen_weight * seen).

    A weighted logistic fit in which every held-out fold weighs the same, so no one
    dataset's size sets the slopes; the offset is then refitted with both labels of each
    fold weighing the same, so that no collection's machine share becomes the prior. Both
    slopes are kept non-negative: a map that inverts the model's score is not a
    calibration, and a turn repeated verbatim across conversations is evidence of a script,
    never of a person. Where a fit wants a negative corpus weight (human collections whose
    writers reused formulaic lines), the signal is dropped rather than inverted. A given
    `seen_weight` is kept as it is and the other two fitted around it.
    """
    def balanced(groups: np.ndarray) -> np.ndarray:
        _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        w = 1.0 / sizes[inverse]
        return w * len(w) / w.sum()

    def fit(w: np.ndarray, free: np.ndarray, start: np.ndarray) -> np.ndarray:
        def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
            z = params[0] * raw + params[1] + params[2] * seen
            g = w * (1 / (1 + np.exp(-z)) - y)
            return float(np.sum(w * (np.logaddexp(0, z) - y * z))), np.array([g @ raw, g.sum(), g @ seen]) * free

        bounds = [(0.0, None), (None, None), (0.0, None)]
        return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x

    free_seen = 1.0 if seen_weight is None else 0.0
    scale, _, beta = fit(balanced(fold), np.array([1.0, 1.0, free_seen]), np.array([1.0, 0.0, seen_weight or 0.0]))
    _, offset, _ = fit(balanced(np.char.add(fold.astype(str), y.astype(str))), np.array([0.0, 1.0, 0.0]),
                       np.array([scale, 0.0, beta]))
    return Calibration(float(scale), float(offset), float(beta))


def apply_calibration(cal: Calibration, raw: np.ndarray, seen: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(cal.scale * raw + cal.offset + cal.seen_weight * seen)))


def calibrated(cal: dict[str, Calibration], kinds: np.ndarray, raw: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Probabilities of documents of these kinds: the single-text calibration for turns, the
    dialogue calibration for transcripts, as the graph applies them."""
    return np.where(kinds == "turn", apply_calibration(cal["turn"], raw, seen),
                    apply_calibration(cal["transcript"], raw, seen))


@dataclass(frozen=True)
class SimulatedStream:
    """One stream of simulate_seen's: its documents, their turns' roles in order, each turn's
    count in the stream before it (CorpusMemory.observe) and its length as the model reads it,
    and how many turns each document has."""

    docs: np.ndarray
    roles: list[str]
    prior: np.ndarray
    model_lengths: np.ndarray
    turns: np.ndarray


def simulated_streams(docs: list[Doc], seed: int, stream_size: int) -> Iterator[SimulatedStream]:
    """Each dataset's documents shuffled (seeded) and cut into streams of `stream_size` (a
    customer's file, or a day of one source), each counted from an empty CorpusMemory, exactly
    as `echogate score` counts a file."""
    rng = np.random.default_rng(seed)
    dataset = np.array([d.dataset for d in docs])
    for name in sorted(set(dataset)):
        order = rng.permutation(np.flatnonzero(dataset == name))
        for start in range(0, len(order), stream_size):
            chunk = order[start : start + stream_size]
            roles = [r for i in chunk for r in docs[i].roles]
            texts = normalize_all([t for i in chunk for t in docs[i].texts])
            packed = pack_turns(texts, MAX_TURN_BYTES)
            turns = np.array([len(docs[i].texts) for i in chunk])
            # keys from the normalised turns, the length scale from the turns as the model reads them
            read = model_texts(texts)
            model_lengths = (packed if read is texts else pack_turns(read, MAX_TURN_BYTES)).lengths
            prior = CorpusMemory().observe([str(i) for i in chunk], turn_keys(packed, roles), turns.tolist())
            yield SimulatedStream(chunk, roles, prior, model_lengths, turns)


def simulate_seen(docs: list[Doc], role_weights: dict[str, float], seed: int, stream_size: int,
                  seen_full_bytes: int) -> np.ndarray:
    """The corpus signal each document would get in a stream, as the calibration in the graph reads it.

    In simulated_streams, a turn gets log1p(prior count) scaled by graph.seen_scale; a
    document gets the turn's value for a single turn, the role-weighted mean for a transcript.
    """
    feature = np.zeros(len(docs))
    for stream in simulated_streams(docs, seed, stream_size):
        seen = np.log1p(stream.prior) * seen_scale(stream.model_lengths, seen_full_bytes)
        weight = np.array([role_weights.get(r, 0.0) for r in stream.roles])
        doc = np.repeat(np.arange(len(stream.docs)), stream.turns)
        pooled = np.bincount(doc, weights=weight * seen, minlength=len(stream.docs)) / np.maximum(
            np.bincount(doc, weights=weight, minlength=len(stream.docs)), 1e-6)
        # a single text's signal is its own turn's, whatever its role weight (as in the graph)
        feature[stream.docs] = np.where(stream.turns == 1, seen[np.cumsum(stream.turns) - 1], pooled)
    return feature



def calibrate_and_report(docs: list[Doc], folds: dict[str, tuple[np.ndarray, np.ndarray]],
                         fold_raw: dict[str, np.ndarray], seen: np.ndarray,
                         report_only: dict[str, tuple[np.ndarray, np.ndarray]], transcript_seen_weight: float | None,
                         transcript_powers: tuple[float, float]) -> tuple[list[dict], dict[str, Calibration]]:
    """Fit the shipped calibration on the out-of-fold scores of `folds` (transcripts' read at
    `transcript_powers`, graph.Calibration's (count_power, turn_count_power): see read_scores),
    and report each fold with a calibration fitted on the *other* folds, so its probabilities
    are held out too; then report each fold of `report_only` with the shipped calibration,
    which never saw its scores."""
    y = np.array([d.label for d in docs])
    kinds = np.array([d.kind for d in docs])
    # Single texts are calibrated where each one's label is exact: STAR turns (matched content,
    # template or typed), l2r paragraphs (matched content, original or rewrite) and BANKING77
    # messages (short human text), and the plain-text records of a file beside the shared ones
    # (folds.SHARED_FILES), labelled one by one. A turn cut out of another dialogue only inherits
    # the dialogue's label: a customer's "yes" in an LLM-written dialogue says nothing of how
    # machine text reads.
    exact_turn = np.array([d.kind == "turn" and (d.dataset in EXACT_SINGLE_TEXTS or (
        d.dataset not in SHARED_FILES and d.conversation is None and not is_chunk(d.dataset))) for d in docs])
    fold_of = np.full(len(docs), "", dtype=object)
    raw = np.full(len(docs), np.nan)
    for name, (test, _) in folds.items():  # a row in several folds' test sets keeps the last
        fold_of[test], raw[test] = name, fold_raw[name]

    def calibrate(rows: np.ndarray) -> dict[str, Calibration]:
        out = {}
        for k, r, weight in (("turn", rows & exact_turn, None),
                             ("transcript", rows & (kinds == "transcript"), transcript_seen_weight)):
            out[k] = fit_calibration(raw[r], seen[r], y[r], fold_of[r], weight)
        out["transcript"] = replace(out["transcript"], count_power=transcript_powers[0],
                                    turn_count_power=transcript_powers[1])
        return out

    scored = ~np.isnan(raw)
    rows = []
    for name, (test, _) in folds.items():
        probs = calibrated(calibrate(scored & (fold_of != name)), kinds[test], fold_raw[name], seen[test])
        rows += report_rows([d for d, s in zip(docs, test) if s], probs, name)
    shipped = calibrate(scored)
    for name, (test, _) in report_only.items():
        probs = calibrated(shipped, kinds[test], fold_raw[name], seen[test])
        rows += report_rows([d for d, s in zip(docs, test) if s], probs, name)
    return rows, shipped
