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
and its character fraction (a turn equal to an earlier one of its side, case and digits
folded, as the corpus memory keys it), the word share of the most frequent trigram, and
distinct-3 (distinct trigrams over trigram occurrences; one minus it is the share of
occurrences that repeat an earlier one).

Vectorised over the batch with NumPy (no Python loop per word): words are hashed from the
packed bytes the model reads (echogate.text.pack_turns) as sum(byte * Q**k) over their
lower-cased bytes, k the position in the word, computed for all words at once as a prefix
sum of byte * Q**(position in the stream), differenced at word bounds, times Q**-(word start)
(uint32 arithmetic wraps; Q is odd, so invertible), then spread over 64 bits. One sort per
key type (trigram, content word) orders each key's occurrences in a conversation by side,
then turn: a turn repeats its own side when it is not the first of its run, and the other
side when that side's run of the key (the neighbouring run) began in an earlier turn. Keys
are 43-bit hashes: a collision (odds about 1 in 10^13 per pair in a batch) could only mark
a trigram as repeated that was not.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echogate.corpus import MAX_KEY_BYTES, turn_keys
from echogate.text import Packed, PowerTable, pack_turns, role_codes
from echogate.types import ROLE_CODES, RepetitionStats, Role

AGENT = ROLE_CODES[Role.AGENT]
TURN_FEATURES = ("trigram_self", "content_self", "trigram_other", "content_other")
TRANSCRIPT_STATS = RepetitionStats._fields

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
_POWERS = PowerTable(0x9E3779B1, np.uint32)  # Q**i for word hashes
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_TURN_BITS = 20  # turns per batch stay below 2**20 (max_batch x max_turns is far less)
_TURN_MASK = np.uint64(2**_TURN_BITS - 1)
_SIDE_BIT = np.uint64(2**_TURN_BITS)  # the lowest key bit above the turn: 1 for agent turns
_KIND_BIT = np.uint64(2**(_TURN_BITS + 1))  # the next: 0 for word trigrams, 1 for content words


def _mix(h: np.ndarray) -> np.ndarray:
    """A word's 32-bit polynomial hash spread over 64 bits (the sort keys keep the top 44)."""
    h = h.astype(np.uint64) * _K1
    return h ^ (h >> np.uint64(29))


def _word_hash(word: str) -> np.uint64:
    """The hash `_words` gives one word (for the stop-word list)."""
    b = np.frombuffer(word.encode("utf-8").translate(_WORD_BYTES), np.uint8)
    return _mix(np.sum(b * _POWERS.get(b.size)[0][: b.size], dtype=np.uint32, keepdims=True))[0]


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
    """Repetition of a batch: `turn` [R, 4] float32 in TURN_FEATURES order, `transcript` [T, 4]
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
            turn_keys: np.ndarray) -> Repetition:
    """Repetition features of the turns of several transcripts.

    `packed` are the turns as the model reads them (echogate.text.pack_turns of normalised
    texts), `codes` their role codes (echogate.text.role_codes), `turn_transcript` the
    transcript index of each turn (non-decreasing) and `turn_keys` the corpus memory's keys of
    the turns (echogate.corpus.turn_keys).
    """
    n_turns = len(codes)
    if n_turns >= 2**_TURN_BITS:  # beyond the sort key's turn field: split between transcripts
        cut = int(np.searchsorted(turn_transcript, turn_transcript[n_turns // 2]))
        if not 0 < cut < n_turns:
            raise ValueError(f"one transcript of {n_turns} turns is beyond the repetition scorer's limit")
        first_docs, cut_byte = int(turn_transcript[cut]), int(packed.starts[cut])
        head = Packed(packed.stream[:cut_byte], packed.byte_turn[:cut_byte], packed.starts[:cut],
                      packed.lengths[:cut])
        tail = Packed(packed.stream[cut_byte:], packed.byte_turn[cut_byte:] - cut, packed.starts[cut:] - cut_byte,
                      packed.lengths[cut:])
        a = analyse(head, codes[:cut], turn_transcript[:cut], first_docs, turn_keys[:cut])
        b = analyse(tail, codes[cut:], turn_transcript[cut:] - first_docs, n_transcripts - first_docs, turn_keys[cut:])
        return Repetition(np.concatenate([a.turn, b.turn]), np.concatenate([a.transcript, b.transcript]),
                          np.concatenate([a.side, b.side]), np.concatenate([a.side_trigrams, b.side_trigrams]),
                          np.concatenate([a.side_trigram_transcript, b.side_trigram_transcript + first_docs]))
    turn_transcript = np.asarray(turn_transcript, np.int64)
    agent = codes == AGENT
    has_agent = np.bincount(turn_transcript, weights=agent, minlength=n_transcripts) > 0
    side = agent | ~has_agent[turn_transcript]
    turn = np.zeros((n_turns, len(TURN_FEATURES)), np.float32)
    stats = np.zeros((n_transcripts, len(TRANSCRIPT_STATS)))
    none = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if n_turns == 0:
        return Repetition(turn, stats, side, *none)
    _duplicate_turns(packed.lengths, turn_keys, turn_transcript, side, stats)
    word_hash, word_turn = _words(packed)
    if word_hash.size == 0:
        return Repetition(turn, stats, side, *none)
    # word trigrams within a turn
    same_turn = word_turn[:-2] == word_turn[2:]
    tri = (word_hash[:-2] * _K1 + word_hash[1:-1] * _K2 + word_hash[2:])[same_turn]
    tri_turn = word_turn[:-2][same_turn]
    on_side = side[tri_turn]
    side_trigrams, side_trigram_transcript = tri[on_side], turn_transcript[tri_turn[on_side]]
    # trigrams and content words in one sort, told apart by a kind bit
    content = _STOP_TABLE[(word_hash >> _STOP_SHIFT) & np.uint64(_STOP_TABLE.size - 1)] != word_hash
    keys = np.concatenate([tri & ~_KIND_BIT, word_hash[content] | _KIND_BIT])
    salt = (turn_transcript.astype(np.uint64) * _K3) & ~(_TURN_MASK | _SIDE_BIT | _KIND_BIT)
    salt[agent] |= _SIDE_BIT
    k, t, first_in_run = _sorted_occurrences(keys, np.concatenate([tri_turn, word_turn[content]]), salt)
    content_word = (k & np.uint64(2)).astype(bool)  # the kind bit, above the side bit
    _trigram_stats(k, t, ~content_word, turn_transcript, side, n_transcripts, stats)
    # TURN_FEATURES order: trigram, content word; own side, then the other
    _earlier_shares(k[first_in_run], t[first_in_run], content_word[first_in_run], turn)
    return Repetition(turn, stats, side, side_trigrams, side_trigram_transcript)


def analyse_texts(normalized: Sequence[str], roles: Sequence[str], turn_transcript: np.ndarray,
                  n_transcripts: int) -> Repetition:
    """`analyse` from normalised turn texts, packed and keyed as the scorer does (for the
    trainer, checks and tests; the scorer packs once for the model and reuses it)."""
    packed = pack_turns(normalized, MAX_KEY_BYTES)
    codes = role_codes(roles)
    return analyse(packed, codes, np.asarray(turn_transcript, np.int64), n_transcripts, turn_keys(packed, codes))


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """True where a run of equal values begins in a sorted array."""
    new = np.ones(sorted_values.size, bool)
    new[1:] = sorted_values[1:] != sorted_values[:-1]
    return new


def _words(packed: Packed) -> tuple[np.ndarray, np.ndarray]:
    """(hash, turn) of every word of the batch, in order."""
    stream = packed.stream
    term = np.frombuffer(stream.tobytes().translate(_WORD_BYTES), np.uint8)
    follows_separator = np.empty(stream.size, bool)
    follows_separator[:1] = True
    np.equal(term[:-1], 0, out=follows_separator[1:])
    follows_separator[packed.starts[packed.lengths > 0]] = True  # a turn's first byte follows nothing
    word_starts = (follows_separator & (term != 0)).nonzero()[0]
    if word_starts.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    powers, inverse, _ = _POWERS.get(stream.size)
    prefix = np.zeros(stream.size + 1, np.uint32)  # separators add 0: a word runs to the next word's start
    (term * powers[: stream.size]).cumsum(dtype=np.uint32, out=prefix[1:])
    sums = prefix[np.concatenate([word_starts[1:], [stream.size]])]
    sums -= prefix[word_starts]
    return _mix(sums * inverse[word_starts]), packed.byte_turn[word_starts]


def _sorted_occurrences(key: np.ndarray, turn: np.ndarray, salt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occurrences sorted by (key ^ salt of the turn, turn): that key (its top 44 bits, the lowest
    of them the turn's side bit), the turn, and whether each is the first occurrence of its key
    in its turn. `salt` (per turn) separates conversations and carries the side bit."""
    packed = ((key & ~(_TURN_MASK | _SIDE_BIT)) ^ salt[turn]) | turn.astype(np.uint64)  # salt's low bits are 0
    packed.sort()
    return packed >> np.uint64(_TURN_BITS), (packed & _TURN_MASK).astype(np.int64), _run_starts(packed)


def _earlier_shares(k: np.ndarray, t: np.ndarray, kind: np.ndarray, turn: np.ndarray) -> None:
    """Per turn and kind of key, the shares of its distinct keys that its own side (into
    turn[:, :2]) and the other side (turn[:, 2:]) used in an earlier turn. `k`, `t` are distinct
    (key, turn) pairs sorted by key (its lowest bit the side), then turn: a key's occurrences
    form at most two runs, the other side's before the agent's. `kind` (0 or 1) is each pair's
    kind of key, its column in each half of `turn`."""
    n_turns = turn.shape[0]
    run_start = _run_starts(k)
    starts = run_start.nonzero()[0]
    run = run_start.cumsum() - 1
    first_turn = t[starts]
    pair = (k[starts[1:]] >> np.uint64(1)) == (k[starts[:-1]] >> np.uint64(1))  # runs r, r+1 share a key
    other_first = np.full(starts.size, n_turns)
    other_first[1:][pair] = first_turn[:-1][pair]  # the agent run: the other side began in the run before
    other_first[:-1][pair] = first_turn[1:][pair]  # the other side's run: agents began in the run after
    slot = 2 * t + kind
    total = np.bincount(slot, minlength=2 * n_turns).reshape(n_turns, 2)
    for columns, earlier in ((slice(0, 2), ~run_start), (slice(2, 4), other_first[run] < t)):
        used = np.bincount(slot, weights=earlier, minlength=2 * n_turns).reshape(n_turns, 2)
        np.divide(used, total, out=turn[:, columns], where=total > 0, casting="unsafe")


def _trigram_stats(k: np.ndarray, t: np.ndarray, trigram: np.ndarray, turn_transcript: np.ndarray,
                   side: np.ndarray, n_transcripts: int, stats: np.ndarray) -> None:
    """Top-trigram share and distinct-3 of each transcript's side (all occurrences; `trigram`
    marks the occurrences that are trigrams)."""
    on_side = side[t] & trigram
    k, t = k[on_side], t[on_side]
    if k.size == 0:
        return
    doc = turn_transcript[t]
    starts = _run_starts(k).nonzero()[0]
    counts = np.concatenate([starts[1:], [k.size]]) - starts
    key_doc = doc[starts]
    total = np.bincount(doc, minlength=n_transcripts)
    distinct = np.bincount(key_doc, minlength=n_transcripts)
    top = np.zeros(n_transcripts)
    repeated = counts > 1  # only a trigram seen twice can be a "top" trigram: few of them
    np.maximum.at(top, key_doc[repeated], counts[repeated])
    np.divide(top, total, out=stats[:, 2], where=top > 1)  # a trigram seen once is no "top"
    np.divide(distinct, total, out=stats[:, 3], where=total > 0)


def _duplicate_turns(chars: np.ndarray, turn_keys: np.ndarray, turn_transcript: np.ndarray,
                     side: np.ndarray, stats: np.ndarray) -> None:
    """Duplicate turn fraction and its character (UTF-8 byte) fraction over each transcript's side."""
    n_transcripts = stats.shape[0]
    keyed = side & (turn_keys != 0)
    idx = keyed.nonzero()[0]
    duplicate = np.zeros(len(turn_keys), bool)
    if idx.size:
        mixed = turn_keys[idx] ^ (turn_transcript[idx].astype(np.uint64) * _K3)
        order = np.argsort(mixed, kind="stable")  # equal keys stay in turn order
        repeat_of_earlier = np.zeros(idx.size, bool)
        repeat_of_earlier[1:] = mixed[order][1:] == mixed[order][:-1]
        duplicate[idx[order[repeat_of_earlier]]] = True
    side_turns = np.bincount(turn_transcript, weights=side, minlength=n_transcripts)
    side_chars = np.bincount(turn_transcript, weights=chars * side, minlength=n_transcripts)
    np.divide(np.bincount(turn_transcript, weights=duplicate, minlength=n_transcripts), side_turns,
              out=stats[:, 0], where=side_turns > 0)
    np.divide(np.bincount(turn_transcript, weights=chars * duplicate, minlength=n_transcripts), side_chars,
              out=stats[:, 1], where=side_chars > 0)


def side_means(turn_values: np.ndarray, side: np.ndarray, turn_transcript: np.ndarray,
               n_transcripts: int) -> np.ndarray:
    """Mean of per-turn values over each transcript's side (see Repetition.side): [R] -> [T]."""
    count = np.bincount(turn_transcript, weights=side, minlength=n_transcripts)
    out = np.zeros(n_transcripts)
    np.divide(np.bincount(turn_transcript, weights=turn_values * side, minlength=n_transcripts), count, out=out,
              where=count > 0)
    return out
