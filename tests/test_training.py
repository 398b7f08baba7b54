"""The trainer's features and matched-pair rows: what each file trains on, what pairs, how they
are built, and that they teach style."""
from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from tqdm import tqdm

from echogate import evaluation
from echogate.features import HashSpec, ngram_hashes
from echogate.model import BotOriginModel
from echogate.text import NORMALIZATION_VERSION, model_texts, normalize_all, pack_turns
from echogate.training.card import render as render_card
from echogate.training.data import (Doc, TrainingDataError, chunk_docs, content_key, load_docs, read_records,
                                    sentence_chunks)
from echogate.training.graph import Calibration, build_graph
from echogate.training.repetition import RepetitionHead
from echogate.training.calibration import fit_calibration
from echogate.training.config import ROLE_WEIGHTS, ConfigError, TrainConfig
from echogate.training.folds import in_collection_fold, make_folds, report_rows
from echogate.training.rows import (TrainingRows, document_weights, featurize, lowercased, matched_pairs, pair_rows,
                                    split_training_features)
from echogate.training.train import fit, inverse_document_frequency, read_scores, redrawn, train, training_cpu
from tests.conftest import DATASETS, needs_datasets, run_cli, strict_json

SHIPPED_REPORT = Path(__file__).resolve().parents[1] / "service/echogate/models/training_report.json"


def doc(label: int, content: str | None, dataset: str = "l2r") -> Doc:
    return Doc(dataset, label, None, "d", "turn", ("agent",), ("text",), content)


def test_content_key_pairs_l2r_items_only():
    assert content_key("l2r", "l2r/Finance/GPT-3-Turbo/7") == content_key("l2r", "l2r/Finance/human/7") == "Finance/7"
    assert content_key("l2r", "l2r/Finance/human/8") != "Finance/7"
    assert content_key("sgd", "sgd/train/1") is None


def test_every_group_weighs_the_same_before_a_datasets_extra_weight():
    # three human l2r texts and one machine one: each (dataset, label, kind) group gets half the total,
    # then l2r's extra weight applies to all of them and SGD's absence of one leaves it at 1
    docs = [doc(0, None), doc(0, None), doc(0, None), doc(1, None)]
    w = document_weights(docs, TrainConfig(dataset_weights={"l2r": 10.0}))
    np.testing.assert_allclose(w, [10 * 2 / 3] * 3 + [10 * 2.0])
    mixed = document_weights([doc(0, None), doc(0, None, "sgd")], TrainConfig(dataset_weights={"l2r": 10.0}))
    np.testing.assert_allclose(mixed, [10.0, 1.0])


def test_matched_pairs_join_each_rewrite_to_its_original():
    docs = [doc(0, "a/1"), doc(1, "a/1"), doc(1, "a/1"), doc(1, "a/2"), doc(0, None, "sgd"), doc(0, "b/1")]
    machine, human = matched_pairs(docs)
    assert machine.tolist() == [1, 2] and human.tolist() == [0, 0]  # a/2 has no original, b/1 no rewrite
    assert [a.size for a in matched_pairs([doc(0, None, "sgd")])] == [0, 0]


def test_pair_rows_are_signed_differences_with_the_given_weight():
    x = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 2.0]]))
    rows, y, w = pair_rows(x, (np.array([1]), np.array([0])), total_weight=4.0)
    np.testing.assert_array_equal(rows.toarray(), [[-1.0, 3.0, 0.0], [1.0, -3.0, 0.0]])
    assert y.tolist() == [1, 0] and w.tolist() == [2.0, 2.0]


def test_pair_rows_drop_pairs_with_a_member_outside_training():
    x = sp.csr_matrix(np.eye(4))
    w = np.array([1.0, 2.0, 3.0, 4.0])
    pairs = (np.array([1, 3]), np.array([0, 2]))
    training = TrainingRows.build(x, None, pairs, TrainConfig(pair_weight=0.5))
    rows, labels, weight = training.pairs_of(w, np.array([True, True, True, False]))
    np.testing.assert_array_equal(rows.toarray(), [[-1.0, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0]])  # only (1, 0)
    assert labels.tolist() == [1, 0] and weight.sum() == 0.5 * (1.0 + 2.0)
    assert training.pairs_of(w, np.array([False, True, False, True])) is None  # each pair has a member out
    assert TrainingRows.build(x, None, pairs, TrainConfig(pair_weight=0.0)).pairs_of(w, np.ones(4, bool)) is None


def test_lower_cased_copies_split_each_training_documents_weight():
    docs = [Doc("l2r", 1, "g", "d", "turn", ("agent", "customer"), ("Happy To Help!", "OK, THANKS"), "d/1")]
    (low,) = lowercased(docs)
    assert low.texts == ("happy to help!", "ok, thanks") and low.roles == docs[0].roles and low.content == "d/1"

    x, x_lower = sp.csr_matrix(np.eye(3)), sp.csr_matrix(2 * np.eye(3))
    y, w, rows = np.array([0, 1, 1]), np.array([1.0, 2.0, 4.0]), np.array([True, False, True])
    no_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    training = TrainingRows.build(x, x_lower, no_pairs, TrainConfig(lowercase_share=0.25))
    xs, ys, ws = training.documents_of(y, w, rows)
    np.testing.assert_array_equal(xs.toarray(), [[1, 0, 0], [0, 0, 1], [2, 0, 0], [0, 0, 2]])
    assert ys.tolist() == [0, 1, 0, 1] and ws.tolist() == [0.75, 3.0, 0.25, 1.0]  # each document's total kept
    for off in (TrainingRows.build(x, None, no_pairs, TrainConfig(lowercase_share=0.25)),
                TrainingRows.build(x, x_lower, no_pairs, TrainConfig(lowercase_share=0.0))):
        xs, _, ws = off.documents_of(y, w, rows)
        np.testing.assert_array_equal(xs.toarray(), np.eye(3)[rows])
        assert ws.tolist() == [1.0, 4.0]


@pytest.mark.parametrize("lowercase_share, pair_weight", [(0.5, 1.0), (0.0, 1.0), (0.5, 0.0), (0.0, 0.0)])
def test_training_rows_select_is_the_documents_then_the_pairs_in_one_index(lowercase_share, pair_weight):
    """TrainingRows.select takes a fit's rows with one index; it must hand a fit the same matrix,
    bit for bit and in the same order, as the documents' rows stacked with the pairs' (what
    fit(*documents_of(...), cfg, pairs_of(...)) trains on), labels and weights too, or the
    trainer and the benches that change one part would fit other problems. Masks that keep
    every pair, some, or none; a mask of every document (the final fit) gets the matrix itself."""
    rng = np.random.default_rng(7)
    n = 60
    x_train = sp.random(n, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    x_lower = sp.random(n, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    y, w = rng.integers(0, 2, n), rng.random(n) + 0.5
    pairs = (np.arange(0, 20, 2), np.arange(1, 20, 2))
    training = TrainingRows.build(x_train, x_lower, pairs, TrainConfig(lowercase_share=lowercase_share,
                                                                       pair_weight=pair_weight))
    everything, half, unpaired = np.ones(n, bool), rng.random(n) < 0.5, np.arange(n) >= 20
    for rows in (everything, half, unpaired):
        documents, paired = training.documents_of(y, w, rows), training.pairs_of(w, rows)
        want = documents if paired is None else (sp.vstack([documents[0], paired[0]]).tocsr(),
                                                 np.concatenate([documents[1], paired[1]]),
                                                 np.concatenate([documents[2], paired[2]]))
        got = training.select(y, w, rows)
        for a, b in ((got[0].data, want[0].data), (got[0].indices, want[0].indices),
                     (got[0].indptr, want[0].indptr), (got[1], want[1]), (got[2], want[2])):
            assert a.dtype.kind == b.dtype.kind and np.array_equal(a, b)
        assert got[0].shape == want[0].shape
        assert (got[0] is training.x) == (rows is everything)  # a fit of every row shares the matrix, no copy
        # the documents' rows are the documents' own features, the lower-cased copies below them
        np.testing.assert_array_equal(documents[0][: rows.sum()].toarray(), x_train[rows].toarray())
        if lowercase_share:
            np.testing.assert_array_equal(documents[0][rows.sum():].toarray(), x_lower[rows].toarray())
        if paired is not None:  # each kept pair's difference, then its negation
            machine, human = pairs
            kept = rows[machine] & rows[human]
            diff = (x_train[machine[kept]] - x_train[human[kept]]).toarray()
            np.testing.assert_array_equal(paired[0].toarray(), np.vstack([diff, -diff]))
    assert (training.pairs_of(w, half) is not None) == bool(pair_weight)  # the half mask keeps some pairs


def test_pairs_teach_the_style_feature_that_topic_hides():
    """Unpaired data where the label follows the topic (column 0) and a noisy style cue
    (column 1): without pairs the model leans on topic; rewrites of the same content that
    differ only in style make it weigh style more than twice as much."""
    rng = np.random.default_rng(0)
    n = 400
    label = np.repeat([0, 1], n // 2)
    topic = label.astype(float)
    style = np.where(rng.random(n) < 0.6, label, 1 - label).astype(float)
    x = sp.csr_matrix(np.column_stack([topic, style, np.ones(n)]))
    # matched pairs: same (unseen) topic 0, style 1 for the rewrite, 0 for the original
    originals = sp.csr_matrix(np.column_stack([np.zeros(50), np.zeros(50), np.ones(50)]))
    rewrites = sp.csr_matrix(np.column_stack([np.zeros(50), np.ones(50), np.ones(50)]))
    cfg = TrainConfig(c=1.0)
    both = sp.vstack([x, originals, rewrites]).tocsr()
    pairs = (np.arange(n + 50, n + 100), np.arange(n, n + 50))
    plain = fit(x, label, np.ones(n), cfg)
    paired = fit(x, label, np.ones(n), cfg, pair_rows(both, pairs, total_weight=float(n)))
    assert paired.weights[1] > 2 * plain.weights[1] > 0


def test_features_read_as_the_graph_reads_and_only_matched_content_trains_byte_ngrams_in_full():
    """The two parts add up to one row per document as the graph scores it (role-weighted hashed
    counts over all streams, divided by sqrt of the weighted count); a document of a file whose
    label follows the collection trains with its byte n-grams scaled down, and scores with them; a
    chunk trains as the file it was cut from."""
    spec = HashSpec((3, 4), (4,), 1 << 12, (6,), (1, 2))
    docs = [Doc("sgd", 0, None, "d", "transcript", ("customer", "agent"), ("book a table", "Which city, please?")),
            Doc("l2r", 1, "g", "d", "turn", ("agent",), ("A rewritten paragraph of text.",), "d/1"),
            Doc("l2r_chunks", 1, "g", "d", "turn", ("agent",), ("A rewritten sentence.",))]
    byte_x, masked_x, _ = featurize(docs, spec, ROLE_WEIGHTS)
    x_train, x = split_training_features(byte_x, masked_x, docs, ("l2r",), 0.25)
    for i, d in enumerate(docs):
        packed = pack_turns(normalize_all(list(d.texts)), 4096)
        hashes, turns = ngram_hashes(packed.stream, packed.byte_turn, spec)
        weights = np.array([ROLE_WEIGHTS[r] for r in d.roles])[turns]
        expected = np.bincount(hashes, weights=weights, minlength=spec.table_size) / np.sqrt(weights.sum())
        np.testing.assert_allclose(x[i].toarray()[0], expected, rtol=1e-6)
    assert byte_x[0].nnz and masked_x[0].nnz
    # sgd: its byte n-grams at the given scale
    np.testing.assert_allclose(x_train[0].toarray(), (0.25 * byte_x[0] + masked_x[0]).toarray(), rtol=1e-6)
    np.testing.assert_allclose(x_train[1].toarray(), x[1].toarray())  # l2r: everything
    np.testing.assert_allclose(x_train[2].toarray(), x[2].toarray())  # a chunk of l2r: as its file


def test_paragraphs_are_cut_after_sentence_ends_into_runs_of_at_least_the_given_words():
    text = "One two three four five six. Seven eight nine ten!  Eleven twelve? Thirteen fourteen fifteen. Tail."
    assert sentence_chunks(text, 6) == ["One two three four five six.", "Seven eight nine ten! Eleven twelve?"]
    # a tail of five words or more is a chunk of its own; a shorter one is dropped
    assert sentence_chunks(text + " Six words in this tail here.", 6)[-1] == "Thirteen fourteen fifteen. Tail. Six words in this tail here."
    assert sentence_chunks("No sentence end here at all, just words running on and on", 6) == [
        "No sentence end here at all, just words running on and on"]


def test_chunks_keep_their_paragraphs_label_and_fold_and_are_reported_apart():
    """A chunk of a held-out l2r paragraph is held out with it (same domain and generator), and the
    report gives chunks a slice of their own, so the paragraphs' headline row stays as it was."""
    sentences = " ".join(f"Sentence number {i} has six words." for i in range(4))
    docs = [Doc("l2r", label, gen, dom, "turn", ("agent",), (sentences,), f"{dom}/1")
            for dom in ("a", "b", "c", "d", "e", "f") for label, gen in ((0, None), (1, "GPT-3-Turbo"), (1, "Llama-3-70B"))]
    chunks = chunk_docs(docs + [Doc("sgd", 0, None, "x", "turn", ("agent",), (sentences,))], ("l2r",), 6)
    assert len(chunks) == 4 * len(docs) and {c.dataset for c in chunks} == {"l2r_chunks"}
    assert all(c.content is None and c.texts[0] == "Sentence number 0 has six words." for c in chunks[::4])
    assert all((c.label, c.generator, c.domain) == (d.label, d.generator, d.domain) for d, c in zip(docs, chunks[::4]))
    every = docs + chunks
    for name, (test, excluded) in make_folds(every).items():
        if name.startswith("l2r"):
            for d, c in zip(docs, chunks[::4]):
                i, j = every.index(d), len(docs) + chunks.index(c)
                assert test[i] == test[j] and excluded[i] == excluded[j]
    test = make_folds(every)["l2r_unseen_domains+GPT-3-Turbo"][0]
    held = [d for d, t in zip(every, test) if t]
    rows = report_rows(held, np.linspace(0, 1, len(held)), "f")
    assert {r["slice"] for r in rows} >= {"turns", "chunks"}
    assert next(r for r in rows if r["slice"] == "turns")["n"] == sum(d.dataset == "l2r" for d in held)


def test_the_in_collection_check_holds_out_whole_conversations_of_the_support_collections():
    """A held-out conversation takes every document cut from it (its transcript and its turns),
    about half of them are held out, and other files stay in training."""
    docs = []
    for i in range(400):
        for dataset in ("sgd", "cucom_ecommerce", "synthetic_persona_chat"):
            docs.append(Doc(dataset, 0, None, "d", "transcript", ("agent", "customer"), ("a", "b"), conversation=f"{dataset}/{i}"))
            docs += [Doc(dataset, 0, None, "d", "turn", (r,), (t,), conversation=f"{dataset}/{i}")
                     for r, t in (("agent", "a"), ("customer", "b"))]
    docs.append(doc(1, "x/1"))  # an l2r paragraph: no conversation
    test, excluded = in_collection_fold(docs)
    assert (test == excluded).all()
    by_conversation: dict[str, set[bool]] = {}
    for d, held in zip(docs, test):
        if d.conversation:
            by_conversation.setdefault(d.conversation, set()).add(bool(held))
    assert all(len(v) == 1 for v in by_conversation.values())  # all of a conversation, or none of it
    assert not any(held for d, held in zip(docs, test) if d.dataset in ("synthetic_persona_chat", "l2r"))
    held_sgd = sum(held for d, held in zip(docs, test) if d.dataset == "sgd" and d.kind == "transcript")
    assert 150 < held_sgd < 250


def test_the_shipped_training_report_is_strict_json():
    """Folds with one label (BANKING77, short slices) have no AUROC: the report writes null there,
    as the trainer's writer (allow_nan=False after evaluation.without_nan) must, not a bare NaN."""
    report = strict_json(SHIPPED_REPORT.read_text())
    banking = next(r for r in report["validation"] if r["fold"] == "banking77" and r["slice"] == "turns")
    assert banking["auroc"] is None and banking["mean_prob_human"] > 0
    assert evaluation.without_nan({"a": [float("nan"), 0.5], "b": (1, float("nan"))}) == {"a": [None, 0.5], "b": [1, None]}


def test_the_shipped_model_card_is_rendered_from_the_shipped_report():
    """The card beside the model is what the trainer would write for its report: an edit to the
    card's template (training/card.py) is re-rendered into the shipped card, never left to drift."""
    shipped = json.loads(SHIPPED_REPORT.read_text())
    assert (SHIPPED_REPORT.parent / "MODEL_CARD.md").read_text() == render_card(shipped)


@pytest.mark.parametrize("flags, avx2_fma", [("fpu sse2 fma avx avx2 avx512f", True), ("fpu sse2 avx avx2", False)])
def test_the_report_names_the_cpu_and_whether_the_fit_runs_as_on_the_shipped_files(tmp_path, flags, avx2_fma):
    """Without AVX2 and FMA the C library's exp and log1p run other code, so a retrain can leave
    the shipped weights: the report and the card say which CPU built the file."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: {flags}\n\n"
                       "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu\n")
    cpu = training_cpu(cpuinfo)
    assert cpu == {"model": "Example CPU 9000", "avx2_fma": avx2_fma}
    assert training_cpu(tmp_path / "absent")["avx2_fma"] is None
    card = render_card({**json.loads(SHIPPED_REPORT.read_text()), "cpu": cpu})
    assert f"on 2 cores of Example CPU 9000 ({'with' if avx2_fma else 'without'} AVX2 and FMA) for" in card


def test_calibration_learns_the_corpus_weight_or_keeps_the_one_it_is_given():
    """Where repeated turns mark machines, a free fit gives the corpus signal weight; a fixed weight
    (the dialogue calibration's, TrainConfig.transcript_seen_weight) stays as given while scale
    and offset are still fitted to the scores."""
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.5
    raw = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    seen = np.where(y & (rng.random(4000) < 0.5), 3.0, 0.0)
    fold = np.array(["a", "b"])[rng.integers(0, 2, 4000)]
    free = fit_calibration(raw, seen, y, fold)
    assert free.seen_weight > 1 and free.scale > 1
    for given in (0.0, 0.4):
        fixed = fit_calibration(raw, seen, y, fold, seen_weight=given)
        assert fixed.seen_weight == given and fixed.scale > 1


@pytest.mark.parametrize("powers", [(0.75, 1.0), (1.0, 0.5)])
def test_held_out_scores_are_read_as_the_graph_reads_them(tmp_path, powers):
    """The trainer calibrates on read_scores: a transcript's n-gram sum over its turns' pooled
    counts (featurize) ** count_power, a single text's over sqrt, neither with the model's
    intercept (the calibration's offset takes its place). The graph built from the same model, with
    those powers in its dialogue calibration, gives the same raw scores (identity calibration: the
    logit is the raw score)."""
    count_power, turn_count_power = powers
    spec = HashSpec((3, 4), (4,), 1 << 12, (6,), (1, 2))
    docs = [Doc("sgd", 0, None, "d", "transcript", ("customer", "agent", "agent"),
                ("I need a table for two tonight", "Which city, please?", "Booked: 7 pm at Luigi's.")),
            Doc("cucom_ecommerce", 1, None, "d", "transcript", ("customer", "agent"),
                ("my parcel never came", "I sincerely apologize for the inconvenience this has caused you.")),
            Doc("l2r", 1, "g", "d", "turn", ("agent",), ("A rewritten paragraph of text, with care.",), "d/1")]
    byte_x, masked_x, pooled = featurize(docs, spec, ROLE_WEIGHTS, turn_count_power)
    x_train, x = split_training_features(byte_x, masked_x, docs, ("l2r",), 1.0)
    clf = fit(x_train, np.array([d.label for d in docs]), np.ones(len(docs)),
              TrainConfig(orders=spec.orders, shape_orders=spec.shape_orders, table_size=spec.table_size,
                          function_orders=spec.function_orders, word_orders=spec.word_orders))
    transcript = np.array([d.kind == "transcript" for d in docs])
    raw = read_scores(clf, x, transcript, count_power, pooled)
    meta = {"model_version": "test", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "4096"}
    onnx.save(build_graph(spec, clf.weights, Calibration(1.0, 0.0),
                          Calibration(1.0, 0.0, 0.0, count_power, turn_count_power), RepetitionHead((0.0,) * 4, 0.0),
                          meta, 64),
              tmp_path / "m.onnx")
    texts = model_texts(normalize_all([t for d in docs for t in d.texts]))
    packed = pack_turns(texts, 4096)
    turn_doc = np.repeat(np.arange(len(docs)), [len(d.texts) for d in docs])
    n = len(texts)
    out = BotOriginModel(tmp_path / "m.onnx").run(
        packed.stream, packed.lengths, turn_doc, np.array([ROLE_WEIGHTS[r] for d in docs for r in d.roles], np.float32),
        np.zeros(n, np.float32), len(docs), np.zeros((n, 4), np.float32), np.ones(n, np.float32))
    p = out.transcript_bot_origin.astype(np.float64)
    np.testing.assert_allclose(np.log(p / (1 - p)), raw, atol=2e-3)
    # at 0.5 over whole counts every text reads as the model scores it, less the intercept; the
    # powers under test move transcripts only
    evidence = clf.evidence(x)
    np.testing.assert_allclose(read_scores(clf, x, transcript, 0.5, featurize(docs, spec, ROLE_WEIGHTS)[2]),
                               evidence, rtol=1e-5)
    assert raw[2] == evidence[2] and not np.allclose(raw[:2], evidence[:2], atol=1e-2)


@needs_datasets
def test_echogate_train_end_to_end_writes_a_model_that_scores_and_the_same_bytes_in_one_process_or_two(tmp_path):
    """`echogate train` on a sample of every shared file (150 records each, a 16,384-weight table,
    30 iterations: seconds, where the shipped run takes most of an hour) goes through every step of
    the real one: folds, calibration, the repetitiveness head, the final fit, the graph, the report
    and the card. The model it writes loads and scores through `echogate eval`, the server's code
    path, ranking the texts it trained on; and a run with its folds in one process writes the same
    bytes as one with two (the trainer is seeded, and a fold's fit does not depend on its process)."""
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(DATASETS.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        (data / path.name).write_text("".join(lines[:: max(len(lines) // 150, 1)][:150]), encoding="utf-8")
    small = {"table_size": 1 << 14, "max_iter": 30, "stream_size": 100}
    runs = {}
    for jobs in (2, 1):
        config = tmp_path / f"config{jobs}.json"
        config.write_text(json.dumps({**small, "jobs": jobs}))
        out = tmp_path / f"model{jobs}"
        done = run_cli("train", "--data", str(data), "--out", str(out), "--config", str(config))
        assert done.returncode == 0, done.stderr[-2000:]
        runs[jobs] = out
    out = runs[2]
    assert (out / "bot_origin.onnx").read_bytes() == (runs[1] / "bot_origin.onnx").read_bytes()
    report = json.loads((out / "training_report.json").read_text())
    assert report["config"]["table_size"] == 1 << 14 and report["documents"] > 8 * 100
    folds = {row["fold"] for row in report["validation"]}
    assert {"cucom_vs_taskmaster4", "spc_vs_sgd", "star_unseen_domains_0", "in_collection_support"} <= folds
    assert 0.5 < report["macro_auroc"] <= 1.0
    assert report["config"]["version"] in (out / "MODEL_CARD.md").read_text()
    # stdout: the validation table, a row each, "n/a" where one label leaves a metric undefined
    printed = done.stdout.splitlines()
    assert len(printed) == len(report["validation"]) and "nan" not in done.stdout
    assert any(line.startswith("banking77 ") and "AUROC=n/a" in line for line in printed)
    model = BotOriginModel(out / "bot_origin.onnx")
    assert model.version == report["config"]["version"]
    scored = run_cli("eval", "--model", str(out / "bot_origin.onnx"), "--json", str(data / "l2r.jsonl"))
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["groups"]["all"]["auroc"] > 0.9


def test_a_training_configuration_names_what_is_wrong_with_it():
    """`echogate train --config`'s JSON is read field by field: invalid JSON, a misspelt field, a
    value of the wrong JSON type, or one no model trains with is refused with the field's name
    (and the nearest real field for a typo), every problem at once, before any data is read."""
    cfg = TrainConfig.from_json(json.dumps({"max_iter": 30, "orders": [3, 5], "c": 1, "dataset_weights": {"l2r": 2},
                                            "transcript_seen_weight": None}))
    assert cfg == TrainConfig(max_iter=30, orders=(3, 5), c=1.0, dataset_weights={"l2r": 2.0},
                              transcript_seen_weight=None)
    assert TrainConfig.from_json("{}") == TrainConfig()
    for overrides, message in (({"max_iters": 30}, "no field 'max_iters': did you mean 'max_iter'?"),
                               ({"table_size": "big"}, 'table_size: Input should be a valid integer, not "big"'),
                               ({"table_size": "512"}, 'table_size: Input should be a valid integer, not "512"'),
                               ({"orders": [3, 4.5]}, "orders.1: Input should be a valid integer, not 4.5"),
                               ({"dataset_weights": {"l2r": "x"}}, "dataset_weights.l2r: Input should be a valid"),
                               ({"jobs": True}, "jobs: Input should be a valid integer, not true"),
                               ({"c": -1}, "c must be more than 0, not -1.0"),
                               ({"lowercase_share": 1.5}, "lowercase_share must be from 0 to 1"),
                               ({"table_size": 1000}, "not a power of two"),
                               ({"word_orders": [3]}, "word n-gram orders are 1 and 2"),
                               ({"shape_orders": [0, 4]}, "shape_orders must be orders of at least 1, not [0, 4]"),
                               ([1, 2], "the configuration: Input should be an object")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            TrainConfig.from_json(json.dumps(overrides))
    with pytest.raises(ConfigError, match="Invalid JSON"):
        TrainConfig.from_json('{"max_iter": 30,')
    with pytest.raises(ConfigError) as both:
        TrainConfig.from_json('{"max_iters": 30, "jobs": "2"}')
    message = str(both.value)
    assert "no field 'max_iters'" in message and 'jobs: Input should be a valid integer, not "2"' in message


def test_echogate_train_refuses_a_bad_configuration_or_data_folder_with_a_message_and_status_2(tmp_path):
    """The refusals reach the command line as one line naming the flag, file and field, exit
    status 2, no traceback, before any training starts."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "config.json"
    config.write_text('{"max_iters": 10}')
    for args, message in (
            (("--config", str(config)), "--config " + str(config) + ": TrainConfig has no field 'max_iters'"),
            (("--config", str(tmp_path / "none.json")), "No such file"),
            ((), str(data) + ": no *.jsonl training files here"),
            (("--data", str(tmp_path / "nowhere")), "nowhere: no such folder")):
        done = run_cli("train", "--data", str(data), "--out", str(tmp_path / "out"), *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    (data / "mine.jsonl").write_text('{"id": "a", "label": "human", "text": "hello"}\n'
                                     '{"id": "b", "label": "bot", "text": "hello"}\n')
    done = run_cli("train", "--data", str(data), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and 'mine.jsonl line 2: label must be "human" or "machine", not "bot"' in done.stderr
    (data / "mine.jsonl").write_text('{"id": "a", "label": "human", "text": "hello"}\n'
                                     '{"id": "b", "label": "machine", "text": "Hello! How can I help you today?"}\n')
    done = run_cli("train", "--data", str(data), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "the repetitiveness head needs dialogues with at least two agent" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_slow_progress_bar_is_redrawn_so_its_clock_moves():
    """The held-out folds' bar moves once per fold, minutes apart: `redrawn` draws it again every
    few seconds meanwhile (its elapsed time moves), and stops when the block ends."""
    out = io.StringIO()
    with tqdm(total=2, file=out, desc="held-out folds", mininterval=0) as bar, redrawn(bar, every=0.05):
        time.sleep(0.5)
        drawn = out.getvalue().count("\r")
    assert drawn >= 4  # about ten redraws, and none depends on an update
    time.sleep(0.2)
    assert out.getvalue().count("\r") <= drawn + 2  # the closing draw; no redraws after the block


def test_training_reads_a_files_roles_as_echogate_score_does(tmp_path):
    """A file of the schema may name its sides as message lists do (user / assistant) or as SGD
    does (user / system, no agent): the trainer reads them as the scorer will, or it would train
    on a side the model then weighs otherwise (assistant turns weighed 0 in training, 1 in
    scoring); so are dialogues given only as `role: text` lines. A role name neither knows is
    refused with its file, line and turn."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.jsonl").write_text(
        json.dumps({"id": "a", "label": "machine", "turns": [{"role": "user", "text": "my parcel never came"},
                                                            {"role": "assistant", "text": "I am sorry to hear that."},
                                                            {"role": "assistant", "text": " "}]}) + "\n"
        + json.dumps({"id": "b", "label": "human", "turns": [{"role": "User", "text": "a table for two"},
                                                            {"role": "system", "text": "which city?"}]}) + "\n")
    lines = {"id": "c", "label": "human", "text": "user: hi\nagent: hello"}
    (data / "lines.jsonl").write_text(json.dumps(lines) + "\n")
    dialogues = [d for d in load_docs(data, 100, 0) if d.kind == "transcript"]
    # the blank turn dropped; a dialogue given as `role: text` lines read back into its turns
    assert [d.roles for d in dialogues] == [("customer", "agent")] + [("customer", "agent")] * 2
    assert dialogues[0].texts == ("hi", "hello")
    (data / "lines.jsonl").unlink()
    (data / "mine.jsonl").write_text(json.dumps({"id": "c", "label": "human", "turns": [
        {"role": "customer", "text": "hi"}, {"role": "speaker2", "text": "hello"}]}) + "\n")
    with pytest.raises(TrainingDataError, match=r"mine\.jsonl line 1: turns\[1\]\.role 'speaker2' is not one of"):
        load_docs(data, 100, 0)


def test_training_reads_turns_in_every_shape_echogate_score_reads(tmp_path):
    """A labelled log in OpenAI's or Anthropic's `messages` or ShareGPT's `conversations` shape,
    which `echogate score` and `echogate eval` read, trains the documents its `turns` form would
    (a tool-calling message without text is dropped like a blank turn); a turn that is not an
    object with a text is refused with its file, line and field."""
    data = tmp_path / "data"
    data.mkdir()
    turns = [{"role": "customer", "text": "my parcel never came"}, {"role": "agent", "text": "I am sorry."}]
    messages = [{"role": "user", "content": "my parcel never came"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "I am sorry."}]}]
    sharegpt = [{"from": "human", "value": "my parcel never came"}, {"from": "gpt", "value": "I am sorry."}]
    (data / "mine.jsonl").write_text("".join(json.dumps({"id": str(i), "label": "machine", field: value}) + "\n"
                                             for i, (field, value) in enumerate(
                                                 (("turns", turns), ("messages", messages),
                                                  ("conversations", sharegpt)))))
    docs = load_docs(data, 100, 0)
    dialogues = [(d.roles, d.texts, d.label) for d in docs if d.kind == "transcript"]
    assert dialogues == [(("customer", "agent"), ("my parcel never came", "I am sorry."), 1)] * 3
    assert sorted((d.roles, d.texts) for d in docs if d.kind == "turn") == sorted(
        [(("agent",), ("I am sorry.",)), (("customer",), ("my parcel never came",))] * 3)
    (data / "mine.jsonl").write_text(json.dumps({"id": "a", "label": "human", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "utterance": "hello"}]}) + "\n")
    with pytest.raises(TrainingDataError, match=r"mine\.jsonl line 1: messages\[1\] must be an object with a role "
                                                r"and a text \(or value or content\)"):
        load_docs(data, 100, 0)


def test_a_turns_own_origin_is_its_label_whatever_its_role(tmp_path):
    """A record's label says who wrote the agent side; customers are people unless a turn says
    otherwise. A file of LLM-simulated conversations marks its machine customers with `origin`
    (the field STAR's agent turns carry, and `echogate eval` grades turns by), and they train as
    machine text; an origin that is neither human nor machine is refused by file, line and turn."""
    data = tmp_path / "data"
    data.mkdir()
    record = {"id": "a", "label": "machine", "turns": [
        {"role": "customer", "text": "where is my parcel", "origin": "machine"},
        {"role": "agent", "text": "It ships today."}, {"role": "customer", "text": "thx"},
        {"role": "agent", "text": "ok", "origin": "human"}]}
    (data / "simulated.jsonl").write_text(json.dumps(record) + "\n")
    turns = {d.texts[0]: d.label for d in load_docs(data, 100, 0) if d.kind == "turn"}
    assert turns == {"where is my parcel": 1, "It ships today.": 1, "thx": 0, "ok": 0}
    record["turns"][2]["origin"] = "bot"
    (data / "simulated.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(TrainingDataError, match=r'simulated\.jsonl line 1: turns\[2\]\.origin must be "human" or '
                                                r'"machine", not "bot"'):
        load_docs(data, 100, 0)


def _first_lines(name: str, n: int = 40) -> list[str]:
    """The first `n` records of a shared file, as lines."""
    with (DATASETS / f"{name}.jsonl").open(encoding="utf-8") as fh:
        return [line for _, line in zip(range(n), fh)]


@needs_datasets
def test_a_run_on_files_no_fold_can_hold_out_says_its_model_is_neither_validated_nor_calibrated(tmp_path, caplog):
    """A file beside the shared ones is held out whole, but only where what is left still holds
    both labels: a folder of one file trains, with a warning per fold not fitted and one that
    nothing was held out; a dataset name the configuration adds that no file gives is warned of
    too (the defaults' names, absent here, are not)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mybot.jsonl").write_text("".join(_first_lines("cucom_ecommerce")), encoding="utf-8")
    cfg = TrainConfig(table_size=1 << 12, max_iter=5, jobs=1, stream_size=50, dataset_weights={"mybott": 2.0})
    with caplog.at_level(logging.WARNING, logger="echogate.training.train"):
        report = train(data, tmp_path / "out", cfg)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no held-out fold applies" in warnings and "names datasets that no file" in warnings
    assert "fold unseen_file:mybot is not fitted: the documents it leaves to train on have one label" in warnings
    assert "mybott" in warnings and "star_dialogues" not in warnings
    assert (tmp_path / "out" / "bot_origin.onnx").is_file() and report["validation"] == []


@needs_datasets
def test_a_file_beside_the_shared_ones_is_held_out_whole_reported_and_calibrated_on(tmp_path):
    """A customer's labelled file added to the data folder is validated as a collection the model
    never saw: its own fold, reported by slice, its scores in the calibration. Two such files
    alone make a validated, calibrated model; the macro AUROC is over the shared files' folds
    only (none here, so it is undefined), to compare across runs on other data."""
    data = tmp_path / "data"
    data.mkdir()
    for mine, files in (("mine", ("synthetic_persona_chat", "taskmaster4")), ("theirs", ("cucom_ecommerce", "sgd"))):
        (data / f"{mine}.jsonl").write_text("".join(_first_lines(files[0]) + _first_lines(files[1])), encoding="utf-8")
    paragraphs = list(read_records(DATASETS / "l2r.jsonl"))
    by_label = {label: [r for r in paragraphs if r["label"] == label][:40] for label in ("human", "machine")}
    (data / "paragraphs.jsonl").write_text("".join(json.dumps(r) + "\n" for rs in by_label.values() for r in rs))
    cfg = TrainConfig(table_size=1 << 12, max_iter=20, jobs=1, stream_size=50)
    report = train(data, tmp_path / "out", cfg)
    rows = {(r["fold"], r["slice"]): r for r in report["validation"]}
    assert {fold for fold, _ in rows} == {"unseen_file:mine", "unseen_file:paragraphs", "unseen_file:theirs"}
    mine = rows["unseen_file:mine", "transcripts"]
    assert (mine["n"], mine["machine"]) == (80, 40) and not np.isnan(mine["auroc"])
    assert ("unseen_file:mine", "turns") in rows and np.isnan(report["macro_auroc"])
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "`unseen_file:mine`, `unseen_file:paragraphs`, `unseen_file:theirs`: each a file beside the shared" in card
    # fitted on those folds' scores, single texts on the plain-text records (labelled one by one),
    # not on turns cut from dialogues: with no fold a calibration is the identity (scale 1, offset 0)
    assert (report["calibration"]["transcript"]["scale"], report["calibration"]["transcript"]["offset"]) != (1, 0)
    assert (report["calibration"]["turn"]["scale"], report["calibration"]["turn"]["offset"]) != (1, 0)


def test_inverse_document_frequency_is_scikit_learns_smoothed_idf_counted_in_blocks():
    x = sp.random(400, 300, density=0.03, format="csr", random_state=5, dtype=np.float32)
    expected = TfidfTransformer(smooth_idf=True).fit(x).idf_
    np.testing.assert_allclose(inverse_document_frequency(x), expected, rtol=1e-6)  # scikit-learn keeps x's float32
    np.testing.assert_array_equal(inverse_document_frequency(x, block=7), inverse_document_frequency(x))
