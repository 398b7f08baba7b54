"""Text normalisation and byte packing shared by the scorer and the trainer.

The ONNX model reads raw UTF-8 bytes; everything the model sees passes through
`normalize` first so that the cheap tricks that hide machine text from byte n-grams
(full-width letters, zero-width characters, odd whitespace, look-alike letters of other
scripts, scrambled case) cannot move a score. `NORMALIZATION_VERSION` is written into the
model metadata: a model trained with one normalisation refuses to load with another. The
version covers `model_texts` too, the step between normalised text and the model's bytes.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from itertools import accumulate, repeat
from typing import NamedTuple

import numpy as np

from echogate import _text
from echogate.types import OTHER_ROLE, ROLE_CODES

NORMALIZATION_VERSION = "nfkc-zw-ws-homoglyph-oddcase-2+digitruns-detok"

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # zero-width characters and the soft hyphen

# Cyrillic, Greek and Armenian letters drawn like Latin ones (their Latin targets in Unicode's
# confusables.txt). Swapped into machine text they break every byte n-gram they touch: half of
# CuCom's a, e, o, c, p turned Cyrillic took its mean machine probability from 0.99 to 0.005.
_LATIN_LOOKALIKES = {
    "a": "\u0430\u03b1", "c": "\u0441\u03f2", "d": "\u0501", "e": "\u0435", "h": "\u04bb\u0570",
    "i": "\u0456\u03b9", "j": "\u0458\u03f3", "k": "\u03ba", "l": "\u04cf", "o": "\u043e\u03bf\u0585",
    "p": "\u0440\u03c1", "q": "\u051b", "s": "\u0455", "u": "\u03c5\u057d", "v": "\u03bd", "w": "\u051d",
    "x": "\u0445", "y": "\u0443",
    "A": "\u0410\u0391", "B": "\u0412\u0392", "C": "\u0421\u03f9", "E": "\u0415\u0395", "H": "\u041d\u0397",
    "I": "\u0406\u0399\u04c0", "J": "\u0408", "K": "\u041a\u039a", "M": "\u041c\u039c", "N": "\u039d",
    "O": "\u041e\u039f\u0555", "P": "\u0420\u03a1", "Q": "\u051a", "S": "\u0405", "T": "\u0422\u03a4",
    "W": "\u051c", "X": "\u0425\u03a7", "Y": "\u04ae\u03a5", "Z": "\u0396",
}
_TO_LATIN = str.maketrans({c: latin for latin, chars in _LATIN_LOOKALIKES.items() for c in chars})
_LOOKALIKE = "".join(chars for chars in _LATIN_LOOKALIKES.values())
_HAS_LOOKALIKE = re.compile(f"[{_LOOKALIKE}]")
_WORD_WITH_LOOKALIKE = re.compile(rf"[^\W\d_]*[{_LOOKALIKE}][^\W\d_]*")
_GREEK_CYRILLIC_ARMENIAN = re.compile("[\u0370-\u058f\u1f00-\u1fff]")

# A word with a capital after a small letter, or two capitals before a small one ("heLlo", "HEllo";
# "iPhone", "McDonald", "URLs" too). Case swapped at random in a tenth of the letters took l2r
# rewrites' mean machine probability from 0.82 to 0.32; with such words read lower-cased, 0.78.
# Words written that way on purpose are few and lose nothing the model needs by it.
_ODD_CASE = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")
_ODD_CASE_WORD = re.compile(r"\b[A-Za-z]*(?:[a-z][A-Z]|[A-Z]{2}[a-z])[A-Za-z]*\b")  # slower: after _ODD_CASE
# Text in capitals (a shouting customer, a system that logs upper case) is read lower-cased too: in
# capitals, SGD's human dialogues scored 0.83 on average and l2r's human originals 0.63.
_CAPITAL_RUN = re.compile("[A-Z]{3}")
_CAPITALS, _SMALLS = bytes(range(65, 91)), bytes(range(97, 123))
# echogate._text.normalization_flags' bits
_NOT_PLAIN, _ODD_CASE_FLAG, _CAPITAL_RUN_FLAG = 1, 2, 4
# model_texts reads every run of digits as DIGIT_MARK, as _text.mask_digit_runs does for ASCII texts
# (echogate.explain reads both, to quote the digits back)
DIGIT_RUN = re.compile(r"\d+")
DIGIT_MARK = "0"
# What `detokenize` joins to the word before (regular-expression parts; echogate.explain reads
# them too, to find a phrase of the joined text in the tokenised one): sentence punctuation, clitics
DETACHED_PUNCTUATION = "[.,!?;:]"
CLITICS = "n't|'(?:s|m|re|ve|ll|d)"
# a space before a run of sentence punctuation that ends a word, or before a clitic ("n't", "'s")
_DETACHED = re.compile(rf" (?={DETACHED_PUNCTUATION}+(?:\s|$)|(?:{CLITICS})\b)", re.IGNORECASE)


def shouted(text: str) -> bool:
    """More capital than small ASCII letters, three capitals in a row among them ("OK" and "I"
    alone are not shouting, "USA and NYC trip" is not either). Counted on the UTF-8 bytes, where
    bytes.translate runs in C (a regex count took 8 ns a byte)."""
    b = text.encode()
    capitals = len(b) - len(b.translate(None, _CAPITALS))
    return (capitals >= 3 and capitals > len(b) - len(b.translate(None, _SMALLS))
            and _CAPITAL_RUN.search(text) is not None)


def _to_latin(match: re.Match) -> str:
    """A word with look-alike letters in Latin, unless letters of its own script remain (a Russian
    or Greek word keeps its spelling; its one-letter words "а", "с", "у", "ο" do become Latin)."""
    folded = match.group().translate(_TO_LATIN)
    return match.group() if _GREEK_CYRILLIC_ARMENIAN.search(folded) else folded


def normalize(text: str) -> str:
    """NFKC, zero-width and soft-hyphen characters removed, Latin look-alike letters of other
    scripts read as Latin in the words they appear in, whitespace runs collapsed, text in
    capitals and words with capitals inside them lower-cased.

    ASCII text is already NFKC and has no zero-width characters or look-alikes: it skips straight
    to the whitespace step (the common case, and this runs once per turn on the hot path).
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        for c in _ZERO_WIDTH:  # str.replace scans in C; str.translate looks up every character in a dict
            text = text.replace(c, "")
        if _HAS_LOOKALIKE.search(text):
            text = _WORD_WITH_LOOKALIKE.sub(_to_latin, text)
    return _fold_case(" ".join(text.split()))


def _fold_case(text: str, capital_run: bool = True, odd_case: bool = True) -> str:
    """Text in capitals lower-cased (shouted), else its words with capitals inside them.
    `capital_run` or `odd_case` False: normalize_all's byte scan found none, so no regex looks."""
    if capital_run and shouted(text):
        return text.lower()
    return _ODD_CASE_WORD.sub(_lower, text) if odd_case and _ODD_CASE.search(text) else text


def _lower(match: re.Match) -> str:
    return match.group().lower()


class Packed(NamedTuple):
    """Turns packed into one UTF-8 byte stream: what the model, the corpus keys and the
    repetition features all read. `starts` and `lengths` are each turn's first byte and byte
    count in it (the model's input)."""

    stream: np.ndarray  # uint8 [N]
    starts: np.ndarray  # int64 [R]
    lengths: np.ndarray  # int64 [R]

    @property
    def byte_turn(self) -> np.ndarray:
        """The turn of each byte, int64 [N], for the readers that walk the stream byte by byte
        (the trainer's n-gram hashes, the phrase explainer); the scorer's hot path never builds it."""
        return np.repeat(np.arange(self.lengths.size, dtype=np.int64), self.lengths)


def normalize_all(texts: Sequence[str]) -> list[str]:
    """`normalize` of every text, each touched only where its characters show a step could change it.

    Most turns are plain ASCII with single spaces. One pass in C (echogate/_text.c) flags each
    text: one that is not ASCII, has a control character or a space beside a space or at its edge
    goes through `normalize`; of the others, one with a small letter before a capital or two
    capitals before a small one goes through the word-case rule, one with three capitals in a row
    through the shouting test; the rest come back as they are. (A whole-batch NFKC for the handful
    of texts that needed it once cost 23 ms per 256 transcripts; the NumPy scan of the joined batch
    this pass replaces, 0.76 ms per 256 SGD transcripts.)
    """
    texts = texts if isinstance(texts, list) else list(texts)
    out = list(texts)
    flags = _text.normalization_flags(texts)
    for i in np.flatnonzero(np.frombuffer(flags, np.uint8)).tolist():
        f = flags[i]
        out[i] = (normalize(texts[i]) if f & _NOT_PLAIN
                  else _fold_case(texts[i], bool(f & _CAPITAL_RUN_FLAG), bool(f & _ODD_CASE_FLAG)))
    return out


def model_texts(normalized: list[str]) -> list[str]:
    """The texts as the model reads them: every run of digits one "0", and tokenised text
    joined up again (`detokenize`).

    Numbers carry no sign of who wrote a text, but their digits made byte n-grams that the model
    learnt from one collection: CuCom's LLM conversations are full of long order numbers, the
    human dialogues have few. Appending "48329184751928374" to half the customer turns of 1,000
    human SGD dialogues took the share flagged at 0.5 from 0.003 to 0.513 (bot-origin-0.9.1).
    Only the model and its phrase explainer read these texts; the content hash, the corpus keys
    (which mask numbers themselves) and the repetition features read the normalised ones. The
    same list comes back when no text changes, so the caller can skip packing it again.
    """
    # ASCII texts without a detached mark in C (a regex per text: 2 ms a batch), the others here
    out, changed = _text.mask_digit_runs(normalized)
    if None in out:
        for i, text in enumerate(normalized):
            if out[i] is None:
                out[i] = detokenize(DIGIT_RUN.sub(DIGIT_MARK, text))
                changed = changed or out[i] != text
    return out if changed else normalized


def detokenize(text: str) -> str:
    """The space a tokeniser puts before punctuation and clitics taken out: "i 'm fine , thanks ."
    -> "i'm fine, thanks.", "do n't" -> "don't".

    Older dialogue corpora and the bots trained on them write text tokenised, on both sides of
    the conversation. The model learnt from untokenised text, where " ." hardly ever occurs: on
    held-out folds with both sides tokenised, STAR's unseen-domain turns fell from AUROC 0.775 /
    0.890 to 0.715 / 0.729 and l2r's by up to 0.03; joined up again they scored 0.775 / 0.890 and
    l2r within 0.004 of the original (raw model scores, no corpus signal; docs/benchmarks.md).
    Emoticons stay as they are (" :)" has no space or end after its colon).
    """
    return _DETACHED.sub("", text)


def pack_turns(normalized: Sequence[str], max_bytes: int) -> Packed:
    """Concatenate already-normalised turns, as UTF-8, into one byte stream.

    Each turn is cut to `max_bytes` (a cut may fall inside a character: the model reads bytes);
    an empty turn contributes no bytes (its n-gram count is zero). Packed in C
    (echogate/_text.c), one pass over the turns.
    """
    texts = normalized if isinstance(normalized, list) else list(normalized)
    stream, starts, lengths = _text.pack_turns(texts, max_bytes)
    return Packed(np.frombuffer(stream, np.uint8), np.frombuffer(starts, np.int64), np.frombuffer(lengths, np.int64))


def role_codes(roles: Sequence[str]) -> np.ndarray:
    """int64 code per turn role (echogate.types.ROLE_CODES; OTHER_ROLE for any other name)."""
    return np.fromiter(map(ROLE_CODES.get, roles, repeat(OTHER_ROLE, len(roles))), np.int64, len(roles))


def content_sha256(roles: Sequence[str], texts: Sequence[str], normalized: bool = False) -> str:
    """Hash of the canonical content: for each turn in order, role, 0x1F, normalised text, 0x1E."""
    if not normalized:
        texts = normalize_all(texts)
    return content_sha256_all(roles, texts, [len(texts)])[0]


def content_sha256_all(roles: Sequence[str], normalized: Sequence[str], counts: Sequence[int]) -> list[str]:
    """content_sha256 of each transcript of a batch: `counts` turns each, in order, their texts
    already normalised. The canonical bytes of the whole batch are built in one C pass
    (echogate/_text.c) and each transcript's slice of them hashed."""
    if len(roles) != len(normalized):
        raise ValueError(f"{len(roles)} roles for {len(normalized)} texts")
    if sum(counts) != len(normalized):
        raise ValueError(f"counts add up to {sum(counts)} turns, not {len(normalized)}")
    stream, turn_ends = _text.canonical_content(list(roles), list(normalized))
    # transcript t spans bytes [bounds[t], bounds[t + 1]): from the end of the turn before its
    # first to the end of its last (empty for a transcript of no turns)
    ends = memoryview(turn_ends).cast("q")
    bounds = [0, *(ends[through - 1] if through else 0 for through in accumulate(counts))]
    view, sha256 = memoryview(stream), hashlib.sha256
    return [sha256(view[a:b]).hexdigest() for a, b in zip(bounds, bounds[1:])]
