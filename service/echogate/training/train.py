"""`echogate train`: fit the bot-origin model, validate it on held-out datasets, export ONNX.

Validation leaves whole datasets out (the label follows the dataset in most files, so a
random split would reward learning topic instead of origin). Each fold trains on every
other dataset and scores the held-out ones; the out-of-fold scores give the validation
table and, because they come from data each fold never saw, they also fit the Platt
calibration shipped in the model: probabilities calibrated for unseen data, not for the
training split.
"""
from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from echogate import evaluation
from echogate.features import HashSpec, ngram_hashes
from echogate.text import NORMALIZATION_VERSION, normalize, pack_turns
from echogate.training.card import render as render_card
from echogate.training.data import Doc, load_docs
from echogate.training.graph import build_graph

log = logging.getLogger(__name__)

ROLE_WEIGHTS = {"agent": 1.0, "customer": 0.5, "system": 0.0}
MAX_TURN_BYTES = 4096

# Held-out groups: each fold pairs machine and human data that share no dataset with training.
FOLDS: dict[str, tuple[str, ...]] = {
    "cucom_vs_taskmaster4": ("cucom_ecommerce", "taskmaster4"),
    "spc_vs_sgd": ("synthetic_persona_chat", "sgd"),
    "l2r": ("l2r",),
    "star": ("star_agent_turns", "star_dialogues"),
    "banking77": ("banking77",),
}


@dataclass
class TrainConfig:
    """Everything that determines the model; saved next to it for reproducibility."""

    version: str = "bot-origin-0.1.0"
    seed: int = 20261124
    orders: tuple[int, ...] = (3, 4, 5)
    shape_orders: tuple[int, ...] = ()
    table_size: int = 524_287
    c: float = 0.5
    max_iter: int = 300
    max_turn_docs_per_dataset: int = 30_000
    # Train only on these datasets (file stems); empty = all. Validation still scores every fold.
    train_datasets: tuple[str, ...] = ()
    # Extra weight per dataset (file stem), on top of the group balancing. Datasets with both
    # labels on matched content (l2r, STAR) teach origin rather than topic.
    dataset_weights: dict[str, float] = field(default_factory=dict)
    role_weights: dict[str, float] = field(default_factory=lambda: dict(ROLE_WEIGHTS))


def featurize(docs: list[Doc], spec: HashSpec, role_weights: dict[str, float], chunk: int = 4000) -> sp.csr_matrix:
    """Role-weighted hashed n-gram counts per document, divided by sqrt(weighted count)."""
    blocks = []
    for start in tqdm(range(0, len(docs), chunk), desc="features", unit="chunk", leave=False):
        part = docs[start : start + chunk]
        texts = [normalize(t) for d in part for t in d.texts]
        doc_of_turn = np.repeat(np.arange(len(part)), [len(d.texts) for d in part])
        weight_of_turn = np.array([role_weights.get(r, 0.0) for d in part for r in d.roles], np.float32)
        stream, turn_of_byte = pack_turns(texts, MAX_TURN_BYTES)
        hashes, turns = ngram_hashes(stream, turn_of_byte, spec)
        rows = doc_of_turn[turns]
        vals = weight_of_turn[turns]
        m = sp.csr_matrix((vals, (rows, hashes)), shape=(len(part), spec.table_size), dtype=np.float32)
        m.sum_duplicates()
        norm = np.sqrt(np.maximum(np.bincount(rows, weights=vals, minlength=len(part)), 1.0)).astype(np.float32)
        blocks.append(sp.diags(1.0 / norm) @ m)
    return sp.vstack(blocks).tocsr()


def group_weights(docs: list[Doc]) -> np.ndarray:
    """Every (dataset, label, kind) group gets the same total weight: no dataset dominates."""
    keys = [(d.dataset, d.label, d.kind) for d in docs]
    sizes: dict[tuple, int] = defaultdict(int)
    for k in keys:
        sizes[k] += 1
    w = np.array([1.0 / sizes[k] for k in keys])
    return w * len(docs) / w.sum()


def fit(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, cfg: TrainConfig) -> LogisticRegression:
    clf = LogisticRegression(C=cfg.c, max_iter=cfg.max_iter, solver="lbfgs")
    clf.fit(x, y, sample_weight=w)
    return clf


def platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """1-D logistic fit of labels on raw scores: the calibration map sigmoid(a*raw + b)."""
    lr = LogisticRegression(C=1e4).fit(raw.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def report_rows(docs: list[Doc], probs: np.ndarray, fold: str) -> list[dict]:
    """Validation rows for one held-out fold: by kind, short texts, and per generator."""
    rows = []
    y = np.array([d.label for d in docs])
    for kind in ("transcript", "turn"):
        sel = np.array([d.kind == kind for d in docs])
        if sel.any():
            rows.append({"fold": fold, "slice": f"{kind}s", **evaluation.summary(y[sel], probs[sel])})
            short = sel & np.array([len(" ".join(d.texts).split()) < 20 for d in docs])
            if short.any():
                rows.append({"fold": fold, "slice": f"{kind}s<20w", **evaluation.summary(y[short], probs[short])})
    gens = sorted({d.generator for d in docs if d.label == 1 and d.generator and not d.generator.startswith("template:")})
    if len(gens) > 1:
        for g in gens:
            sel = np.array([d.label == 0 or d.generator == g for d in docs])
            rows.append({"fold": fold, "slice": f"generator={g}", **evaluation.summary(y[sel], probs[sel])})
    return rows


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    t0 = time.time()
    spec = HashSpec(cfg.orders, cfg.shape_orders, cfg.table_size)
    docs = load_docs(data_dir, cfg.max_turn_docs_per_dataset, cfg.seed)
    log.info("loaded %d documents from %s", len(docs), data_dir)
    x = featurize(docs, spec, cfg.role_weights)
    y = np.array([d.label for d in docs])
    w = group_weights(docs) * np.array([cfg.dataset_weights.get(d.dataset, 1.0) for d in docs])
    datasets = np.array([d.dataset for d in docs])
    kinds = np.array([d.kind for d in docs])

    oof_raw = np.full(len(docs), np.nan)
    folds = {name: held for name, held in FOLDS.items() if np.isin(datasets, held).any()}
    usable = np.isin(datasets, cfg.train_datasets) if cfg.train_datasets else np.ones(len(docs), bool)
    for name, held in tqdm(folds.items(), desc="held-out folds", unit="fold"):
        test = np.isin(datasets, held)
        train_rows = usable & ~test
        clf = fit(x[train_rows], y[train_rows], w[train_rows], cfg)
        oof_raw[test] = clf.decision_function(x[test])

    calib = {k: platt(oof_raw[kinds == k], y[kinds == k]) for k in ("turn", "transcript")}
    oof_prob = np.where(kinds == "turn", 1 / (1 + np.exp(-(calib["turn"][0] * oof_raw + calib["turn"][1]))),
                        1 / (1 + np.exp(-(calib["transcript"][0] * oof_raw + calib["transcript"][1]))))
    rows = []
    for name, held in folds.items():
        sel = np.isin(datasets, held)
        rows += report_rows([d for d, s in zip(docs, sel) if s], oof_prob[sel], name)

    final = fit(x[usable], y[usable], w[usable], cfg)
    model = build_graph(
        spec, final.coef_[0], float(final.intercept_[0]), calib["turn"], calib["transcript"],
        metadata={"model_version": cfg.version, "normalization": NORMALIZATION_VERSION,
                  "role_weights": json.dumps(cfg.role_weights), "max_turn_bytes": str(MAX_TURN_BYTES)},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out_dir / "bot_origin.onnx")
    report = {"config": asdict(cfg), "calibration": calib, "validation": rows,
              "documents": len(docs), "train_seconds": round(time.time() - t0, 1)}
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2))
    (out_dir / "MODEL_CARD.md").write_text(render_card(report))
    log.info("wrote %s in %.0fs", out_dir / "bot_origin.onnx", time.time() - t0)
    return report
