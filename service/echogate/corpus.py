"""Corpus memory: how often each turn was already seen in earlier transcripts.

Scripted bots and generic neural bots repeat the same turns verbatim across thousands of
conversations; people rarely write the same sentence twice. Each turn of at least
`MIN_WORDS` words is keyed by its role and its text, ASCII letters lower-cased and slot
words masked: a word with a digit, or a capitalised word that does not start a sentence (and
is not "I"), and a run of them, count as one slot. A template bot fills its slots with names,
places, dates and numbers, so "OK, the North Heights Venue is free on Friday @ 7 pm" and "OK,
the Southside Venue is free on Monday @ 3 pm" are one key ("ok, the # is free on # @ # pm").
In streams of 3,000 STAR agent turns, 89% of template turns had an earlier one with their key
against 77% when only digits were folded, while typed human turns went from 3.3% to 3.8%.
The count of earlier transcripts that had the same key is the verdict's `seen_before`, and
its log1p the model's `turn_seen` input.

Keys are computed for a whole batch at once from the packed byte stream the model reads
(`turn_keys`): no Python loop per turn or per byte. Counts are in memory, per process,
bounded: when more than `capacity` keys are held, all counts are halved and the zeros
dropped, so the memory keeps what is frequent and recent. The counts survive restarts:
the server loads them from its store on start and writes the changed repeated ones back
every `corpus.flush_seconds` (`drain_changes`), so a hard kill loses at most that much
counting. A transcript whose (source, id) was already observed (a retry) is not counted
again; two different transcripts with the same text both count, because a template bot
sending the same turn a thousand times is exactly what this memory is for.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence

import numpy as np

from echogate import _corpus
from echogate.text import Packed, role_codes


MIN_WORDS = 3
MIN_SAVED_COUNT = 2  # a turn is saved to the store once a second transcript has had it
MAX_KEY_BYTES = 4096  # bytes of a turn that make its key (the model reads no more either)
NO_KEY = np.uint64(0)

# ASCII letters lower-cased; a byte's term is its folded value + 1 (no digit reaches it: a word
# with one is a slot)
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
# per role code (echogate.types.ROLE_CODES: customer, agent, system; then OTHER_ROLE)
_ROLE_SALT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], np.uint64)


def turn_keys(packed: Packed, roles: Sequence[str] | np.ndarray) -> np.ndarray:
    """uint64 key per turn of a packed batch (echogate.text.pack_turns); NO_KEY for turns of
    fewer than MIN_WORDS words (a word: one more than the turn's spaces).

    A polynomial hash of the terms of the turn's first MAX_KEY_BYTES bytes (sum of term *
    P**(k+1) modulo 2**64, P = 0x100000001B3, k the term's position), xor the role's salt,
    finalised with splitmix64 and its lowest bit set. The terms are, word by word (words split
    at single spaces), a space's (fold + 1) before every word but the first, then the word's
    bytes' (fold + 1), or 257 for a slot word (see the module docstring); a slot word right
    after another adds nothing, not even its space. So a turn without slot words keys as its
    folded bytes alone, as keys did before slots were masked, and its saved counts stay valid.
    Every process and replica derives the same key for the same turn. Computed in C
    (echogate/_corpus.c), one pass over the bytes. `roles` are role names or their codes
    (echogate.text.role_codes).
    """
    codes = roles if isinstance(roles, np.ndarray) else role_codes(roles)
    keys = np.zeros(len(codes), np.uint64)
    # pack_turns makes every Packed array contiguous int64 (the repetition kernel takes them as
    # they are too); codes come from callers and may be any integer array
    _corpus.turn_keys(packed.stream, packed.starts, packed.lengths, np.ascontiguousarray(codes, np.int64), _FOLD,
                      _ROLE_SALT, MAX_KEY_BYTES, MIN_WORDS, keys)
    return keys


class CorpusMemory:
    """How many earlier transcripts had each turn key.

    Alone (embedded store), the memory is the truth: it halves itself past `capacity` and saves
    its repeated keys. Shared (`shared=True`, several replicas on PostgreSQL), the store holds the
    truth: the memory records its own increments (`drain_deltas`), the store adds every replica's
    increments up and halves the shared table past capacity, and `merge` brings back the counts
    other replicas changed.
    """

    def __init__(self, capacity: int = 500_000, seen_transcripts: int = 100_000, shared: bool = False):
        self.capacity = capacity
        self.shared = shared
        # Counters: update() with an iterable of keys adds one to each in C
        self._deltas: Counter[int] = Counter()  # shared: increments since the last drain_deltas
        self._counts: Counter[int] = Counter()
        self._transcripts: OrderedDict[str, None] = OrderedDict()
        self._max_transcripts = seen_transcripts
        self._lock = threading.Lock()
        self.most_repeated = 0  # the highest count held: how often the most common turn was seen
        self._changed: set[int] = set()  # keys counted since the last drain_changes
        self._halved = False  # counts were halved since the last drain: the saved state is stale as a whole

    def load(self, counts: dict[int, int]) -> None:
        """Start from saved counts (see echogate.store: load_corpus)."""
        with self._lock:
            self._counts = Counter(counts)
            self.most_repeated = max(self._counts.values(), default=0)

    def drain_changes(self) -> tuple[dict[int, int], bool]:
        """(key -> count for every repeated key counted since the last call, whether to replace
        the saved state whole): what a store needs to bring its copy up to date.

        Turns seen only once are not saved: they are most of a human corpus, and after a
        restart forgetting them costs one count, while saving them would cost a database row
        for nearly every turn ever scored.
        """
        with self._lock:
            counts = self._counts
            if self._halved:
                changes = {k: c for k, c in counts.items() if c >= MIN_SAVED_COUNT}
            else:
                changes = {k: c for k in self._changed if (c := counts.get(k, 0)) >= MIN_SAVED_COUNT}
            full = self._halved
            self._changed.clear()
            self._halved = False
        return changes, full

    def drain_deltas(self) -> dict[int, int]:
        """Shared: this replica's increments since the last call (every key, singletons too: another
        replica may have seen the same turn once as well)."""
        with self._lock:
            deltas, self._deltas = self._deltas, Counter()
            self._changed.clear()
        return deltas

    def merge(self, counts: dict[int, int], replace_all: bool) -> None:
        """Shared: take the store's counts (all of them when `replace_all`, after the store halved),
        keeping on top the increments counted here since they were drained."""
        with self._lock:
            if replace_all:
                self._counts = Counter(counts)
                for k, d in self._deltas.items():
                    self._counts[k] = self._counts.get(k, 0) + d
            else:
                for k, c in counts.items():
                    self._counts[k] = c + self._deltas.get(k, 0)
            self.most_repeated = max(self._counts.values(), default=0)

    def requeue_deltas(self, deltas: dict[int, int]) -> None:
        """Shared: increments whose sync failed, to be sent with the next one."""
        with self._lock:
            for k, d in deltas.items():
                self._deltas[k] = self._deltas.get(k, 0) + d

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: int) -> int:
        """How many earlier transcripts had this turn key (read-only)."""
        return self._counts.get(int(key), 0)

    def requeue(self, changes: dict[int, int], full: bool) -> None:
        """Mark drained changes as unsaved again (their save failed)."""
        with self._lock:
            self._changed.update(changes)
            self._halved = self._halved or full

    def observe(self, transcript_keys: Sequence[str], keys: np.ndarray, turns_per_transcript: Sequence[int]) -> np.ndarray:
        """For each transcript in order: the prior count of each of its turns, then count them.

        `transcript_keys` identify transcripts (retries are not counted twice), `keys` are
        the flat turn keys of the batch (`turn_keys`), `turns_per_transcript` how many belong
        to each. Returns the prior count per turn (0 for keyless turns), int64.

        One Python step per transcript (is it a retry?); the turns are looked up and counted
        in C (echogate/_corpus.c), in the Counter itself.
        """
        counted = bytearray(len(turns_per_transcript))  # 1: a new transcript, not a retry
        prior = np.empty(len(keys), np.int64)  # count_turns writes every entry
        touched: set[int] = set()
        with self._lock:
            seen = self._transcripts
            for i, transcript_key in enumerate(transcript_keys):
                if transcript_key in seen:
                    continue
                seen[transcript_key] = None
                counted[i] = 1
                if len(seen) > self._max_transcripts:
                    seen.popitem(last=False)
            counts = self._counts
            top = _corpus.count_turns(counts, np.ascontiguousarray(keys, np.uint64),
                                      np.ascontiguousarray(turns_per_transcript, np.int64), counted, prior, touched,
                                      self._deltas if self.shared else None)
            if touched:
                self._changed |= touched
                self.most_repeated = max(self.most_repeated, top)
            if len(counts) > self.capacity and not self.shared:  # shared: the store halves
                self._counts = Counter({k: c // 2 for k, c in counts.items() if c > 1})
                self.most_repeated //= 2
                self._halved = True
        return prior
