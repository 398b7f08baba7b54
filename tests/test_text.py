"""Normalisation and packing: what the model, the corpus keys and the repetition features read."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echogate.text import (content_sha256, content_sha256_all, detokenize, model_texts, normalize, normalize_all,
                           pack_turns)

# whitespace of every kind, combining marks, compatibility forms, zero-width characters, NUL
PIECES = st.sampled_from([" ", "  ", "\t", "\n", "\x1c", "\x1f", "\u00a0", "\u3000", "\u2028", "\u0085", "a", "B", "e",
                          "\u0301", "\u1100", "\u1161", "\u11a8", "\ufb01", "\uff46", "\u200b", "\ufeff", "\u00ad",
                          "\u212b", "\x00", "😀", "x.y", "\u0430", "\u041e", "\u03bf", "\u0434", "aB", "Cd", "eF",
                          "GHI", "7", "042", "\u0663", " .", " , ", " ?!", ":)", " n't", " 's", "'", "n"])
TEXTS = st.lists(st.one_of(st.lists(PIECES, max_size=8).map("".join), st.text(max_size=20)), max_size=8)


@settings(max_examples=500, deadline=None)
@given(TEXTS)
def test_normalising_a_batch_equals_normalising_each_text(texts):
    assert normalize_all(texts) == [normalize(t) for t in texts]


def test_nothing_composes_across_texts_and_already_normal_text_comes_back_as_is():
    # a text ending in a letter and the next starting with a combining accent stay apart
    assert normalize_all(["cafe", "\u0301 au lait", "\u1100", "\u1161"]) == ["cafe", "\u0301 au lait", "\u1100", "\u1161"]
    assert normalize_all(["  Hello \t world ", "", " ", "a\x00b  c"]) == ["Hello world", "", "", "a\x00b c"]
    texts = ["Hello world", "ok", "fine thanks"]
    assert all(a is b for a, b in zip(normalize_all(texts), texts))
    # only the texts that change are touched, even in a batch that is not all ASCII
    mixed = ["Hello world", "caf\u00e9\u200b  au\u00a0lait", "ok", "two\nlines"]
    out = normalize_all(mixed)
    assert out == ["Hello world", "caf\u00e9 au lait", "ok", "two lines"]
    assert out[0] is mixed[0] and out[2] is mixed[2]


# "I am happy to assist you with your order." with Cyrillic and Greek look-alikes in most words
DISGUISED = ("I \u0430m h\u0430pp\u0443 t\u03bf \u0430ssist \u0443\u043eu with \u0443\u043eur \u041erd\u0435r.")


def test_look_alike_letters_of_other_scripts_read_as_latin_in_the_words_they_hide_in():
    assert normalize(DISGUISED) == "I am happy to assist you with your Order."
    assert normalize_all(["ok", DISGUISED]) == ["ok", "I am happy to assist you with your Order."]
    # words of those scripts keep their spelling; only their one-letter words "у", "с" become Latin
    assert normalize("я был у врача с другом") == "я был y врача c другом"
    assert normalize("Γιώργος είναι εδώ, café") == "Γιώργος είναι εδώ, café"


def test_words_with_capitals_inside_them_are_read_lower_cased():
    """Case swapped at random breaks byte n-grams as look-alikes do; a word cased that way on
    purpose (a brand, an identifier, a plural acronym) loses nothing the model needs."""
    assert normalize("I comPletely undErstand yoUr frustRation") == "I completely understand your frustration"
    assert normalize("My iPhone, the FAQs, O'Brien and THE CEO") == "My iphone, the faqs, O'Brien and THE CEO"
    assert normalize_all(["ok", "i aM hApPy tO hElP", "HEllo"]) == ["ok", "i am happy to help", "hello"]
    # only ASCII letters count: a word that runs on into other letters is left as it is
    assert normalize("na\u00efveT\u00e9 caf\u00c9s") == "na\u00efveT\u00e9 caf\u00c9s"


def test_text_in_capitals_is_read_lower_cased():
    assert normalize("WHERE IS MY ORDER?? I PAID TWO WEEKS AGO") == "where is my order?? i paid two weeks ago"
    texts = ["OK", "I", "Flights from NYC to LAX on the 5th", "I CoMpLeTeLy", "PLEASE HELP ME", "ASAP please"]
    assert normalize_all(texts) == ["OK", "I", "Flights from NYC to LAX on the 5th", "I completely", "please help me",
                                    "ASAP please"]
    assert normalize_all(texts) == [normalize(t) for t in texts]


@settings(max_examples=500, deadline=None)
@given(TEXTS)
def test_the_c_pass_of_model_texts_equals_the_regular_expressions(texts):
    assert model_texts(texts) == [detokenize(re.sub(r"\d+", "0", t)) for t in texts]


def test_the_model_reads_each_run_of_digits_as_one_zero():
    texts = ["Order 483-2918475-1928374 shipped", "at 5:30 for $25.00", "no numbers", "\u0663\u0664 items"]
    assert model_texts(texts) == ["Order 0-0-0 shipped", "at 0:0 for $0.0", "no numbers", "0 items"]
    plain = ["no numbers", "here either"]
    assert model_texts(plain) is plain  # nothing to mask: the caller's packing stands


def test_the_model_reads_tokenised_text_joined_up():
    texts = ["i 'm fine , thanks . do n't worry !", "WAIT ... what ?!", "Address : 221B, room 4 ."]
    assert model_texts(texts) == ["i'm fine, thanks. don't worry!", "WAIT... what?!", "Address: 0B, room 0."]
    # emoticons, quotes and a lone apostrophe keep their space
    kept = ["thanks :)", "ok ;)", "the 'sorry' note", "rock 'n' roll"]
    assert model_texts(kept) is kept


def test_packing_records_where_each_turn_starts_and_how_long_it_is():
    packed = pack_turns(["héllo", "", "ab", "x" * 10], 4)
    assert packed.stream.tobytes() == "héll".encode()[:4] + b"ab" + b"xxxx"
    assert packed.starts.tolist() == [0, 4, 4, 6] and packed.lengths.tolist() == [4, 0, 2, 4]
    np.testing.assert_array_equal(packed.byte_turn, np.repeat(np.arange(4), packed.lengths))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=10), st.integers(0, 40))
def test_packing_equals_encoding_and_cutting_each_turn(texts, max_bytes):
    """The C packer against the definition: each turn's UTF-8, cut to max_bytes (a cut may fall
    inside a character), concatenated; any text hypothesis writes (it writes no lone surrogates), any cut."""
    encoded = [t.encode("utf-8")[:max_bytes] for t in texts]
    packed = pack_turns(tuple(texts), max_bytes)
    assert packed.stream.tobytes() == b"".join(encoded)
    assert packed.lengths.tolist() == [len(e) for e in encoded]
    assert packed.starts.tolist() == [sum(map(len, encoded[:r])) for r in range(len(texts))]
    assert packed.byte_turn.tolist() == [r for r, e in enumerate(encoded) for _ in e]


def test_packing_refuses_what_is_not_utf8_text():
    with pytest.raises(UnicodeEncodeError):
        pack_turns(["fine", "\ud800"], 10)
    with pytest.raises(TypeError, match="turn 1 is not a str"):
        pack_turns(["fine", b"bytes"], 10)


def test_the_content_hash_is_sha256_of_role_unit_separator_text_record_separator_per_turn():
    """The canonical form is part of the store's contract (`content_sha256` column): pinned here
    against hashlib on the bytes spelled out, text normalised first."""
    canonical = "customer\x1fCaf\u00e9 au lait?\x1eagent\x1fYes, one caf\u00e9.\x1e".encode()
    assert content_sha256(["customer", "agent"], ["Caf\u00e9\u200b  au lait?", "Yes, one caf\u00e9."]) == \
        hashlib.sha256(canonical).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["customer", "agent", "système"]), st.text(max_size=20)),
                         max_size=4), max_size=6))
def test_hashing_a_batch_equals_hashing_each_transcript(transcripts):
    """The scorer hashes a batch in one C pass; each transcript's hash is the one of its turns
    alone, a transcript without turns included."""
    roles = [role for turns in transcripts for role, _ in turns]
    texts = normalize_all([text for turns in transcripts for _, text in turns])
    expected, offset = [], 0
    for turns in transcripts:
        canonical = "".join(f"{r}\x1f{t}\x1e" for r, t in zip(roles[offset:], texts[offset: offset + len(turns)]))
        expected.append(hashlib.sha256(canonical.encode()).hexdigest())
        offset += len(turns)
    assert content_sha256_all(roles, texts, [len(turns) for turns in transcripts]) == expected


def test_hashing_refuses_mismatched_batches():
    with pytest.raises(ValueError, match="2 roles for 1 texts"):
        content_sha256_all(["customer", "agent"], ["hi"], [2])
    with pytest.raises(ValueError, match="counts add up to 3 turns, not 2"):
        content_sha256_all(["customer", "agent"], ["hi", "hello"], [1, 2])
    with pytest.raises(UnicodeEncodeError):
        content_sha256_all(["customer"], ["\ud800"], [1])
