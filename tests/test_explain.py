"""echogate.explain: the phrases a reviewer is shown are the ones the model's weights point at."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echogate.explain import PhraseExplainer
from echogate.features import HashSpec, ngram_hashes, ngram_spans
from echogate.text import NORMALIZATION_VERSION, normalize, pack_turns
from echogate.training.graph import Calibration, build_graph, fixed_point_weights
from echogate.training.repetition import RepetitionHead
from echogate.training.config import ROLE_WEIGHTS
from echogate.types import Role, Transcript, Turn
from echogate.v1 import gate_pb2 as pb
from tests.conftest import transcript

SPEC = HashSpec((3,), (), 1 << 12)
LLM_TURN = "I completely understand your frustration, and I would be more than happy to assist you today."


def explainer_favouring(*marked: str) -> PhraseExplainer:
    """Weights that call every 3-gram slightly human except those of the marked words."""
    weights = np.full(SPEC.table_size, -0.05, np.float32)
    for word in marked:
        packed = pack_turns([word], 4096)
        weights[ngram_hashes(packed.stream, packed.byte_turn, SPEC)[0]] = 1.0
    return PhraseExplainer(weights, SPEC, 4096)


def test_the_phrase_is_where_the_machine_weights_are():
    explainer = explainer_favouring("delve", "tapestry")
    text = "so we went to the shop and then we delve into the rich tapestry of it all before going home"
    (phrases,) = explainer.phrases([text], k=2, words=3)
    # "tapestry" has six marked 3-grams, "delve" three: most machine-like first, then the other
    assert len(phrases) == 2 and "tapestry" in phrases[0] and "delve" in phrases[1]
    assert all(p in text for p in phrases)


def test_texts_without_machine_evidence_get_no_phrase_and_keep_their_place():
    explainer = explainer_favouring("delve")
    out = explainer.phrases(["plain human words only", "", "ok", "we delve", "  "], words=4)
    assert out == [(), (), (), ("we delve",), ()]  # a turn shorter than a window is one window


def test_phrases_do_not_overlap_and_stay_within_their_turn():
    explainer = explainer_favouring("delve")
    out = explainer.phrases(["delve delve delve delve delve delve delve delve", "delve"], k=3, words=3)
    assert out == [("delve delve delve",) * 2, ("delve",)]


def test_phrases_of_non_ascii_text_decode_whole():
    explainer = explainer_favouring("café", "naïve")
    (phrases,) = explainer.phrases([normalize("un café très naïve, vraiment")], words=2)
    assert all("\ufffd" not in p for p in phrases) and any("café" in p for p in phrases)


def test_the_explainer_reads_the_weights_and_hashing_of_a_model_file(tmp_path):
    rng = np.random.default_rng(3)
    spec = HashSpec((3, 4), (4,), 1 << 10, (6,), (1, 2))
    weights = rng.normal(scale=0.3, size=spec.table_size).astype(np.float32)
    meta = {"model_version": "t", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "4096"}
    onnx.save(build_graph(spec, weights, Calibration(1, 0), Calibration(1, 0),
                          RepetitionHead((0.0,) * 4, 0.0), meta, 64), tmp_path / "m.onnx")
    explainer = PhraseExplainer.from_model((tmp_path / "m.onnx").read_bytes(), ort.InferenceSession(
        str(tmp_path / "m.onnx")).get_modelmeta().custom_metadata_map)
    assert explainer.spec == spec
    np.testing.assert_array_equal(explainer.weights, fixed_point_weights(weights)[0])


def test_the_explainer_reads_a_model_file_with_the_older_int32_table(tmp_path):
    """Files before bot-origin-0.12.3 stored the table in int32 (units of 2**-24): a rolled-back
    model still quotes the same phrases, the unit being irrelevant to which phrases win."""
    rng = np.random.default_rng(4)
    spec = HashSpec((3, 4), (), 1 << 10)
    weights = rng.normal(scale=0.3, size=spec.table_size)
    meta = {"model_version": "t", "normalization": NORMALIZATION_VERSION, "role_weights": json.dumps(ROLE_WEIGHTS),
            "max_turn_bytes": "4096", **spec.to_metadata()}
    model = build_graph(spec, weights, Calibration(1, 0), Calibration(1, 0), RepetitionHead((0.0,) * 4, 0.0),
                        meta, 64)
    new = PhraseExplainer.from_model(model.SerializeToString(), meta)
    table = next(t for t in model.graph.initializer if t.name == "ngram_weights")
    table.CopyFrom(onnx.numpy_helper.from_array(np.rint(weights * 2.0**24).astype(np.int32), "ngram_weights"))
    old = PhraseExplainer.from_model(model.SerializeToString(), meta)
    assert old.weights.dtype == new.weights.dtype == np.float32 and old.weights.max() > 2**20
    texts = ["I would be more than happy to help you with that order today.", "ok thanks, bye now"]
    assert old.phrases(texts) == new.phrases(texts) != [(), ()]


@pytest.mark.parametrize("texts", [["I sincerely apologize for the inconvenience. I would be more than happy to "
                                    "assist you with resolving this issue as quickly as possible."]])
async def test_a_flagged_verdict_quotes_machine_like_wording_of_its_top_turn(stub, texts):
    """Over the real server and the shipped model: a tagged transcript's reason quotes words
    of the turn it names; an accepted one quotes nothing."""
    resp = await stub.Score(pb.ScoreRequest(transcripts=[
        transcript("m", "my order never came", *texts), transcript("h", "hey", "yo whats up lol")]))
    flagged, plain = resp.verdicts
    assert flagged.decision != pb.DECISION_ACCEPT, flagged.reasons
    reason = flagged.reasons[0]
    assert "turn 1 (agent, " in reason and "machine-like wording: \"" in reason
    quoted = reason.split("machine-like wording: ")[1].split(")")[0]
    assert all(q.strip('"') in texts[0] for q in quoted.split('", "'))
    assert plain.decision != pb.DECISION_ACCEPT or "machine-like wording" not in " ".join(plain.reasons)


def test_the_scorer_explains_each_flagged_transcript_at_its_top_turn():
    """Phrases go with the most machine-like turn that carries n-grams, per transcript of a
    batch, and only to transcripts scored at or over explain_above."""
    from echogate.model import BotOriginModel
    from echogate.scoring import Scorer
    from echogate.settings import default_model_path

    llm = LLM_TURN
    batch = [Transcript("a", "s", (Turn(Role.AGENT, llm), Turn(Role.CUSTOMER, "ok"), Turn(Role.AGENT, "k"))),
             Transcript("b", "s", (Turn(Role.CUSTOMER, ""), Turn(Role.CUSTOMER, "hi"), Turn(Role.AGENT, llm))),
             Transcript("c", "s", (Turn(Role.CUSTOMER, "lol ya"),))]
    scorer = Scorer(BotOriginModel(default_model_path()), explain_above=0.0)
    out = scorer.score(batch)
    for s in out:
        ranked = [(t.bot_origin, -i) for i, t in enumerate(s.scores.turns) if s.turn_evidence[i] > 0]
        assert s.phrase_turn == -max(ranked)[1]
    assert out[0].phrase_turn == 0 and out[1].phrase_turn == 2 and out[0].phrases and out[0].phrases == out[1].phrases
    scorer.explain_above = 1.0
    assert all(s.phrase_turn == -1 and s.phrases == () for s in scorer.score(batch))


def test_a_phrase_is_quoted_as_written_not_as_the_model_read_it():
    """The model reads a run of digits as "0" and tokenised text joined up (echogate.text.model_texts);
    the quote takes the text's own digits and spacing back. A cut or unfound phrase stays as it is."""
    from echogate.explain import MAX_PHRASE_CHARS, as_written

    assert as_written("refund for Order #0-0-0", "a refund for Order #112-3456789-0012 now") == \
        "refund for Order #112-3456789-0012"
    assert as_written("i don't know.", "well i do n't know . ok") == "i do n't know ."
    assert as_written("costs $0.0, right?", "it costs $25.00 , right ?") == "costs $25.00 , right ?"
    cut = "order 0 and so on…"
    assert as_written(cut, "order 12 and so on and on") == cut
    assert as_written("not here 0", "elsewhere") == "not here 0"
    long = as_written("order 0 please", "order " + "7" * 5000 + " please")
    assert long == "order " + "7" * 73 + "…" and len(long) == MAX_PHRASE_CHARS


def test_the_scorer_quotes_numbers_and_tokenised_text_as_written():
    """Each phrase the scorer quotes is wording of its turn as sent (normalised), digits included."""
    from echogate.model import BotOriginModel
    from echogate.scoring import Scorer
    from echogate.settings import default_model_path

    texts = ["Thank you for contacting Amazon. Your refund for Order #112-3456789-0012 has been processed.",
             "I do n't know , I 'm sorry . I completely understand your frustration , and I will look into it .",
             "Hi there! Please provide your Order ID 402-7781239-1182734. Could you share it?"]
    scorer = Scorer(BotOriginModel(default_model_path()), explain_above=0.0)
    out = scorer.score([Transcript(str(i), "s", (Turn(Role.AGENT, text),)) for i, text in enumerate(texts)])
    phrases = [p for s in out for p in s.phrases]
    assert all(s.phrases for s in out)
    assert all(p in normalize(text) for s, text in zip(out, texts) for p in s.phrases), phrases
    assert any("3456789" in p or "7781239" in p for p in phrases), phrases


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("the delve a é😀 .,\n"), max_size=120), max_size=6))
def test_phrases_are_whole_words_of_their_own_text(texts):
    texts = [normalize(t) for t in texts]
    out = explainer_favouring("the", "delve").phrases(texts, k=2)
    assert len(out) == len(texts)
    for text, phrases in zip(texts, out):
        assert len(phrases) <= 2
        words = text.split(" ")
        for phrase in phrases:
            cut = phrase.removesuffix("…")
            assert cut in text and "\ufffd" not in phrase
            if cut == phrase:  # a whole phrase is a run of whole words
                assert f" {phrase} " in f" {' '.join(words)} "


async def test_a_policy_without_quotes_costs_no_search(tmp_path):
    """quote_wording: false reaches the scorer: nothing is searched, nothing quoted."""
    from echogate.grpc_api.server import EchogateServer
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, policy={"tag_bot_origin": 0.0, "review_bot_origin": 0.0,
                                               "quote_wording": False})
    async with EchogateServer(settings) as srv:
        assert srv.core.scorer.explain_above == float("inf")
        [verdict] = await srv.core.score([Transcript("q", "s", (Turn(Role.AGENT, LLM_TURN),))])
    assert "turn 0 (agent, " in verdict.reasons[0] and "wording" not in verdict.reasons[0]


def test_word_ngrams_point_at_their_words():
    """A model of word unigrams and bigrams only: the weight of "more than" lands on those words."""
    spec = HashSpec((), (), 1 << 12, (), (1, 2))
    packed = pack_turns(["more than"], 4096)
    weights = np.full(spec.table_size, -0.01, np.float32)
    weights[ngram_hashes(packed.stream, packed.byte_turn, spec)[0][-1]] = 1.0  # the bigram, after both unigrams
    (phrases,) = PhraseExplainer(weights, spec, 4096).phrases(["we are more than ready to go now"], words=2)
    assert phrases == ("more than",)


def reference_byte_shares(explainer: PhraseExplainer, stream: np.ndarray, byte_turn: np.ndarray) -> np.ndarray:
    """The definition, in NumPy: each valid n-gram's weight (echogate.features.ngram_spans) spread
    evenly over the bytes it spans, as +share where it starts and -share past its end, summed up."""
    diff = np.zeros(stream.shape[0] + 1)
    for hashes, starts, ends in ngram_spans(stream, byte_turn, explainer.spec):
        share = explainer.weights[hashes] / (ends - starts).astype(np.float32)
        diff[starts] += share
        diff[ends] -= share
    return np.cumsum(diff[:-1])


# letters of both cases, function words, digits, punctuation, spaces and other scripts, so every
# stream (bytes, classes, function-word skeleton, words and word pairs) has something to hash
WORDING = st.lists(st.sampled_from(["the", "The", "of", "I", "would", "be", "happy", "to", "help", "Order", "42",
                                    "café", "naïve", "x", ",", ".", "!", " ", "  ", "zzzzzzzzzzzzzzzzzz", "Ünïcode",
                                    "😀", "it's", "\n"]), max_size=14).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(WORDING, max_size=6), st.sampled_from([HashSpec((3, 4, 5), (4, 6), 1 << 10, (6,), (1, 2)),
                                                       HashSpec((1, 7), (), 1 << 4, (2,), (2,)),
                                                       HashSpec((2,), (3,), 1 << 19)]))
def test_each_bytes_share_from_c_equals_the_numpy_definition_bit_for_bit(texts, spec):
    weights = np.random.default_rng(len(texts)).normal(size=spec.table_size).astype(np.float32)
    explainer = PhraseExplainer(weights, spec, 4096)
    packed = pack_turns(texts, 4096)
    np.testing.assert_array_equal(explainer.byte_shares(packed.stream, packed.byte_turn),
                                  reference_byte_shares(explainer, packed.stream, packed.byte_turn))


def test_each_bytes_share_of_the_shipped_model_on_real_turns_equals_the_definition():
    from echogate.model import BotOriginModel
    from echogate.settings import default_model_path
    explainer = BotOriginModel(default_model_path()).explainer
    packed = pack_turns([LLM_TURN, "hi", "", "Thanks!! My order #123 never came :(", LLM_TURN.upper()], 4096)
    shares = explainer.byte_shares(packed.stream, packed.byte_turn)
    np.testing.assert_array_equal(shares, reference_byte_shares(explainer, packed.stream, packed.byte_turn))
    assert shares[: len(LLM_TURN)].sum() > 0  # the machine-written turn reads as machine evidence
