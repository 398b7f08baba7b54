"""The ONNX graph reproduces the NumPy feature reference; the shipped model is a real one."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from echogate.features import HashSpec, function_word_stream, ngram_hashes
from echogate.model import BotOriginModel, ModelLoadError, transcript_chunks
from echogate.settings import default_model_path
from echogate.text import NORMALIZATION_VERSION, normalize, pack_turns
from echogate.training.graph import Calibration, build_graph, fixed_point_weights, seen_scale
from echogate.training.repetition import RepetitionHead
from echogate.training.config import ROLE_WEIGHTS
from tests.conftest import DATASETS, needs_datasets

HEAD = RepetitionHead((2.0, 1.0, -0.5, 0.25), -1.5)
TEXTS = ["Hello, how can I help?", "", "ok", "THE end", "the", "Ünïcödé 😀 text with\u200b zero width", "A" * 300, "de", "x y z"]


def reference(spec, weights, texts, transcript_of_turn, turn_weight, n_transcripts, doc_power=0.5, turn_power=1.0):
    """Raw (pre-calibration) turn and transcript scores computed in NumPy: n-gram sums over sqrt
    of the count for a turn; for a transcript over pooled ** doc_power, pooled the role-weighted
    sum of its turns' counts ** turn_power."""
    packed = pack_turns([normalize(t) for t in texts], 4096)
    hashes, turns = ngram_hashes(packed.stream, packed.byte_turn, spec)
    sums = np.bincount(turns, weights=weights[hashes], minlength=len(texts))
    counts = np.bincount(turns, minlength=len(texts)).astype(float)
    turn_raw = sums / np.sqrt(np.maximum(counts, 1))
    doc_s = np.bincount(transcript_of_turn, weights=sums * turn_weight, minlength=n_transcripts)
    doc_c = np.bincount(transcript_of_turn, weights=counts**turn_power * turn_weight, minlength=n_transcripts)
    return turn_raw, doc_s / np.maximum(doc_c, 1) ** doc_power, counts, packed


def stored(weights: np.ndarray) -> np.ndarray:
    """The weights as the graph's fixed-point table holds them."""
    table, bits = fixed_point_weights(weights)
    return table * 2.0**-bits


@pytest.mark.parametrize("spec", [HashSpec((3, 4, 5), (), 1024), HashSpec((2,), (4, 6), 1 << 16),
                                  HashSpec((3,), (), 1 << 20, (3, 5, 7)), HashSpec((3,), (), 1 << 12, (), (1, 2)),
                                  HashSpec((3, 4, 5), (4, 6), 1 << 19, (6,), (1, 2)), HashSpec((), (), 256, (), (2,)),
                                  HashSpec((1, 7), (7,), 1 << 24, (7,), (1, 2))])
@pytest.mark.parametrize("powers", [(0.75, 1.0), (1.0, 0.5), (1.0, 0.75)])
def test_graph_matches_numpy_reference(tmp_path, spec, powers):
    """The graph hashes in uint32 modulo 2**32 (the largest orders and table wrap there many times
    over) and sums every byte order from one prefix sum, taking off the n-grams that run past a
    turn's end; the reference does neither, so the two agree only where both are right. A transcript
    divides its n-gram sum by its turns' pooled counts to its calibration's powers (`powers`:
    count_power, turn_count_power; each turn's count as it is, its square root, another power),
    a turn by sqrt."""
    count_power, turn_count_power = powers
    rng = np.random.default_rng(0)
    weights = rng.normal(scale=0.3, size=spec.table_size).astype(np.float32)  # no logit saturates float32
    meta = {"model_version": "test", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "4096"}
    dialogue = Calibration(1.0, 0.0, 2.0, count_power, turn_count_power)
    onnx.save(build_graph(spec, weights, Calibration(1.0, 0.0, 0.5), dialogue, HEAD, meta, seen_full_bytes=16),
              tmp_path / "m.onnx")
    model = BotOriginModel(tmp_path / "m.onnx")
    transcript_of_turn = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3])  # transcript 3 is a single text
    turn_weight = np.array([1.0, 0.5, 1.0, 1.0, 0.5, 1.0, 0.0, 0.5, 1.0], np.float32)
    turn_raw, doc_raw, counts, packed = reference(spec, stored(weights), TEXTS, transcript_of_turn, turn_weight,
                                                  4, doc_power=count_power, turn_power=turn_count_power)
    seen = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 2.0, 0.5, 0.0, 3.0], np.float32)
    features = rng.uniform(size=(len(TEXTS), 4)).astype(np.float32)
    side = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1], np.float32)
    out = model.run(packed.stream, packed.lengths, transcript_of_turn, turn_weight, seen, 4, features, side)
    scaled = seen * seen_scale(packed.lengths, 16)  # short turns' corpus signal counts less
    assert 0 < scaled[4] < seen[4] and scaled[5] == seen[5] and scaled[1] == 0  # "the", a long turn, an empty one
    turn_raw = turn_raw + 0.5 * scaled
    doc_w = np.bincount(transcript_of_turn, weights=turn_weight)
    doc_raw = doc_raw + 2.0 * np.bincount(transcript_of_turn, weights=turn_weight * scaled) / np.maximum(doc_w, 1e-6)
    doc_raw[[2, 3]] = turn_raw[[7, 8]]  # one-turn transcripts take their turn's (single-text) calibration
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731 - calibration is identity here
    np.testing.assert_allclose(logit(out.turn_bot_origin.astype(np.float64)), turn_raw, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(logit(out.transcript_bot_origin.astype(np.float64)), doc_raw, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(out.turn_ngrams, counts)
    turn_rep = 1 / (1 + np.exp(-(features.astype(np.float64) @ np.array(HEAD.weights) + HEAD.bias)))
    np.testing.assert_allclose(out.turn_repetitiveness, turn_rep, rtol=1e-5)
    count = np.expm1(seen.astype(np.float64))  # seen is log1p(count)
    repeated = 1 - (1 - turn_rep) * HEAD.corpus_half_count / (count + HEAD.corpus_half_count)
    doc_rep = np.bincount(transcript_of_turn, weights=repeated * side) / np.bincount(transcript_of_turn, weights=side)
    np.testing.assert_allclose(out.transcript_repetitiveness, doc_rep, rtol=1e-5)



def test_graph_sums_the_largest_weights_of_every_order_exactly(tmp_path):
    """Every n-gram weighs the table's largest value (32,604 units of 2**-14): each byte's total
    over the orders is as large as it gets in int32, and the running sum over a 40 KB stream far
    larger, which stays int64; the sums come out exact."""
    spec = HashSpec((3, 4, 5), (4, 6), 1 << 12, (6,), (1, 2))
    weights = np.full(spec.table_size, 1.99)
    meta = {"model_version": "test", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "65536"}
    small = Calibration(1e-4, 0.0)  # keeps the logits of sums this large out of the sigmoid's flat ends
    onnx.save(build_graph(spec, weights, small, small, HEAD, meta, 64), tmp_path / "m.onnx")
    texts = ["x" * 40_000, "Hello there, how can I help?", "ok"]
    n = len(texts)
    turn_raw, _, counts, packed = reference(spec, stored(weights), texts, np.arange(n), np.ones(n), n)
    out = BotOriginModel(tmp_path / "m.onnx", chunk_bytes=1 << 20).run(
        packed.stream, packed.lengths, np.arange(n), np.ones(n, np.float32), np.zeros(n, np.float32), n,
        np.zeros((n, 4), np.float32), np.ones(n, np.float32))
    np.testing.assert_array_equal(out.turn_ngrams, counts)
    logit = np.log(out.turn_bot_origin.astype(np.float64) / (1 - out.turn_bot_origin))
    np.testing.assert_allclose(logit, 1e-4 * turn_raw, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("texts", [[""], ["", ""], ["", "hi there", ""], ["Ok", ""]])
def test_graph_handles_turns_without_bytes_at_any_place(tmp_path, texts):
    """Turns without bytes before, between and after the others (or a batch with no bytes at all)
    have no n-grams and leave the others' n-grams alone: an empty turn's start is the next turn's
    first byte, or the end of the stream."""
    spec = HashSpec((3,), (4,), 1024, (3,), (1, 2))
    weights = np.random.default_rng(1).normal(size=spec.table_size).astype(np.float32)
    meta = {"model_version": "test", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "4096"}
    onnx.save(build_graph(spec, weights, Calibration(1.0, 0.0), Calibration(1.0, 0.0), HEAD, meta, 64),
              tmp_path / "m.onnx")
    n = len(texts)
    turn_raw, _, counts, packed = reference(spec, stored(weights), texts, np.zeros(n, np.int64), np.ones(n), 1)
    out = BotOriginModel(tmp_path / "m.onnx").run(packed.stream, packed.lengths, np.zeros(n, np.int64),
                                                  np.ones(n, np.float32), np.zeros(n, np.float32), 1,
                                                  np.zeros((n, 4), np.float32), np.ones(n, np.float32))
    np.testing.assert_array_equal(out.turn_ngrams, counts)
    np.testing.assert_allclose(out.turn_bot_origin, 1 / (1 + np.exp(-turn_raw)), rtol=1e-5)

def test_model_refuses_other_normalisation(tmp_path):
    meta = {"model_version": "x", "normalization": "something-else", "role_weights": "{}", "max_turn_bytes": "10"}
    onnx.save(build_graph(HashSpec((3,), (), 128), np.zeros(128), Calibration(1, 0), Calibration(1, 0), HEAD, meta, 64),
              tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="normalisation"):
        BotOriginModel(tmp_path / "m.onnx")


def test_model_refuses_other_repetition_features(tmp_path):
    """A model built for other repetition features would weigh the wrong columns: refused at load."""
    meta = {"model_version": "x", "normalization": NORMALIZATION_VERSION, "role_weights": "{}", "max_turn_bytes": "10"}
    model = build_graph(HashSpec((3,), (), 128), np.zeros(128), Calibration(1, 0), Calibration(1, 0), HEAD, meta, 64)
    onnx.helper.set_model_props(model, {**meta, "repetition_features": "trigram_self"})
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="repetition features"):
        BotOriginModel(tmp_path / "m.onnx")


def test_model_refuses_a_graph_with_other_inputs(tmp_path):
    """A graph from a release that fed the model other arrays (0.12.1 and before took each byte's
    turn, not each turn's length) is refused at load, not at the first batch."""
    meta = {"model_version": "x", "normalization": NORMALIZATION_VERSION, "role_weights": "{}", "max_turn_bytes": "10"}
    model = build_graph(HashSpec((3,), (), 128), np.zeros(128), Calibration(1, 0), Calibration(1, 0), HEAD, meta, 64)
    model.graph.input[1].name = "byte_turn"
    for node in model.graph.node:
        node.input[:] = ["byte_turn" if name == "turn_length" else name for name in node.input]
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="byte_turn"):
        BotOriginModel(tmp_path / "m.onnx")


def test_shipped_model_loads_with_metadata():
    model = BotOriginModel(default_model_path())
    assert model.version.startswith("bot-origin-")
    assert model.role_weights["agent"] > model.role_weights["customer"] >= 0
    size = __import__("os").path.getsize(default_model_path())
    assert size < 20 * 1024 * 1024


@needs_datasets
def test_shipped_model_is_trained_not_constant():
    """On a sample of the training data the model must rank machine above human text."""
    from echogate.evaluation import auroc
    from echogate.scoring import Scorer
    from echogate.training.data import load_docs
    from echogate.types import Role, Transcript, Turn

    docs = [d for d in load_docs(DATASETS, 2000, seed=1) if d.kind == "transcript"]
    rng = np.random.default_rng(1)
    docs = [docs[i] for i in rng.choice(len(docs), 3000, replace=False)]
    scorer = Scorer(BotOriginModel(default_model_path()))
    transcripts = [Transcript(str(i), "t", tuple(Turn(Role(r), t) for r, t in zip(d.roles, d.texts)))
                   for i, d in enumerate(docs)]
    probs = np.array([s.scores.bot_origin for s in scorer.score(transcripts)])
    assert probs.std() > 0.01
    assert auroc(np.array([d.label for d in docs]), probs) > 0.8


def test_function_word_stream_masks_content_words_within_turns():
    """Function words keep their bytes (and case); other words become style classes; a turn's
    edge ends a word, so a turn's skeleton does not depend on its neighbours in the batch."""
    packed = pack_turns(["I'd be Happy to help with order 123!", "THE end", "the"], 100)
    skeleton = function_word_stream(packed.stream, packed.byte_turn).astype(np.uint8).tobytes()
    assert skeleton == b"I'a be Aaaaa to aaaa with aaaaa 000!THE aaathe"


@pytest.mark.parametrize("top", [0.3, 15.4, 15.99999, 16.0, 200.0, 1e-3])
def test_fixed_point_table_fits_the_largest_weight_at_the_finest_unit(top):
    """The table holds int16 multiples of 2**-bits, bits as many as the largest weight allows: it
    never wraps (a weight just under a power of two rounds up to it), and no weight moves by more
    than half a unit, which one more bit would have halved."""
    weights = np.random.default_rng(2).uniform(-top, top, 4096)
    weights[7] = -top
    table, bits = fixed_point_weights(weights)
    assert table.dtype == np.int16
    assert np.abs(table.astype(np.int64)).max() <= 32767
    assert np.abs(table * 2.0**-bits - weights).max() <= 2.0 ** -(bits + 1)
    assert np.rint(top * 2.0 ** (bits + 1)) > 32767  # the next unit down would not hold it


def test_fixed_point_table_refuses_weights_that_are_not_finite():
    with pytest.raises(ValueError, match="finite"):
        fixed_point_weights(np.array([0.5, np.nan]))


def test_hash_spec_refuses_what_the_graph_cannot_hash_exactly():
    """The graph takes remainders with a bitwise AND, and the NumPy reference builds polynomials in
    int64: a table size that is no power of two, or an order whose polynomial could overflow, is
    refused up front."""
    with pytest.raises(ValueError, match="power of two"):
        HashSpec((3,), (), 524_287)
    with pytest.raises(ValueError, match="orders above 7"):
        HashSpec((3,), (), 1024, (8,))
    HashSpec((7,), (7,), 1 << 24, (7,))


@pytest.mark.parametrize("chunk_bytes", [1, 16, 40, 1 << 20])
def test_model_scores_a_batch_in_parts_as_in_one_call(chunk_bytes):
    """Chunked session calls (BotOriginModel.run) return exactly what one call over the batch
    does, whatever falls on a chunk's edge: empty turns, a transcript longer than a chunk."""
    texts = ["Hello, how can I help?", "", "ok", "A" * 100, "", "the end", "Ünïcödé 😀", "x y z", ""]
    turn_transcript = np.array([0, 0, 1, 2, 2, 3, 4, 4, 5])
    packed = pack_turns([normalize(t) for t in texts], 4096)
    rng = np.random.default_rng(2)
    n = len(texts)
    inputs = (packed.stream, packed.lengths, turn_transcript, rng.uniform(size=n).astype(np.float32),
              rng.uniform(size=n).astype(np.float32), 6, rng.uniform(size=(n, 4)).astype(np.float32),
              np.ones(n, np.float32))
    whole = BotOriginModel(default_model_path(), chunk_bytes=1 << 30).run(*inputs)
    parts = BotOriginModel(default_model_path(), chunk_bytes=chunk_bytes).run(*inputs)
    for name, expected in vars(whole).items():
        np.testing.assert_array_equal(getattr(parts, name), expected, err_msg=name)


@pytest.mark.parametrize("seed", range(5))
def test_transcript_chunks_cover_the_batch_within_the_byte_budget(seed):
    rng = np.random.default_rng(seed)
    turn_bytes = rng.integers(0, 30, size=40)
    turn_transcript = np.sort(rng.integers(0, 20, size=40))  # some transcripts have no turns
    transcript_bytes = np.bincount(turn_transcript, weights=turn_bytes, minlength=20)
    ends = transcript_chunks(turn_bytes, turn_transcript, 20, 50)
    assert ends[-1] == 20 and ends == sorted(set(ends))
    for start, end in zip([0] + ends[:-1], ends):
        assert end - start == 1 or transcript_bytes[start:end].sum() <= 50
        if end < 20:  # a chunk stops only where the next transcript would not fit
            assert transcript_bytes[start : end + 1].sum() > 50


def test_look_alike_letters_and_scrambled_case_do_not_move_a_score():
    """The cheap disguises of machine text (Cyrillic and Greek look-alikes, case swapped inside
    words) are undone before the model reads it: the disguised text scores and hashes as the plain
    one. Without that, Cyrillic letters in half of a CuCom dialogue's a, e, o, c, p took its score
    from 0.99 to 0.005 (bench/evasion.py)."""
    from echogate.scoring import Scorer
    from echogate.types import Role, Transcript, Turn

    plain = "I completely understand your frustration, and I sincerely apologize for the inconvenience caused."
    disguised = ("I CoMpLeTeLy undeRstand yOur frustrati\u043en, \u0430nd I sinc\u0435rely \u0430p\u03bfl\u043egize "
                 "f\u043er the inconvenience c\u0430used.")
    model = BotOriginModel(default_model_path())
    plain_score, disguised_score = (Scorer(model).score([Transcript(text[:8], "", (Turn(Role.AGENT, text),))])[0]
                                    for text in (plain, disguised))
    assert disguised_score.scores.bot_origin == plain_score.scores.bot_origin > 0.5
    assert disguised_score.content_sha256 == plain_score.content_sha256


def test_a_number_weighs_nothing_whatever_its_digits():
    """A human dialogue with a long order number scores as with a short one: the model reads digit
    runs as one "0" (echogate.text.model_texts). With 0.9.1, such numbers in half the customer turns
    of SGD dialogues had 51% of them flagged; the verdict's content hash keeps the real digits."""
    from echogate.scoring import Scorer
    from echogate.types import Role, Transcript, Turn

    def dialogue(number: str) -> Transcript:
        return Transcript(number, "", (Turn(Role.CUSTOMER, f"hi, my order {number} never came"),
                                       Turn(Role.AGENT, "Sorry about that, let me look it up.")))

    model = BotOriginModel(default_model_path())
    long_id, short_id = (Scorer(model).score([dialogue(n)])[0] for n in ("483-2918475-1928374", "1-2-3"))
    assert long_id.scores.bot_origin == short_id.scores.bot_origin
    assert long_id.content_sha256 != short_id.content_sha256


def test_the_model_file_runs_on_its_documented_inputs():
    """docs/model-file.md's recipe, followed with onnxruntime, NumPy and `re` alone (no echogate
    code between the text and the graph), gives the scorer's bot-origin probabilities exactly, for
    ASCII text whose normalisation is the whitespace step: digits, tokenised text, a customer-only
    record and a single text included. turn_seen 0 is the scorer's first sight of each turn."""
    import re

    import onnxruntime as ort

    from echogate.scoring import Scorer
    from echogate.types import Role, Transcript, Turn

    detached = re.compile(r" (?=[.,!?;:]+(?:\s|$)|(?:n't|'(?:s|m|re|ve|ll|d))\b)", re.IGNORECASE)
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    role_weights, max_bytes = json.loads(meta["role_weights"]), int(meta["max_turn_bytes"])
    dialogues = [[("customer", "hi,  where is order 12345?"),
                  ("agent", "I completely understand your frustration , and I'm happy to help!")],
                 [("agent", "Your refund of $25.00 was processed on 3/14.")],
                 [("customer", "thanks"), ("system", "Chat transferred."), ("agent", "no problem, have a nice day")],
                 [("customer", "i do n't know what to do\nreally")],
                 [("agent", "x" * 5000)]]
    roles = [role for d in dialogues for role, _ in d]
    read = [detached.sub("", re.sub(r"\d+", "0", " ".join(text.split()))).encode()[:max_bytes]
            for d in dialogues for _, text in d]
    transcript = np.repeat(np.arange(len(dialogues)), [len(d) for d in dialogues]).astype(np.int64)
    agent = np.array([role == "agent" for role in roles])
    has_agent = np.bincount(transcript, weights=agent, minlength=len(dialogues)) > 0
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {
        "text_bytes": np.frombuffer(b"".join(read), np.uint8),
        "turn_length": np.array([len(b) for b in read], np.int64),
        "turn_transcript": transcript,
        "turn_weight": np.array([role_weights.get(role, 0.0) for role in roles], np.float32),
        "turn_seen": np.zeros(len(read), np.float32),
        "transcript_count": np.array([len(dialogues)], np.int64),
        "turn_repetition": np.zeros((len(read), 4), np.float32),
        "turn_side": (agent | ~has_agent[transcript]).astype(np.float32),
    })))
    scored = Scorer(BotOriginModel(default_model_path())).score(
        [Transcript(str(i), "s", tuple(Turn(Role(role), text) for role, text in d)) for i, d in enumerate(dialogues)])
    assert outputs["transcript_bot_origin"].tolist() == [s.scores.bot_origin for s in scored]
    assert outputs["turn_bot_origin"].tolist() == [t.bot_origin for s in scored for t in s.scores.turns]
    assert len(set(outputs["transcript_bot_origin"].tolist())) == len(dialogues)  # not one constant
