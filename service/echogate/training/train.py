"""`echogate train`: fit the bot-origin model, validate it on held-out datasets, export ONNX.

The steps, in the order `train` takes them: the documents (data), what each fit trains on (rows),
the held-out folds (folds), one fit per fold and its out-of-fold scores (here), the calibration
fitted on those scores with the corpus signal (calibration), the repetitiveness head
(repetition), the final fit on every document (here), the graph (graph), and the report and
model card (card). Every setting is a field of config.TrainConfig.

Validation leaves whole datasets out (the label follows the dataset in most files, so a
random split would reward learning topic instead of origin). Each fold trains on every
other dataset and scores the held-out ones; the out-of-fold scores give the validation
table and, because they come from data each fold never saw, they also fit the Platt
calibration shipped in the model: probabilities calibrated for unseen data, not for the
training split.

The same confound decides what each file may teach. Raw byte n-grams carry topic, so they
learn in full only from files with both labels on matched content
(`TrainConfig.byte_ngram_datasets`); the other files' byte n-grams train at a reduced scale,
beside the topic-masked streams (writing-style classes and the function-word skeleton). The
model still reads every stream of every text it scores.
"""
from __future__ import annotations

import json
import logging
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import scipy.sparse as sp
from joblib import Parallel, delayed
from tqdm import tqdm

from echogate import evaluation
from echogate.text import NORMALIZATION_VERSION
from echogate.training.calibration import calibrate_and_report, simulate_seen
from echogate.training.card import render as render_card
from echogate.training.config import MAX_TURN_BYTES, TrainConfig
from echogate.training.data import Doc, chunk_docs, load_docs, source_dataset
from echogate.training.folds import headline_slice, in_collection_fold, in_macro, make_folds
from echogate.training.graph import build_graph
from echogate.training.logistic import LinearFit, fit_logistic
from echogate.training.repetition import train_head
from echogate.training.rows import Rows, TrainingData

log = logging.getLogger(__name__)


def fit(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, cfg: TrainConfig, pairs: Rows | None = None,
        on_iteration: Callable[[], object] | None = None) -> LinearFit:
    x, y, w = with_pairs(x, y, w, pairs)
    return fit_logistic(x, y, w, cfg.c, cfg.max_iter, on_iteration=on_iteration,
                        feature_scale=inverse_document_frequency(x) if cfg.idf else None)


def inverse_document_frequency(x: sp.csr_matrix, block: int = 1 << 26) -> np.ndarray:
    """Each column's smoothed inverse document frequency over the rows of x, scikit-learn's
    TfidfTransformer's: ln((1 + rows) / (1 + rows holding the column)) + 1. Counted a block of
    the stored indices at a time: np.bincount would copy a training matrix's indices whole as
    int64, gigabytes."""
    held = np.zeros(x.shape[1], np.int64)
    for start in range(0, x.indices.size, block):
        held += np.bincount(x.indices[start : start + block], minlength=x.shape[1])
    return np.log((1.0 + x.shape[0]) / (1.0 + held)) + 1.0


def with_pairs(x: sp.csr_matrix, y: np.ndarray, w: np.ndarray, pairs: Rows | None) -> Rows:
    """The rows a fit sees: the training set's, then the matched-pair rows below them."""
    if pairs is None or not pairs[1].size:
        return x, y, w
    return sp.vstack([x, pairs[0]]).tocsr(), np.concatenate([y, pairs[1]]), np.concatenate([w, pairs[2]])


def read_scores(clf: LinearFit, x: sp.csr_matrix, transcript: np.ndarray, count_power: float,
                pooled: np.ndarray) -> np.ndarray:
    """Raw scores of rows of `x` as the graph computes them (see graph.Calibration): a text's
    n-gram sum, without the model's intercept, over sqrt(its n-gram count) for a single text, as
    the model trained, and over pooled ** count_power for a transcript (`pooled`: the rows'
    pooled counts, see featurize). A row of `x` holds its n-gram counts over sqrt(their total), so the row sums
    to sqrt(total), and its score times that is the n-gram sum."""
    count = np.maximum(np.square(np.asarray(x.sum(axis=1)).ravel()), 1.0)
    evidence = clf.evidence(x)
    return np.where(transcript, evidence * np.sqrt(count) / np.maximum(pooled, 1.0) ** count_power, evidence)


def cross_validate(data: TrainingData, folds: dict[str, tuple[np.ndarray, np.ndarray]], usable: np.ndarray,
                   cfg: TrainConfig) -> dict[str, np.ndarray]:
    """Raw scores of each fold's held-out rows (read as the model reads them, data.x, transcripts
    over data.pooled ** cfg.transcript_count_power: see read_scores), from a model trained on the
    other `usable` rows' training features (data.rows) that never saw them (nor any pair with a
    held-out member)."""
    training, y, w = data.rows, data.y, data.w

    def one(excluded: np.ndarray) -> LinearFit:
        return fit(*training.select(y, w, usable & ~excluded), cfg)

    # the models come back and score here, so data.x never travels to the workers
    log.info("fitting %d held-out folds, %d at a time: the bar counts each fold's model as it comes back (on the "
             "shared data with 2 cores, the first after about 10 minutes, all after 35)", len(folds), cfg.jobs)
    models = fold_pool(cfg.jobs)(delayed(one)(excluded) for _, excluded in folds.values())
    scores = {}
    with tqdm(total=len(folds), desc="held-out folds", unit="fold") as progress, redrawn(progress):
        for (name, (test, _)), clf in zip(folds.items(), models):
            scores[name] = read_scores(clf, data.x[test], data.transcript[test], cfg.transcript_count_power,
                                       data.pooled[test])
            progress.update()
    return scores


@contextmanager
def redrawn(bar: tqdm, every: float = 5.0) -> Iterator[tqdm]:
    """`bar` redrawn every `every` seconds while the block runs, so that its clock moves between
    updates minutes apart (a held-out fold's fit): a bar that stands still reads as a hung run."""
    done = threading.Event()

    def redraw() -> None:
        while not done.wait(every):
            bar.refresh()

    thread = threading.Thread(target=redraw, name="progress", daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        done.set()
        thread.join()


def fold_pool(jobs: int) -> Parallel:
    """Held-out folds fitted one per process (the fit is single-threaded), results in order.
    The matrices the workers share are memory-mapped from the temporary folder on disk rather
    than /dev/shm, where they would hold as much RAM again (see TrainConfig.jobs)."""
    return Parallel(n_jobs=jobs, return_as="generator", temp_folder=tempfile.gettempdir())


def training_libraries() -> dict[str, str]:
    """Versions of what the fit depends on, for the report. An L-BFGS stopped early carries small
    numerical differences far: 0.5.0's config retrained on a fresh install gave other weights
    (held-out macro AUROC 0.788, not 0.777), so a rebuild should start from these versions (and a
    CPU like training_cpu's)."""
    return {"python": platform.python_version(),
            **{name: metadata.version(name) for name in ("numpy", "scipy", "scikit-learn", "onnx")}}


def training_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """The CPU the fit ran on, for the report: its model name and whether it has AVX2 and FMA. With
    both, the weights match any other such CPU's (logistic.fit_logistic); without them the C
    library's exp and log1p run other code, and a retrain can leave the shipped file's weights.
    `avx2_fma` is None where the system does not say (no /proc/cpuinfo)."""
    try:
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():  # the first processor's fields are every core's
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {"model": platform.processor() or platform.machine(), "avx2_fma": None}
    return {"model": fields.get("model name", platform.machine()),
            "avx2_fma": {"avx2", "fma"} <= set(fields.get("flags", "").split())}


def applicable_folds(folds: dict[str, tuple[np.ndarray, np.ndarray]], usable: np.ndarray,
                     y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The folds that hold something out and leave both labels to train on; each one that does
    not is logged (a file of the customer's that is all the machine data there is, say)."""
    kept = {}
    for name, (test, excluded) in folds.items():
        if not test.any():
            continue
        if np.unique(y[usable & ~excluded]).size < 2:
            log.warning("held-out fold %s is not fitted: the documents it leaves to train on have one label", name)
            continue
        kept[name] = (test, excluded)
    return kept


def dataset_names(cfg: TrainConfig) -> set[str]:
    """The datasets (file stems, chunk datasets) the configuration names."""
    return {*cfg.train_datasets, *cfg.byte_ngram_datasets, *cfg.chunk_datasets, *cfg.dataset_weights}


def training_docs(data_dir: Path, cfg: TrainConfig) -> list[Doc]:
    """The shared files' documents (data.load_docs) and the chunks cut from cfg.chunk_datasets."""
    docs = load_docs(data_dir, cfg.max_turn_docs_per_dataset, cfg.seed)
    return docs + chunk_docs(docs, cfg.chunk_datasets, cfg.chunk_min_words)


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    t0 = time.time()
    cpu = training_cpu()
    if cpu["avx2_fma"] is False:
        log.warning("%s has no AVX2 or no FMA: the C library's exp and log1p run other code here, so these "
                    "weights can differ from a build on a CPU with both (such as the shipped file's)", cpu["model"])
    docs = training_docs(data_dir, cfg)
    log.info("loaded %d documents from %s", len(docs), data_dir)
    unknown = sorted(dataset_names(cfg) - dataset_names(TrainConfig()) - {d.dataset for d in docs})
    if unknown:  # a misspelt name would change nothing, silently
        log.warning("the configuration names datasets that no file of %s gives: %s", data_dir, ", ".join(unknown))
    # before the long fits: it refuses data without the dialogues it needs
    head, repetition_rows = train_head(docs, cfg.seed)
    log.info("repetitiveness head: %s", head)
    data = TrainingData.build(docs, cfg)
    files = np.array([source_dataset(d.dataset) for d in docs])  # a chunk trains where its file does

    usable = np.isin(files, cfg.train_datasets) if cfg.train_datasets else np.ones(len(docs), bool)
    folds = applicable_folds(make_folds(docs), usable, data.y)
    if not folds:
        log.warning("no held-out fold applies to the files of %s (each needs documents to hold out and both labels "
                    "left to train on; see folds.make_folds): the model trains, but its calibration is not fitted "
                    "and its report validates nothing", data_dir)
    report_only = applicable_folds({"in_collection_support": in_collection_fold(docs)}, usable, data.y)
    fold_raw = cross_validate(data, {**folds, **report_only}, usable, cfg)
    seen = simulate_seen(docs, cfg.role_weights, cfg.seed, cfg.stream_size, cfg.seen_full_bytes)
    validation, calib = calibrate_and_report(docs, folds, fold_raw, seen, report_only, cfg.transcript_seen_weight,
                                             (cfg.transcript_count_power, cfg.transcript_turn_count_power))
    headline = [r for r in validation if r["fold"] in folds and in_macro(r["fold"]) and not np.isnan(r["auroc"])
                and r["slice"] == headline_slice(r["fold"])]
    macro = float(np.mean([r["auroc"] for r in headline])) if headline else float("nan")
    log.info("macro AUROC over held-out folds: %.3f", macro)

    with tqdm(total=cfg.max_iter, desc="final fit", unit="iteration") as progress:
        final = fit(*data.rows.select(data.y, data.w, usable), cfg, on_iteration=progress.update)
    model = build_graph(
        cfg.hash_spec, final.weights, calib["turn"], calib["transcript"], head,
        metadata={"model_version": cfg.version, "normalization": NORMALIZATION_VERSION,
                  "role_weights": json.dumps(cfg.role_weights), "max_turn_bytes": str(MAX_TURN_BYTES)},
        seen_full_bytes=cfg.seen_full_bytes,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out_dir / "bot_origin.onnx")
    report = {"config": asdict(cfg), "libraries": training_libraries(), "cpu": cpu,
              "calibration": {k: asdict(v) for k, v in calib.items()}, "macro_auroc": macro,
              "validation": validation,
              "repetition": {"head": asdict(head), "validation": repetition_rows},
              "documents": len(docs), "train_seconds": round(time.time() - t0, 1)}
    (out_dir / "training_report.json").write_text(json.dumps(evaluation.without_nan(report), indent=2,
                                                                     allow_nan=False))
    (out_dir / "MODEL_CARD.md").write_text(render_card(report))
    log.info("wrote %s in %.0fs", out_dir / "bot_origin.onnx", time.time() - t0)
    return report
