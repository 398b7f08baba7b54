"""What a fit trains on: each document's features and weight, the matched pairs' difference rows,
and every row of a training run stacked once (TrainingRows, TrainingData).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from echogate.features import HashSpec, ngram_hashes
from echogate.text import model_texts, normalize_all, pack_turns
from echogate.training.config import MAX_TURN_BYTES, TrainConfig
from echogate.training.data import Doc, source_dataset


def featurize(docs: list[Doc], spec: HashSpec, role_weights: dict[str, float], turn_count_power: float = 1.0,
              chunk: int = 4000) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(byte n-grams, topic-masked n-grams, pooled count) per document.

    The n-grams are role-weighted hashed counts, both divided by sqrt(the document's weighted
    count of all its n-grams), as the graph divides; their sum is what the model reads (see
    split_training_features for why they come apart). The pooled count is what a transcript's
    raw score is read over (graph.Calibration, read_scores): its turns' n-gram counts, each
    raised to `turn_count_power`, role-weighted and added up, as the graph pools them; at 1 it
    is the weighted count the n-grams are divided by."""
    byte_spec = HashSpec(spec.orders, (), spec.table_size, (), spec.word_orders)  # words name the topic too
    masked_spec = HashSpec((), spec.shape_orders, spec.table_size, spec.function_orders)
    blocks: dict[str, list] = {"bytes": [], "masked": [], "pooled": [np.zeros(0)]}
    for start in tqdm(range(0, len(docs), chunk), desc="features", unit="chunk", leave=False):
        part = docs[start : start + chunk]
        texts = model_texts(normalize_all([t for d in part for t in d.texts]))
        doc_of_turn = np.repeat(np.arange(len(part)), [len(d.texts) for d in part])
        weight_of_turn = np.array([role_weights.get(r, 0.0) for d in part for r in d.roles], np.float32)
        packed = pack_turns(texts, MAX_TURN_BYTES)
        counts, turn_count = {}, np.zeros(len(texts))
        for name, part_spec in (("bytes", byte_spec), ("masked", masked_spec)):
            hashes, turns = ngram_hashes(packed.stream, packed.byte_turn, part_spec)
            rows, vals = doc_of_turn[turns], weight_of_turn[turns]
            counts[name] = sp.csr_matrix((vals, (rows, hashes)), shape=(len(part), spec.table_size), dtype=np.float32)
            counts[name].sum_duplicates()
            turn_count += np.bincount(turns, minlength=len(texts))

        def pooled(power: float) -> np.ndarray:
            return np.bincount(doc_of_turn, weights=weight_of_turn * turn_count**power, minlength=len(part))

        norm = sp.diags((1.0 / np.sqrt(np.maximum(pooled(1.0), 1.0))).astype(np.float32))
        for name, m in counts.items():
            blocks[name].append(norm @ m)
        blocks["pooled"].append(pooled(turn_count_power))
    return (sp.vstack(blocks["bytes"]).tocsr(), sp.vstack(blocks["masked"]).tocsr(),
            np.concatenate(blocks["pooled"]))


def split_training_features(byte_x: sp.csr_matrix, masked_x: sp.csr_matrix, docs: list[Doc],
                            byte_ngram_datasets: tuple[str, ...], other_scale: float
                            ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(what each document trains on, what the model reads when it scores it).

    A document of `byte_ngram_datasets`, or a chunk cut from one (data.source_dataset), trains on
    all its n-grams; any other trains on its topic-masked n-grams and its byte n-grams scaled by
    `other_scale`. Where the label follows
    the collection (SGD and Taskmaster human, CuCom and Synthetic-Persona-Chat machine), a
    byte n-gram's weight learns what the collection talks about ("latte", "reservation"), which
    no unseen collection shares, along with how its writer writes ("I sincerely apologize");
    where both labels share content (an l2r original and its rewrite, a STAR template and a
    typed turn of the same task) topic cancels and only origin is left to learn. Scoring,
    held-out scoring included, reads every n-gram in full.
    """
    return (trained_features(byte_x, masked_x, docs, byte_ngram_datasets, other_scale),
            (byte_x + masked_x).tocsr())


def trained_features(byte_x: sp.csr_matrix, masked_x: sp.csr_matrix, docs: list[Doc],
                     byte_ngram_datasets: tuple[str, ...], other_scale: float) -> sp.csr_matrix:
    """The first half of split_training_features: what each document trains on."""
    files = [source_dataset(d.dataset) for d in docs]
    scale = np.where(np.isin(files, byte_ngram_datasets), 1.0, other_scale).astype(np.float32)
    return (sp.diags(scale) @ byte_x + masked_x).tocsr()


def document_features(docs: list[Doc], cfg: TrainConfig) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(what each document trains on, what the model reads, its pooled count) under cfg: see
    featurize and split_training_features."""
    byte_x, masked_x, pooled = featurize(docs, cfg.hash_spec, cfg.role_weights, cfg.transcript_turn_count_power)
    return (*split_training_features(byte_x, masked_x, docs, cfg.byte_ngram_datasets, cfg.other_byte_ngram_scale),
            pooled)


def lowercased(docs: list[Doc]) -> list[Doc]:
    """The documents with every text lower-cased (TrainConfig.lowercase_share)."""
    return [replace(d, texts=tuple(t.lower() for t in d.texts)) for d in docs]


def lowercased_features(docs: list[Doc], cfg: TrainConfig) -> sp.csr_matrix | None:
    """What the documents' lower-cased copies train on (TrainingRows.build's `x_lower`); None when
    cfg.lowercase_share turns the copies off. Copies are never scored, so what the model reads
    of them is not built (a matrix as large as the training one)."""
    if cfg.lowercase_share <= 0:
        return None
    lower = lowercased(docs)
    byte_x, masked_x, _ = featurize(lower, cfg.hash_spec, cfg.role_weights)
    return trained_features(byte_x, masked_x, lower, cfg.byte_ngram_datasets, cfg.other_byte_ngram_scale)


def group_weights(docs: list[Doc]) -> np.ndarray:
    """Every (dataset, label, kind) group gets the same total weight: no dataset dominates."""
    keys = [(d.dataset, d.label, d.kind) for d in docs]
    sizes: dict[tuple, int] = defaultdict(int)
    for k in keys:
        sizes[k] += 1
    w = np.array([1.0 / sizes[k] for k in keys])
    return w * len(docs) / w.sum()


def document_weights(docs: list[Doc], cfg: TrainConfig) -> np.ndarray:
    """Each document's training weight: its group's balanced share (group_weights) times its
    dataset's extra weight (cfg.dataset_weights). The benches that refit the trainer's folds
    (bench/tokenised_folds.py, bench/group_robust_folds.py) read it here, so they weigh as it does."""
    return group_weights(docs) * np.array([cfg.dataset_weights.get(d.dataset, 1.0) for d in docs])


def matched_pairs(docs: list[Doc]) -> tuple[np.ndarray, np.ndarray]:
    """(machine, human) document indices of every machine text and the human original it
    rewrites (same `content` key)."""
    original = {d.content: i for i, d in enumerate(docs) if d.content is not None and d.label == 0}
    machine = [i for i, d in enumerate(docs) if d.label == 1 and d.content in original]
    return np.array(machine, np.int64), np.array([original[docs[i].content] for i in machine], np.int64)


def pair_rows(x: sp.csr_matrix, pairs: tuple[np.ndarray, np.ndarray], total_weight: float
              ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Difference rows for matched pairs: x(machine) - x(human) labelled machine, and its
    negation labelled human.

    A linear score ranks the rewrite above its original exactly when its weights dot the
    difference is positive; topic and content, shared by both texts, cancel in the
    difference, so these rows teach how a machine writes rather than what the collection is
    about (the l2r folds of the validation score higher with them). The two signs make the
    rows symmetric, so they move no intercept.
    """
    machine, human = pairs
    diff = x[machine] - x[human]
    return sp.vstack([diff, -diff]).tocsr(), *pair_targets(len(machine), total_weight)


def pair_targets(pairs: int, total_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """pair_rows' labels and weights: machine for each difference, then human for each
    negation, every row an equal share of `total_weight`."""
    return np.repeat([1, 0], pairs), np.full(2 * pairs, total_weight / max(2 * pairs, 1))


Rows = tuple[sp.csr_matrix, np.ndarray, np.ndarray]  # features, labels, weights


@dataclass(frozen=True)
class TrainingRows:
    """Every row a fit can train on, stacked once: the documents' training features, their
    lower-cased copies' when cfg.lowercase_share keeps them, then every matched pair's rows
    (pair_rows: each difference, then each negation).

    A fit's rows are indices into this matrix: each document as written and, lower-cased, again,
    the two splitting the document's weight by lowercase_share (splitting rather than adding
    keeps every group's total weight, so the regularisation reads the same); then the rows of
    the pairs both of whose documents are in training, weighing pair_weight times those
    documents' own weight. `select` takes them with one index. Sliced and stacked piece by
    piece, each fold process held its training matrix two to three times over; one index holds
    it once, and the fold processes share this matrix from disk (fold_pool)."""

    x: sp.csr_matrix
    documents: int
    lowercase_share: float  # 0: no lower-cased rows
    pair_weight: float  # 0: no pair rows
    pairs: tuple[np.ndarray, np.ndarray]

    @classmethod
    def build(cls, x_train: sp.csr_matrix, x_lower: sp.csr_matrix | None, pairs: tuple[np.ndarray, np.ndarray],
              cfg: TrainConfig) -> TrainingRows:
        share = cfg.lowercase_share if x_lower is not None and cfg.lowercase_share > 0 else 0.0
        pair_weight = cfg.pair_weight if cfg.pair_weight > 0 and pairs[0].size else 0.0
        blocks = [x_train] + ([x_lower] if share else []) + ([pair_rows(x_train, pairs, 0.0)[0]] if pair_weight else [])
        return cls(sp.vstack(blocks, format="csr"), x_train.shape[0], share, pair_weight, pairs)

    def document_index(self, y: np.ndarray, w: np.ndarray, rows: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row index, labels, weights) of the documents `rows` (a mask) and their lower-cased
        copies; row i % self.documents is the document a row holds."""
        docs = np.flatnonzero(rows)
        if not self.lowercase_share:
            return docs, y[rows], w[rows]
        return (np.concatenate([docs, self.documents + docs]), np.concatenate([y[rows], y[rows]]),
                np.concatenate([w[rows] * (1.0 - self.lowercase_share), w[rows] * self.lowercase_share]))

    def pair_index(self, w: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row index, labels, weights) of the pairs both of whose documents are among `rows`."""
        machine, human = self.pairs
        kept = np.flatnonzero(rows[machine] & rows[human]) if self.pair_weight else np.zeros(0, np.int64)
        start = self.documents * (2 if self.lowercase_share else 1)
        total = self.pair_weight * float(w[np.union1d(machine[kept], human[kept])].sum())
        return (np.concatenate([start + kept, start + len(machine) + kept]), *pair_targets(kept.size, total))

    def documents_of(self, y: np.ndarray, w: np.ndarray, rows: np.ndarray) -> Rows:
        index, labels, weights = self.document_index(y, w, rows)
        return self.x[index], labels, weights

    def pairs_of(self, w: np.ndarray, rows: np.ndarray) -> Rows | None:
        index, labels, weights = self.pair_index(w, rows)
        return (self.x[index], labels, weights) if index.size else None

    def select(self, y: np.ndarray, w: np.ndarray, rows: np.ndarray) -> Rows:
        """What a fit of the documents `rows` trains on: documents_of's rows, then pairs_of's,
        in one index (the two as fit(*documents_of(...), cfg, pairs_of(...)) stacks them).

        A fit of every row in order (the shipped model's) gets `x` itself rather than a copy:
        3.6 GB less for the trainer's final fit. The matrix is shared, so it is not to be
        changed in place."""
        parts = (self.document_index(y, w, rows), self.pair_index(w, rows))
        index = np.concatenate([p[0] for p in parts])
        whole = index.size == self.x.shape[0] and bool((index == np.arange(index.size)).all())
        return (self.x if whole else self.x[index], np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))


@dataclass(frozen=True)
class TrainingData:
    """A run's documents and all that its fits and held-out scoring read of them, built once.

    `train` starts from here, and so do the benches that refit its folds with its rows (in bench/:
    dialogue_evidence, distill_folds, fit_determinism, group_robust_folds, tokenised_folds): they
    fit and score the documents, features and weights the trainer does."""

    docs: list[Doc]
    rows: TrainingRows  # what fits train on
    x: sp.csr_matrix  # what the model reads of each document when it scores it (split_training_features)
    pooled: np.ndarray  # the count a transcript's raw score is read over (featurize)
    y: np.ndarray  # labels, 1 machine
    w: np.ndarray  # document_weights
    transcript: np.ndarray  # a dialogue rather than a single text

    @classmethod
    def build(cls, docs: list[Doc], cfg: TrainConfig) -> TrainingData:
        x_train, x, pooled = document_features(docs, cfg)
        rows = TrainingRows.build(x_train, lowercased_features(docs, cfg), matched_pairs(docs), cfg)
        return cls(docs, rows, x, pooled, np.array([d.label for d in docs]), document_weights(docs, cfg),
                   np.array([d.kind == "transcript" for d in docs]))
