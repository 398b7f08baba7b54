"""The hashed byte n-gram features, in NumPy: the reference the ONNX graph reproduces.

An n-gram starting at byte i of the packed stream (see `echogate.text.pack_turns`) is
hashed as  (sum_k byte[i+k] * BASE**k + salt(n)) mod TABLE_SIZE  and counts only when all
its bytes belong to the same turn. The table size is a power of two, so the graph takes the
remainder with a bitwise AND (onnxruntime's integer Mod took 2.9 ms of a batch's 19), and
BASE is a large odd number rather than a small prime: modulo 2**19, 257 = 2**8 + 1 would make
a hash's low byte the sum of the n-gram's bytes. Three byte streams are hashed: the bytes
themselves, their writing-style classes (`SHAPE_CLASSES`) and a function-word skeleton
(`function_word_stream`); and the words, alone and in pairs (`word_ngram_spans`).
The trainer builds its design matrix from these hashes; `echogate.training.graph` emits the
same arithmetic as ONNX ops, and a test checks that both agree bit for bit.
"""
from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Odd, so every power is odd too: 0x5BD1E995 (MurmurHash2's multiplier) cut to 19 bits. On 12,000
# dataset texts its n-grams collided about as often as under random hashing (byte 3-grams a third
# as often, 4-grams 18% more often than 257 modulo the prime 2**19 - 1). 0x779B1 (2**32 / golden
# ratio, cut) collided a little less but trained to held-out macro AUROC 0.769 against this one's
# 0.788: the dialogue fold spc_vs_sgd went 0.566 against 0.738 on the constant alone.
BASE = 0x1E995
SALT = 1_000_003
# This reference sums an n-gram's terms (each under 2**8 * table size) in int64: up to these
# bounds none passes 2**62, so it holds them exactly. The graph (echogate.training.graph) builds
# them in uint32, modulo 2**32, which leaves the same remainder by any power-of-two table size.
MAX_ORDER, MAX_TABLE_SIZE = 7, 1 << 24
WORD_BASE = 257  # the function-word hash (`_words`), older than BASE and kept: it picks the words


SHAPE_SALT_OFFSET = 16
FUNCTION_SALT_OFFSET = 32
WORD_SALT_OFFSET = 48


def _shape_classes() -> np.ndarray:
    """Byte -> writing-style class: letters lose their identity but keep their case, digits
    collapse to one class, punctuation and whitespace stay themselves, and bytes of
    non-ASCII characters share a class. N-grams of this stream describe how a text is
    written (capitalisation, punctuation, spacing, word lengths) rather than what about."""
    table = np.arange(256, dtype=np.uint8)
    table[ord("a") : ord("z") + 1] = ord("a")
    table[ord("A") : ord("Z") + 1] = ord("A")
    table[ord("0") : ord("9") + 1] = ord("0")
    table[128:] = 128
    return table


SHAPE_CLASSES = _shape_classes()

# scikit-learn's English stop-word list (from the Glasgow Information Retrieval Group), frozen
# here so that a library release cannot change a model's function-word table.
FUNCTION_WORDS = tuple("""
a about above across after afterwards again against all almost alone along already also although
always am among amongst amoungst amount an and another any anyhow anyone anything anyway
anywhere are around as at back be became because become becomes becoming been before beforehand
behind being below beside besides between beyond bill both bottom but by call can cannot cant co
con could couldnt cry de describe detail do done down due during each eg eight either eleven
else elsewhere empty enough etc even ever every everyone everything everywhere except few
fifteen fifty fill find fire first five for former formerly forty found four from front full
further get give go had has hasnt have he hence her here hereafter hereby herein hereupon hers
herself him himself his how however hundred i ie if in inc indeed interest into is it its itself
keep last latter latterly least less ltd made many may me meanwhile might mill mine more
moreover most mostly move much must my myself name namely neither never nevertheless next nine
no nobody none noone nor not nothing now nowhere of off often on once one only onto or other
others otherwise our ours ourselves out over own part per perhaps please put rather re same see
seem seemed seeming seems serious several she should show side since sincere six sixty so some
somehow someone something sometime sometimes somewhere still such system take ten than that the
their them themselves then thence there thereafter thereby therefore therein thereupon these
they thick thin third this those though three through throughout thru thus to together too top
toward towards twelve twenty two un under until up upon us very via was we well were what
whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever
whether which while whither who whoever whole whom whose why will with within without would yet
you your yours yourself yourselves
""".split())
WORD_HASH_LETTERS = 14  # a word is hashed by its first letters only (no function word is longer)
WORD_TABLE_SIZE = 1 << 20


def _letter_codes() -> np.ndarray:
    """Byte -> its lower-case letter for ASCII letters, 0 for every other byte."""
    table = np.zeros(256, np.int64)
    table[ord("a") : ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
    table[ord("A") : ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
    return table


LETTER_CODES = _letter_codes()
# WORD_BASE**k mod WORD_TABLE_SIZE for a letter at position k < WORD_HASH_LETTERS; 0 past them
WORD_POWERS = np.array([pow(WORD_BASE, k, WORD_TABLE_SIZE) for k in range(WORD_HASH_LETTERS)] + [0], np.int64)


class Words(NamedTuple):
    letter: np.ndarray  # bool [N]: an ASCII letter
    word: np.ndarray  # int64 [N]: the word each byte belongs to or follows (0 before the first)
    hashes: np.ndarray  # int64 [words + 1]: each word's hash, slot 0 first
    first: np.ndarray  # int64 [words]: each word's first byte


def _words(stream: np.ndarray, turn_of_byte: np.ndarray) -> Words:
    """The words of a packed stream.

    A word is a run of ASCII letters within one turn, numbered from 1 (slot 0 stands before
    the first word; other bytes carry the previous word's number), hashed by its first
    WORD_HASH_LETTERS letters, case-insensitive.
    """
    codes = LETTER_CODES[stream]
    letter = codes > 0
    start = letter.copy()
    start[1:] &= ~letter[:-1] | (turn_of_byte[1:] != turn_of_byte[:-1])
    word = np.cumsum(start)
    first = np.flatnonzero(start)
    word_starts = np.concatenate([[0], first])
    position = np.arange(stream.shape[0]) - word_starts[word]
    terms = np.where(letter, codes * WORD_POWERS[np.minimum(position, WORD_HASH_LETTERS)], 0)
    hashes = np.bincount(word, weights=terms, minlength=word_starts.size).astype(np.int64) % WORD_TABLE_SIZE
    return Words(letter, word, hashes, first)


def _function_word_table() -> np.ndarray:
    """True at the hash of each function word, as `_words` hashes them."""
    stream = np.frombuffer(" ".join(FUNCTION_WORDS).encode("ascii"), np.uint8)
    table = np.zeros(WORD_TABLE_SIZE, np.bool_)
    table[_words(stream, np.zeros(stream.shape[0], np.int64))[2][1:]] = True
    return table


FUNCTION_WORD_TABLE = _function_word_table()


def function_word_stream(stream: np.ndarray, turn_of_byte: np.ndarray, words: Words | None = None) -> np.ndarray:
    """The text with its function words kept and every other byte replaced by its
    writing-style class: "I'd be happy to help with order 123" -> "I'a be aaaaa to aaaa with
    aaaaa 000".

    Text distortion (Stamatatos 2017): n-grams of this stream see how a writer strings
    common words together while the topic is masked, which carries authorship across domains
    better than content n-grams. A word (see `_words`) is a function word when its hash marks
    FUNCTION_WORD_TABLE, so a rare hash collision keeps another word: the graph does the same.
    Words end at a turn's edge, so a turn's skeleton does not depend on its neighbours.
    """
    letter, word, hashes, _ = words if words is not None else _words(stream, turn_of_byte)
    keep = letter & FUNCTION_WORD_TABLE[hashes][word]
    return np.where(keep, stream, SHAPE_CLASSES[stream])


@dataclass(frozen=True)
class HashSpec:
    """Which n-gram orders are hashed into how many buckets.

    `orders` apply to the raw byte stream, `shape_orders` to its writing-style classes
    (SHAPE_CLASSES), `function_orders` to its function-word skeleton (function_word_stream),
    `word_orders` (1 and/or 2) to its words (`_words`: runs of ASCII letters, by their first
    WORD_HASH_LETTERS letters, case-insensitive); all share one weight table, kept apart by
    their salts.
    """

    orders: tuple[int, ...] = (3, 4, 5)
    shape_orders: tuple[int, ...] = ()
    table_size: int = 1 << 19  # a power of two
    function_orders: tuple[int, ...] = ()
    word_orders: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.table_size < 2 or self.table_size > MAX_TABLE_SIZE or self.table_size & (self.table_size - 1):
            raise ValueError(f"hash table size {self.table_size} is not a power of two up to {MAX_TABLE_SIZE}")
        if max(self.orders + self.shape_orders + self.function_orders, default=0) > MAX_ORDER:
            raise ValueError(f"n-gram orders above {MAX_ORDER} are not supported")
        if not set(self.word_orders) <= {1, 2}:
            raise ValueError(f"word n-gram orders are 1 and 2, not {self.word_orders}")

    def to_metadata(self) -> dict[str, str]:
        return {"hash_orders": ",".join(map(str, self.orders)),
                "hash_shape_orders": ",".join(map(str, self.shape_orders)),
                "hash_function_orders": ",".join(map(str, self.function_orders)),
                "hash_word_orders": ",".join(map(str, self.word_orders)),
                "hash_table_size": str(self.table_size)}


def ngram_hashes(stream: np.ndarray, turn_of_byte: np.ndarray, spec: HashSpec) -> tuple[np.ndarray, np.ndarray]:
    """All valid n-gram hashes of a packed stream and the turn each belongs to."""
    found = list(ngram_spans(stream, turn_of_byte, spec))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate([h for h, _, _ in found]), turn_of_byte[np.concatenate([s for _, s, _ in found])]


class Stream(enum.IntEnum):
    """What a family of n-grams is hashed over (echogate._explain takes these numbers)."""

    BYTES = 0  # the bytes themselves
    SHAPE = 1  # their writing-style classes (SHAPE_CLASSES)
    SKELETON = 2  # the function-word skeleton (function_word_stream)
    WORDS = 3  # the words (`_words`), alone (order 1) and in pairs (order 2)


_SALT_OFFSETS = {Stream.BYTES: 0, Stream.SHAPE: SHAPE_SALT_OFFSET, Stream.SKELETON: FUNCTION_SALT_OFFSET,
                 Stream.WORDS: WORD_SALT_OFFSET}


def hash_plans(spec: HashSpec) -> list[tuple[Stream, int, int]]:
    """(stream, order, salt) of every n-gram family `spec` hashes, in the order `ngram_spans`
    yields them: the one definition of the salts and that order, which the phrase explainer's C
    kernel (echogate._explain) follows to add up the same floats in the same order."""
    families = ((Stream.BYTES, spec.orders), (Stream.SHAPE, spec.shape_orders),
                (Stream.SKELETON, spec.function_orders), (Stream.WORDS, sorted(spec.word_orders)))
    return [(stream, n, (n + _SALT_OFFSETS[stream]) * SALT) for stream, orders in families for n in orders]


def ngram_spans(stream: np.ndarray, turn_of_byte: np.ndarray, spec: HashSpec
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(hashes, first byte, end byte) of the valid n-grams of each stream and order (`hash_plans`):
    where each n-gram lies is what echogate.explain needs to point at words."""
    size = stream.shape[0]
    words = _words(stream, turn_of_byte) if spec.function_orders or spec.word_orders else None
    data: dict[Stream, np.ndarray] = {}  # each stream built once, when its first order needs it
    for kind, n, salt in hash_plans(spec):
        if kind == Stream.WORDS:
            yield word_ngram_spans(turn_of_byte, spec, words, n, salt)
            continue
        if kind not in data:
            data[kind] = (stream if kind == Stream.BYTES else SHAPE_CLASSES[stream] if kind == Stream.SHAPE
                          else function_word_stream(stream, turn_of_byte, words)).astype(np.int64)
        x, m = data[kind], size - n + 1
        if m <= 0:
            continue
        g = np.full(m, salt, dtype=np.int64)
        for k in range(n):  # each term < 2**8 * table_size: no int64 overflow
            g += x[k : k + m] * pow(BASE, k, spec.table_size)
        starts = np.flatnonzero(turn_of_byte[:m] == turn_of_byte[n - 1 : n - 1 + m])
        yield g[starts] & (spec.table_size - 1), starts, starts + n


def word_ngram_spans(turn_of_byte: np.ndarray, spec: HashSpec, words: Words, n: int, salt: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word unigrams (n = 1) or bigrams (n = 2, within a turn): sum_k word_hash[j+k] * BASE**(k+1)
    + salt, modulo the table size. Words and their hashes are `_words`', the function-word skeleton's."""
    letter, word, hashes, first = words
    ends = np.flatnonzero(letter & ~np.append(letter[1:] & (word[1:] == word[:-1]), False)) + 1
    word_hashes = hashes[1:]
    mask = spec.table_size - 1
    if n == 1:
        return (word_hashes * BASE + salt) & mask, first, ends
    pairs = np.flatnonzero(turn_of_byte[first[1:]] == turn_of_byte[first[:-1]])
    g = word_hashes[pairs] * BASE + word_hashes[pairs + 1] * pow(BASE, 2, spec.table_size) + salt
    return g & mask, first[pairs], ends[pairs + 1]
