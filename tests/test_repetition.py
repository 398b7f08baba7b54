"""Repetition features (echogate.repetition) against plain Python references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echogate import _repetition, repetition
from echogate.corpus import turn_keys
from echogate.repetition import STOP_WORDS, TRANSCRIPT_STATS, TURN_FEATURES, analyse_texts, side_means
from echogate.text import pack_turns, role_codes

F = {name: i for i, name in enumerate(TURN_FEATURES)}
S = {name: i for i, name in enumerate(TRANSCRIPT_STATS)}


def run(texts, roles, doc=None, n_docs=None):
    doc = np.zeros(len(texts), np.int64) if doc is None else np.asarray(doc)
    return analyse_texts(texts, roles, doc, int(doc.max()) + 1 if n_docs is None else n_docs)


def test_verbatim_repeat_is_all_repeated_and_new_content_is_not():
    roles = ["customer", "agent", "customer", "agent", "agent"]
    texts = ["my card is lost", "I can help you with that today.", "my card is lost",
             "I can help you with that today.", "Your new card ships tomorrow morning."]
    rep = run(texts, roles)
    assert rep.turn[1].tolist() == [0, 0, 0, 0]
    assert rep.turn[3, F["trigram_self"]] == 1 and rep.turn[3, F["content_self"]] == 1
    assert rep.turn[2, F["trigram_self"]] == 1  # each side is compared with its own earlier turns
    assert rep.turn[4, F["trigram_self"]] == 0
    assert rep.turn[4, F["content_other"]] == pytest.approx(1 / 5)  # "card" was the customer's word


def test_paraphrase_keeps_content_words_and_echo_counts_the_other_side():
    roles = ["customer", "agent", "agent"]
    texts = ["I need a vegetarian restaurant in Berlin.",
             "What price range for the vegetarian restaurant in Berlin?",
             "Which price range would suit you?"]
    rep = run(texts, roles)
    # "vegetarian restaurant in", "restaurant in berlin" of 7 trigrams; vegetarian, restaurant, berlin of
    # price, range, vegetarian, restaurant, berlin
    assert rep.turn[1, F["trigram_other"]] == pytest.approx(2 / 7)
    assert rep.turn[1, F["content_other"]] == pytest.approx(3 / 5)
    assert rep.turn[2, F["trigram_self"]] == 0  # a paraphrase shares no trigram...
    assert rep.turn[2, F["content_self"]] == pytest.approx(2 / 3)  # ...but price and range of price, range, suit


def test_punctuation_and_case_do_not_hide_a_repeat_and_short_turns_are_not_looping():
    roles = ["agent"] * 4
    texts = ["Your table for 2 at Sino is booked!", "your table, for 4 at sino is BOOKED.", "Thanks.", "Thanks."]
    rep = run(texts, roles)
    assert rep.turn[1, F["trigram_self"]] == 0.5  # the 3 trigrams holding the changed slot are new
    assert rep.turn[3].tolist() == [0, 0, 0, 0]  # no trigram; "thanks" is a stop word


def test_duplicate_turns_fold_case_and_digits_and_count_their_characters():
    roles = ["agent", "customer", "agent", "agent", "agent"]
    texts = ["Order 123 has shipped today.", "thanks a lot", "order 456 has shipped today.", "Anything else for you?",
             "ok"]
    rep = run(texts, roles)
    assert rep.transcript[0, S["duplicate_turn_fraction"]] == pytest.approx(1 / 4)
    agent_chars = sum(len(t) for t, r in zip(texts, roles) if r == "agent")
    assert rep.transcript[0, S["duplicate_turn_char_fraction"]] == pytest.approx(len(texts[2]) / agent_chars)  # ASCII


def test_side_means_average_the_agent_side():
    doc = np.array([0, 0, 0, 1, 1])
    side = np.array([False, True, True, True, True])
    np.testing.assert_allclose(side_means(np.array([9.0, 1, 0, 0.5, 0.5]), side, doc, 3), [0.5, 0.5, 0])


def test_the_kernel_checks_its_buffers_before_reading_them():
    packed = pack_turns(["we can help you today", "sorry it is late"], 4096)
    codes = role_codes(["agent", "agent"])
    keys = turn_keys(packed, codes)
    good = repetition.analyse(packed, codes, np.array([0, 1]), 2, keys)
    assert good.turn.shape == (2, 4) and good.side_trigrams.size == 5
    with pytest.raises(ValueError, match="out of range or out of order"):
        repetition.analyse(packed, codes, np.array([1, 0]), 2, keys)  # transcripts not grouped
    with pytest.raises(ValueError, match="out of range"):
        repetition.analyse(packed._replace(lengths=packed.lengths + 10), codes, np.array([0, 1]), 2, keys)
    with pytest.raises(ValueError, match="turn_keys"):
        repetition.analyse(packed, codes, np.array([0, 1]), 2, keys[:1])


def test_a_long_conversation_grows_its_table_and_keeps_every_turn():
    def code(i):  # a distinct word per turn (digits would fold together in the turn keys)
        return "".join("abcdefghijklmnopqrstuvwxyz"[i // 26**k % 26] for k in range(3))

    texts = [f"reply {code(i)} concerns parcel {code(i)} today" for i in range(3000)]
    texts[2999] = texts[5]
    rep = run(texts, ["agent"] * 3000)
    assert rep.transcript[0, S["duplicate_turn_fraction"]] == pytest.approx(1 / 3000)
    assert rep.turn[2999, F["trigram_self"]] == 1.0
    assert rep.turn[5, F["content_self"]] == pytest.approx(4 / 5)  # all but its own code word
    assert rep.turn[1:2999, F["trigram_self"]].max() == 0.0


def deflate_sizes(texts: list[bytes]) -> list[int]:
    out = np.empty(len(texts), np.int64)
    _repetition.deflate_sizes(b"".join(texts), np.cumsum([len(t) for t in texts], dtype=np.int64), out)
    return out.tolist()


def test_compression_ratio_is_the_side_over_its_deflate_size():
    varied = ["Your parcel left our Leeds depot this morning.", "It should reach you by Friday afternoon.",
              "A courier will ring before delivering it."]
    looping = ["Your parcel left our Leeds depot this morning."] * 3
    customer = ["where is my parcel"] * 3
    rep = run([t for pair in zip(customer, varied) for t in pair] + [t for pair in zip(customer, looping) for t in pair],
              ["customer", "agent"] * 6, np.repeat([0, 1], 6), 3)  # transcript 2 has no turns
    side = "".join(varied).encode()
    assert rep.transcript[0, S["compression_ratio"]] == pytest.approx(len(side) / deflate_sizes([side])[0])
    assert rep.transcript[1, S["compression_ratio"]] > 1.5 * rep.transcript[0, S["compression_ratio"]]
    assert rep.transcript[2, S["compression_ratio"]] == 0.0


def _texts(seed: int) -> list[bytes]:
    """Texts of many kinds and sizes: word salad from a small or a large vocabulary, a paragraph
    repeated with changes, random bytes (which no encoder compresses), a single byte."""
    rng = np.random.default_rng(seed)
    small = [w.encode() for w in "the order parcel refund card help you your we can will today thanks sorry".split()]
    large = [bytes(rng.integers(97, 123, size=rng.integers(2, 10)).astype(np.uint8)) for _ in range(2000)]
    out = []
    for n in (20, 80, 300, 1500):
        out.append(b" ".join(rng.choice(small, n)))
        out.append(b" ".join(rng.choice(large, n)))
        base = b" ".join(rng.choice(large, 30))
        out.append(b". ".join(base[: rng.integers(50, len(base))] for _ in range(n // 20 + 1)))
        out.append(bytes(rng.integers(0, 256, size=n * 5).astype(np.uint8)))
    return out + [b"a"]


@pytest.mark.parametrize("seed", range(3))
def test_deflate_size_estimate_follows_a_real_encoder(seed):
    """The estimate (a fast encoder's greedy parse, symbols at their entropy, the cheapest block
    type) is no encoder, so it is held to one of its kind: within 8% of zlib's raw DEFLATE size at
    level 1, its fastest, or 3 bytes for tiny texts, on texts from incompressible (stored) to
    highly repetitive. (zlib's level 6 searches longer for matches and writes repetitive text up
    to 30% smaller than any greedy parse.)"""
    import zlib

    texts = _texts(seed)
    for text, estimate in zip(texts, deflate_sizes(texts)):
        actual = len(zlib.compress(text, 1, -15))
        assert abs(estimate - actual) <= max(0.08 * actual, 3), (len(text), estimate, actual)


def test_deflate_sizes_refuses_ends_out_of_order():
    with pytest.raises(ValueError, match="out of order"):
        _repetition.deflate_sizes(b"abcdef", np.array([4, 2], np.int64), np.empty(2, np.int64))
    with pytest.raises(ValueError, match="past the text"):
        _repetition.deflate_sizes(b"abc", np.array([4], np.int64), np.empty(1, np.int64))


# Bytes that separate words for the kernel: ASCII whitespace, control bytes and punctuation but
# the apostrophe; only ASCII letters are lower-cased (a plain-bytes reference of that rule).
_SEPARATING = set(range(33)) | set(b"!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\x7f")
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_STOP = {w.encode() for w in STOP_WORDS}


def _words(text: str) -> list[bytes]:
    data = text.encode("utf-8").translate(_LOWER)
    return bytes(b if b not in _SEPARATING else 32 for b in data).split()


PIECES = st.sampled_from(["we", "can", "help", "you", "the", "Card", "card", "CARD!", "Ünï", "ünï", "it's", "ok",
                          "thanks", "\x00", "\x01x", "\x7f", "😀", "pay-day", " ", "  ", "\t", ".", "order 12"])
TURNS = st.lists(st.tuples(st.sampled_from(["agent", "customer", "system", "bot"]),
                           st.lists(PIECES, max_size=12).map(" ".join)), max_size=14)


@settings(max_examples=300, deadline=None)
@given(st.lists(TURNS, min_size=1, max_size=4))
def test_kernel_matches_a_plain_bytes_reference_on_arbitrary_turns(transcripts):
    """The C kernel against the rules in plain Python: shares of distinct trigrams and content
    words used earlier by a turn's own side and by the other, the side itself (agents, or every
    turn when there are none), its distinct-3 and top trigram share; a transcript without turns
    has every statistic at 0."""
    from echogate.text import normalize

    texts = [normalize(t) for turns in transcripts for _, t in turns]
    roles = [r for turns in transcripts for r, _ in turns]
    doc = np.repeat(np.arange(len(transcripts)), [len(turns) for turns in transcripts]).astype(np.int64)
    rep = run(texts, roles, doc, len(transcripts))
    k = 0
    for d, turns in enumerate(transcripts):
        has_agent = any(r == "agent" for r, _ in turns)
        earlier: dict = {}
        side_grams: list = []
        for role, _ in turns:
            w = _words(texts[k])
            grams = [set(zip(w, w[1:], w[2:])), {x for x in w if x not in _STOP}]
            agent = role == "agent"
            for j, g in enumerate(grams):
                own, other = earlier.setdefault((agent, j), set()), earlier.setdefault((not agent, j), set())
                assert rep.turn[k, j] == pytest.approx(len(g & own) / len(g) if g else 0.0)
                assert rep.turn[k, j + 2] == pytest.approx(len(g & other) / len(g) if g else 0.0)
                own |= g
            assert rep.side[k] == (agent or not has_agent)
            if rep.side[k]:
                side_grams += list(zip(w, w[1:], w[2:]))
            k += 1
        if not turns:
            assert rep.transcript[d].tolist() == [0] * len(TRANSCRIPT_STATS)
        distinct = len(set(side_grams))
        top = max((side_grams.count(g) for g in set(side_grams)), default=0)
        assert rep.transcript[d, S["distinct_3"]] == pytest.approx(distinct / len(side_grams) if side_grams else 0)
        assert rep.transcript[d, S["top_trigram_fraction"]] == pytest.approx(top / len(side_grams) if top > 1 else 0)
        assert rep.side_trigrams[rep.side_trigram_transcript == d].size == len(side_grams)
