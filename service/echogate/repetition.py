"""Within-transcript repetition, per turn and per transcript, for a whole batch at once.

Per turn, four shares (the model's `turn_repetition` input; its repetitiveness head turns
them into a probability, see echogate.training.repetition):

- ``trigram_self``   share of the turn's distinct word trigrams its own side used earlier in
                     the conversation (a verbatim repeat is 1.0, a template re-sent with one
                     slot changed is high);
- ``content_self``   the same for content words (stop words dropped): a paraphrase of an
                     earlier turn keeps its content words, not its trigrams;
- ``trigram_other``, ``content_other``  the same against what the *other* side said
                     earlier: an agent echoing the customer back.

"Side" is agent versus everyone else. Words are lower-cased and split at whitespace, ASCII
punctuation and control bytes (apostrophes stay inside words). A turn without trigrams or content
words has those shares at 0, so a repeated "Thanks." is not looping.

Per transcript, over the agent side (every turn when there is none), Gopher-family
statistics (Rae et al. 2021; thresholds in docs/repetition.md): duplicate turn fraction
and its character fraction (a turn equal to an earlier one of its side as the corpus memory
keys it: case folded, slot words such as names and numbers masked, so a template re-sent with
other values counts), the word share of the most frequent trigram,
distinct-3 (distinct trigrams over trigram occurrences; one minus it is the share of
occurrences that repeat an earlier one), and the compression ratio (raw over DEFLATE size, as
echogate/_repetition.c estimates it: a fast encoder's LZ77 parse and each symbol's entropy. On
SGD's agent sides 2.6 us against 9 for ISA-L's level 2 encoder, sizes within 1% of its on
average, ratios correlated 0.998; docs/repetition.md).

Computed in C (echogate/_repetition.c), one pass per conversation with a hash table: words
are hashed from the packed bytes the model reads (echogate.text.pack_turns) as
sum(byte * Q**k) over their lower-cased bytes, k the position in the word (uint32 arithmetic
wraps), spread over 64 bits; trigrams combine three word hashes. A 64-bit collision (odds
about 1 in 10^19 per pair in a conversation) could only mark a key as repeated that was not.
A hundred NumPy calls did the same at 200-300 us of fixed cost per call (docs/benchmarks.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echogate import _repetition
from echogate.corpus import MAX_KEY_BYTES, turn_keys
from echogate.text import Packed, pack_turns, role_codes
from echogate.types import ROLE_CODES, RepetitionStats, Role

AGENT = ROLE_CODES[Role.AGENT]
TURN_FEATURES = ("trigram_self", "content_self", "trigram_other", "content_other")
TRANSCRIPT_STATS = RepetitionStats._fields
_KERNEL_STATS = 4  # the first four come from the conversation kernel; compression_ratio from deflate_sizes

# Function words carry no content: a turn sharing only these with earlier ones repeats nothing.
STOP_WORDS = tuple("""a about above after again against all am an and any are aren't as at be because been before
being below between both but by can can't could couldn't did didn't do does doesn't doing don't down during each
few for from further get got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's me more
most mustn't my myself no nor not now of off on once only or other ought our ours ourselves out over own please
same shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
themselves then there there's these they they'd they'll they're they've this those through to too under until up
very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who
who's whom why why's will with won't would wouldn't yes you you'd you'll you're you've your yours yourself
yourselves ok okay oh well also thank thanks""".split())

# byte -> what a word's hash reads: ASCII letters lower-cased; 0 for the bytes that separate words
_SEPARATORS = bytes(range(33)) + b"!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\x7f"  # apostrophes stay inside words
_WORD_BYTES = bytes.maketrans(_SEPARATORS + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                              bytes(len(_SEPARATORS)) + b"abcdefghijklmnopqrstuvwxyz")
_Q, _K1 = 0x9E3779B1, 0x9E3779B97F4A7C15  # word hash base and 64-bit spread (as in _repetition.c)


def _word_hash(word: str) -> np.uint64:
    """The hash the kernel gives one word (for the stop-word table)."""
    h = sum(b * pow(_Q, k, 2**32) for k, b in enumerate(word.encode("utf-8").translate(_WORD_BYTES))) % 2**32
    x = h * _K1 % 2**64
    return np.uint64(x ^ (x >> 29))


def _stop_table(bits: int = 16) -> tuple[np.ndarray, np.uint64]:
    """Stop-word hashes by `bits` bits of the hash (from the first shift where the list's words
    all differ): a word is a stop word iff its hash equals the entry at its slot. One gather
    instead of a search."""
    hashes = np.unique(np.array([_word_hash(w) for w in STOP_WORDS], np.uint64))
    for shift in range(64 - bits):
        slot = (hashes >> np.uint64(shift)) & np.uint64(2**bits - 1)
        if np.unique(slot).size == hashes.size:
            table = np.zeros(2**bits, np.uint64)  # a word hashing to exactly 0 is a 2**-64 chance
            table[slot] = hashes
            return table, np.uint64(shift)
    raise AssertionError("no collision-free slot for the stop words: widen the table")


_STOP_TABLE, _STOP_SHIFT = _stop_table()


@dataclass(frozen=True)
class Repetition:
    """Repetition of a batch: `turn` [R, 4] float32 in TURN_FEATURES order, `transcript` [T, 5]
    float64 in TRANSCRIPT_STATS order, `side` [R] bool: the turns each transcript's statistics
    are over (the agent turns; every turn of a transcript without any). `side_trigrams` are the
    hashes of those turns' word trigrams (the same trigram has the same hash in every
    conversation), `side_trigram_transcript` the transcript of each: corpus diversity's input
    (echogate.diversity)."""

    turn: np.ndarray
    transcript: np.ndarray
    side: np.ndarray
    side_trigrams: np.ndarray
    side_trigram_transcript: np.ndarray


def analyse(packed: Packed, codes: np.ndarray, turn_transcript: np.ndarray, n_transcripts: int,
            keys: np.ndarray) -> Repetition:
    """Repetition features of the turns of several transcripts.

    `packed` are the turns as the model reads them (echogate.text.pack_turns of normalised
    texts), `codes` their role codes (echogate.text.role_codes), `turn_transcript` the
    transcript index of each turn (non-decreasing) and `keys` the corpus memory's keys of the
    turns (echogate.corpus.turn_keys).
    """
    n_turns = len(codes)
    turn_transcript = np.ascontiguousarray(turn_transcript, np.int64)
    agent = codes == AGENT
    has_agent = np.bincount(turn_transcript, weights=agent, minlength=n_transcripts) > 0
    side = agent | ~has_agent[turn_transcript]
    turn = np.zeros((n_turns, len(TURN_FEATURES)), np.float32)
    counted = np.zeros((n_transcripts, _KERNEL_STATS))
    # a turn has fewer trigrams than bytes: room for every side trigram of the batch
    trigrams, trigram_transcript = np.empty(packed.stream.size, np.uint64), np.empty(packed.stream.size, np.int64)
    found = _repetition.analyse(packed.stream, packed.starts, packed.lengths, agent, side, turn_transcript,
                                np.ascontiguousarray(keys, np.uint64), _WORD_BYTES, _STOP_TABLE,
                                int(_STOP_SHIFT), n_transcripts, turn, counted, trigrams, trigram_transcript)
    stats = np.empty((n_transcripts, len(TRANSCRIPT_STATS)))
    stats[:, :_KERNEL_STATS] = counted
    stats[:, _KERNEL_STATS] = _compression_ratios(packed, side, turn_transcript, n_transcripts)
    return Repetition(turn, stats, side, trigrams[:found], trigram_transcript[:found])


def _compression_ratios(packed: Packed, side: np.ndarray, turn_transcript: np.ndarray,
                        n_transcripts: int) -> np.ndarray:
    """Each transcript's side, its turns concatenated, over its estimated DEFLATE size (0 for no
    text): one C call for the batch, the bytes cut from the packed stream without a step per turn."""
    side_bytes = packed.stream[np.repeat(side, packed.lengths)]
    sizes = np.bincount(turn_transcript, weights=packed.lengths * side, minlength=n_transcripts).astype(np.int64)
    deflated = np.empty(n_transcripts, np.int64)
    _repetition.deflate_sizes(side_bytes, np.cumsum(sizes), deflated)
    return np.divide(sizes, deflated, out=np.zeros(n_transcripts), where=deflated > 0)


def analyse_texts(normalized: Sequence[str], roles: Sequence[str], turn_transcript: np.ndarray,
                  n_transcripts: int) -> Repetition:
    """`analyse` from normalised turn texts, packed and keyed as the scorer does (for the
    trainer, checks and tests; the scorer packs once for the model and reuses it)."""
    packed = pack_turns(normalized, MAX_KEY_BYTES)
    codes = role_codes(roles)
    return analyse(packed, codes, np.asarray(turn_transcript, np.int64), n_transcripts, turn_keys(packed, codes))


def side_means(turn_values: np.ndarray, side: np.ndarray, turn_transcript: np.ndarray,
               n_transcripts: int) -> np.ndarray:
    """Mean of per-turn values over each transcript's side (see Repetition.side): [R] -> [T]."""
    count = np.bincount(turn_transcript, weights=side, minlength=n_transcripts)
    out = np.zeros(n_transcripts)
    np.divide(np.bincount(turn_transcript, weights=turn_values * side, minlength=n_transcripts), count, out=out,
              where=count > 0)
    return out
