"""echogate.corpus: turn keys over a packed batch, the bounded corpus memory, and its persistence."""
from __future__ import annotations

import asyncio
import sqlite3

import grpc
import numpy as np
import pytest

from echogate.corpus import MAX_KEY_BYTES, NO_KEY, CorpusMemory, turn_keys
from echogate.grpc_api.server import EchogateServer
from echogate.store.sqlite_store import SQLiteStore
from echogate.text import normalize, pack_turns
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc
from tests.conftest import make_settings, transcript


def keys(texts, roles=None):
    roles = roles or ["agent"] * len(texts)
    return turn_keys(pack_turns([normalize(t) for t in texts], 4096), roles)


def test_slot_words_are_masked_so_a_template_keys_the_same_whatever_fills_it():
    k = keys(["OK, the North Heights Venue is free on Friday @ 7 pm.", "OK, the Southside Venue is free on Monday @ 3 pm.",
              "ok, the venue is free on friday @ 7 pm.",  # lower-case words are words, not slots
              "Can I help you today", "Can Bob help you today",  # "I" is no slot
              "Thanks. Please wait here", "Thanks. Kindly wait here",  # a sentence's first word is no slot
              "We fly to New York and Oslo", "We fly to Rome and Oslo"])  # a run of slot words is one slot
    assert k[0] == k[1] and k[0] != k[2]
    assert k[3] != k[4] and k[5] != k[6] and k[7] == k[8]


def test_case_and_numbers_are_folded_but_words_and_roles_are_not():
    # case folds wherever a word is no slot: a turn's first word, words that start lower-case
    k = keys(["Your order 123 has shipped", "YOUR orDER 987 has shipped", "your order 123 has left",
              "Your order 123 has shipped"], ["agent", "agent", "agent", "customer"])
    assert k[0] == k[1]
    assert k[0] != k[2] and k[0] != k[3]


def test_short_and_empty_turns_have_no_key():
    k = keys(["ok", "", "thank you", "thank you very much", ""])
    assert list(k[:3] == NO_KEY) == [True, True, True] and k[3] != NO_KEY and k[4] == NO_KEY


def test_a_turn_keys_the_same_alone_or_inside_any_batch():
    alone = keys(["Is there anything else I can help you with?"])[0]
    batch = keys(["hello there friend", "", "Is there anything else I can help you with?", "bye now then"])
    assert batch[2] == alone
    # stable across processes and replicas: a fixed function of the text, not of the run
    assert int(alone) == int(keys(["is there anything else i can help you with?"])[0])
    # pinned: stores hold counts by key, so a changed key function would silently forget them all
    assert int(alone) == 15891132925470747333
    assert int(keys(["Is there anything else I can help you with?"], ["customer"])[0]) == 14199668467845241765


def test_a_key_reads_the_first_max_key_bytes_of_a_turn_however_it_was_packed():
    """The scorer packs turns to the key's length; a packing that lets turns run longer gives the
    same keys, a long turn keyed by its first MAX_KEY_BYTES bytes."""
    texts = ["word " * 1000, "Is there anything else I can help you with?", "b c " * 700]
    roles = ["agent"] * 3
    short = turn_keys(pack_turns(texts, MAX_KEY_BYTES), roles)
    long = turn_keys(pack_turns(texts, 10_000), roles)
    assert list(short) == list(long) and NO_KEY not in short
    other_tail = turn_keys(pack_turns(["word " * 900 + "else " * 100], 10_000), roles[:1])
    assert other_tail[0] == short[0]  # bytes past MAX_KEY_BYTES (4,500 on) do not count


def _is_slot(word: bytes, sentence_start: bool) -> bool:
    if any(b in b"0123456789" for b in word):
        return True
    core = word.lstrip(bytes(b for b in range(128) if not bytes([b]).isalpha()))  # leading ASCII non-letters
    if sentence_start or not core[:1].isupper():  # bytes.isupper: ASCII A-Z only
        return False
    return not (core[:1] == b"I" and not core[1:2].isalpha())


def reference_key(text: str, role_code: int) -> int:
    """The key as turn_keys defines it, in plain Python integers, for one turn."""
    mask = 2**64 - 1
    data = text.encode("utf-8")[:4096]
    if data.count(b" ") + (len(data) > 0) < 3:
        return 0
    terms, after_slot, sentence_start = [], False, True
    for i, word in enumerate(data.split(b" ")):
        slot = bool(word) and _is_slot(word, sentence_start)
        if not (slot and after_slot):
            terms += [ord(" ") + 1] if i else []
            terms += [257] if slot else [b + 1 for b in word.lower()]  # bytes.lower: ASCII only
        after_slot = slot
        sentence_start = word[-1:] in (b".", b"?", b"!") if word else sentence_start
    h = sum(t * pow(0x100000001B3, k + 1, 2**64) for k, t in enumerate(terms)) & mask
    h ^= [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5][role_code]
    h ^= h >> 30
    h = h * 0xBF58476D1CE4E5B9 & mask
    h ^= h >> 27
    h = h * 0x94D049BB133111EB & mask
    return (h ^ (h >> 31)) | 1


def test_keys_match_a_plain_python_reference_over_random_turns():
    """The C kernel against the definition, turn by turn: random words, cases, digits, non-ASCII
    text, every role, short, empty and over-long turns in one batch."""
    rng = np.random.default_rng(7)
    vocab = ["Order", "order", "123", "ÜBER", "naïve", "😀", "help", "x", "THE", "a-b", "it's", "I", "I'm", "Is",
             "end.", "why?", "(Friday)", "3pm", "\"Bob\""]
    texts = [normalize(" ".join(rng.choice(vocab, size=n))) for n in rng.integers(0, 12, size=300)]
    texts += ["word " * 1000, "", "ok"]
    codes = rng.integers(0, 4, size=len(texts))
    got = turn_keys(pack_turns(texts, MAX_KEY_BYTES), codes)
    assert [int(k) for k in got] == [reference_key(t, int(c)) for t, c in zip(texts, codes)]


def test_memory_matches_a_plain_python_reference_over_random_batches():
    """Batches with keys repeated within and across transcripts, keyless turns and retries."""
    rng = np.random.default_rng(11)
    memory, counts, seen_ids = CorpusMemory(), {}, set()
    for _ in range(30):
        n_docs = int(rng.integers(1, 12))
        per_doc = rng.integers(0, 6, n_docs).tolist()
        keys = rng.choice(np.array([0, 3, 5, 7, 11, 2**64 - 1], np.uint64), sum(per_doc))
        ids = [f"t{rng.integers(0, 40)}" for _ in range(n_docs)]
        expected, offset = [], 0
        for tid, n in zip(ids, per_doc):
            own = [int(k) for k in keys[offset:offset + n]]
            expected += [counts.get(k, 0) if k else 0 for k in own]
            offset += n
            if tid not in seen_ids:
                seen_ids.add(tid)
                for k in set(own) - {0}:
                    counts[k] = counts.get(k, 0) + 1
        assert memory.observe(ids, keys, per_doc).tolist() == expected
        assert {k: memory.count(k) for k in counts} == counts
    assert memory.most_repeated == max(counts.values())


def test_memory_counts_earlier_transcripts_once_each_and_skips_retries():
    memory = CorpusMemory()
    k = keys(["we will refund you shortly", "we will refund you shortly", "a different reply entirely"])
    seen = memory.observe(["a", "b", "a", "c"], np.array([k[0], k[1], k[0], k[2]]), [1, 1, 1, 1])
    # b sees a; the retry of a sees a and b but is not counted; c is new
    assert seen.tolist() == [0, 1, 2, 0]
    assert memory.count(k[0]) == 2 and memory.most_repeated == 2


def test_shared_memory_records_its_increments_for_the_store():
    """Shared by replicas, the memory also keeps what it added since the last drain (the store
    adds every replica's up): each new transcript's distinct keys once, nothing for a retry."""
    memory = CorpusMemory(shared=True)
    k = keys(["we will refund you shortly", "a different reply entirely"])
    memory.observe(["a", "b", "a"], np.array([k[0], k[0], k[1], k[0], k[1]]), [2, 2, 1])
    assert memory.drain_deltas() == {int(k[0]): 2, int(k[1]): 1}
    memory.observe(["a", "c"], np.array([k[1], k[1]]), [1, 1])
    assert memory.drain_deltas() == {int(k[1]): 1}
    assert memory.count(k[0]) == memory.count(k[1]) == memory.most_repeated == 2


def test_memory_refuses_turn_counts_that_do_not_match_the_keys():
    with pytest.raises(ValueError, match="add up"):
        CorpusMemory().observe(["a"], np.array([3, 5], np.uint64), [1])
    with pytest.raises(ValueError, match="add up"):
        CorpusMemory().observe(["a", "b"], np.array([3, 5], np.uint64), [3, -1])


def test_memory_is_bounded_by_halving():
    memory = CorpusMemory(capacity=10)
    many = keys([f"distinct reply number {chr(97 + i)} here" for i in range(20)])
    memory.observe([f"t{i}" for i in range(20)], many, [1] * 20)
    assert len(memory) <= 10


CANNED = "Thanks for your patience, a specialist will contact you within 24 hours."


async def _score(address: str, tid: str, question: str):
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await gate_pb2_grpc.QualityGateStub(channel).Score(
            pb.ScoreRequest(transcripts=[transcript(tid, question, CANNED)]))
    return reply.verdicts[0]


async def test_corpus_counts_survive_a_restart(tmp_path):
    settings = make_settings(tmp_path)
    async with EchogateServer(settings) as first:
        for i, q in enumerate(["my parcel is missing", "what is my refund status", "please change my address"]):
            await _score(first.address, f"r{i}", q)
    with sqlite3.connect(settings.store.url) as con:
        # the canned reply, seen three times; questions seen once are not worth a row each
        assert con.execute("SELECT seen FROM corpus_turns").fetchall() == [(3,)]
    async with EchogateServer(settings) as second:  # same store file, a new process state
        verdict = await _score(second.address, "r9", "invoice copy")
    assert verdict.turns[1].seen_before == 3


async def test_corpus_counts_are_flushed_while_serving(tmp_path):
    settings = make_settings(tmp_path, corpus={"flush_seconds": 0.05})
    async with EchogateServer(settings) as server:
        await _score(server.address, "f1", "parcel missing")
        await _score(server.address, "f2", "refund status")
        for _ in range(100):  # the flusher runs every 50 ms; give it up to 5 s on a loaded machine
            with sqlite3.connect(settings.store.url) as con:
                rows = con.execute("SELECT seen FROM corpus_turns").fetchall()
            if (2,) in rows:
                break
            await asyncio.sleep(0.05)
    assert (2,) in rows  # the canned reply, counted twice, saved before any shutdown


def test_store_round_trips_every_64_bit_key_and_replaces_on_halving(tmp_path):
    store = SQLiteStore(str(tmp_path / "c.db"))
    try:
        store.save_corpus({2**64 - 1: 3, 2**63 + 5: 2, 2**63 - 1: 9, 7: 1}, replace_all=False)
        store.save_corpus({7: 4}, replace_all=False)
        assert store.load_corpus() == {2**64 - 1: 3, 2**63 + 5: 2, 2**63 - 1: 9, 7: 4}
        store.save_corpus({7: 2}, replace_all=True)
        assert store.load_corpus() == {7: 2}
    finally:
        store.close()


async def test_replicas_on_postgresql_share_the_corpus_memory(tmp_path, postgres_url):
    """A canned reply gated through replica A counts in replica B after a sync, and B's own
    increments add to A's (neither overwrites the other)."""
    settings = [make_settings(tmp_path / name, corpus={"flush_seconds": 3600}) for name in ("a", "b")]
    for s in settings:
        s.store.url = postgres_url
    canned = "Thank you for contacting support, your ticket has been escalated to a specialist."
    async with EchogateServer(settings[0]) as a, EchogateServer(settings[1]) as b:
        async with grpc.aio.insecure_channel(a.address) as ca, grpc.aio.insecure_channel(b.address) as cb:
            stub_a, stub_b = gate_pb2_grpc.QualityGateStub(ca), gate_pb2_grpc.QualityGateStub(cb)
            await stub_a.Gate(pb.GateRequest(transcripts=[transcript(f"a{i}", f"problem {i} here", canned)
                                                         for i in range(3)]))
            await stub_b.Gate(pb.GateRequest(transcripts=[transcript(f"b{i}", f"issue {i} now", canned)
                                                         for i in range(2)]))
            a.core._flush_corpus()
            b.core._flush_corpus()  # B sends its 2 and reads A's 3
            a.core._flush_corpus()  # A reads B's 2
            for stub in (stub_a, stub_b):
                reply = await stub.Score(pb.ScoreRequest(transcripts=[transcript("probe", "hello", canned)]))
                assert reply.verdicts[0].turns[1].seen_before == 5
    async with EchogateServer(settings[1]) as b:  # a restarted replica starts from the shared counts
        async with grpc.aio.insecure_channel(b.address) as cb:
            reply = await gate_pb2_grpc.QualityGateStub(cb).Score(
                pb.ScoreRequest(transcripts=[transcript("probe2", "hello", canned)]))
            # the five, plus each replica's probe (Score counts too), sent by their final flush
            assert reply.verdicts[0].turns[1].seen_before == 7


def test_the_shared_table_halves_past_capacity(postgres_url):
    from echogate.store import open_store

    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        a.load_corpus(), b.load_corpus()
        counts, full = a.sync_corpus({1: 4, 2: 1, 3: 6}, capacity=10)
        assert not full or counts == {1: 4, 2: 1, 3: 6}
        counts, full = b.sync_corpus({3: 2}, capacity=10)
        assert counts[3] == 8 and counts[1] == 4
        counts, full = b.sync_corpus({k: 1 for k in range(100, 110)}, capacity=10)  # 13 rows > 10
        assert full and counts == {1: 2, 3: 4}  # singletons dropped, the rest halved
        counts, full = a.sync_corpus({}, capacity=10)
        assert counts == {1: 2, 3: 4}
    finally:
        a.close()
        b.close()
