"""Every RPC of echogate.v1.QualityGate against a real server over a real channel."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from echogate.corpus import turn_keys
from echogate.text import content_sha256, pack_turns
from echogate.v1 import gate_pb2 as pb
from tests.conftest import transcript

DIALOGUE = ("my card hasnt arrived yet", "I'm sorry to hear that. Could you share your order number?",
            "its 1234", "Thank you. Your replacement card will arrive within 3 business days.")


async def test_score_returns_a_verdict_per_transcript_and_stores_nothing(stub):
    batch = [transcript("s1", *DIALOGUE), transcript("s2", "hello there")]
    resp = await stub.Score(pb.ScoreRequest(transcripts=batch))
    assert [v.transcript_id for v in resp.verdicts] == ["s1", "s2"]
    v = resp.verdicts[0]
    assert len(v.turns) == len(DIALOGUE)
    assert 0.0 <= v.bot_origin <= 1.0 and 0.0 <= v.repetitiveness <= 1.0
    assert all(0.0 <= t.bot_origin <= 1.0 for t in v.turns)
    assert v.decision != pb.DECISION_UNSPECIFIED and v.reasons
    assert v.model_version and v.policy_version and v.record_id == ""
    assert v.content_sha256 == content_sha256(["customer", "agent"] * 2, DIALOGUE)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source="test", id="s1")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_score_is_deterministic_and_batch_independent():
    """With the same corpus history, a transcript scores the same alone or inside a batch."""
    from echogate.grpc_api.convert import transcripts_from_pb
    from echogate.model import BotOriginModel
    from echogate.scoring import Scorer
    from echogate.settings import Limits, default_model_path

    model = BotOriginModel(default_model_path())
    target = transcripts_from_pb([transcript("d", *DIALOGUE)], 0, Limits())
    others = transcripts_from_pb([transcript(f"o{i}", f"other text number {i} " * (i + 1)) for i in range(40)], 0,
                                 Limits())
    alone = Scorer(model).score(target)[0].scores
    mixed = Scorer(model).score(others + target)[-1].scores
    assert mixed.bot_origin == pytest.approx(alone.bot_origin, abs=1e-6)
    assert [t.bot_origin for t in mixed.turns] == pytest.approx([t.bot_origin for t in alone.turns], abs=1e-6)


async def test_corpus_memory_counts_turns_seen_in_earlier_transcripts(server, stub):
    canned = "Thank you for contacting us, your request has been forwarded to our team."
    key = turn_keys(pack_turns([canned], 4096), ["agent"])[0]
    questions = ["where is my parcel", "how do refunds work", "can I change my address", "why was I charged twice"]
    for i, question in enumerate(questions):
        await stub.Score(pb.ScoreRequest(transcripts=[transcript(f"cm{i}", question, canned)]))
    assert server.core.scorer.memory.count(key) == 4
    # a retry of an already seen transcript is not counted again
    retry = (await stub.Score(pb.ScoreRequest(transcripts=[transcript("cm0", questions[0], canned)]))).verdicts[0]
    assert server.core.scorer.memory.count(key) == 4
    # counts include the first submission of this same transcript: its question once, the canned reply four times
    assert [t.seen_before for t in retry.turns] == [1, 4]
    assert retry.corpus_duplicate == pytest.approx(1.0)  # its only agent turn was seen before
    fresh = (await stub.Score(pb.ScoreRequest(transcripts=[transcript("cm9", "a new question", "A reply never sent "
                                                                      "before in any conversation.")]))).verdicts[0]
    assert [t.seen_before for t in fresh.turns] == [0, 0] and fresh.corpus_duplicate == 0.0


async def test_a_looping_bot_turn_scores_repetitive_and_the_statistics_are_stored(stub):
    looping = transcript("loop1", "my parcel never arrived", "I'm sorry to hear that. Could you share your order number?",
                         "it is 55821", "I'm sorry to hear that. Could you share your order number?",
                         "I just gave it to you", "I'm sorry to hear that. Could you share your order number?")
    fresh = transcript("loop2", *DIALOGUE)
    first, second = (await stub.Gate(pb.GateRequest(transcripts=[looping, fresh]))).verdicts
    agent = [t.repetitiveness for t in first.turns[1::2]]
    assert agent[0] < 0.2 and min(agent[1:]) > 0.9  # the first ask is new, the two re-asks are repeats
    assert first.repetitiveness > second.repetitiveness
    stats = first.repetition
    assert stats.duplicate_turn_fraction == pytest.approx(2 / 3)  # two of three agent turns repeat the first
    assert stats.distinct_3 < second.repetition.distinct_3 == 1.0  # the re-asks repeat the first ask's trigrams
    assert stats.top_trigram_fraction > 0 and second.repetition.duplicate_turn_fraction == 0
    assert stats.compression_ratio > second.repetition.compression_ratio > 0  # a loop compresses well
    stored = await stub.GetRecord(pb.GetRecordRequest(record_id=first.record_id))
    assert stored.verdict.repetition == stats
    assert [t.repetitiveness for t in stored.verdict.turns] == [t.repetitiveness for t in first.turns]


async def test_gate_stores_and_get_record_reads_it_back(stub):
    t = transcript("g1", *DIALOGUE, metadata={"channel": "chat"}, declared_origin=pb.DECLARED_ORIGIN_HUMAN,
                   language="en")
    v = (await stub.Gate(pb.GateRequest(transcripts=[t]))).verdicts[0]
    assert v.record_id and not v.duplicate
    by_id = await stub.GetRecord(pb.GetRecordRequest(record_id=v.record_id))
    by_key = await stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source="test", id="g1")))
    assert by_id == by_key
    assert by_id.transcript == t
    assert by_id.verdict.bot_origin == pytest.approx(v.bot_origin)
    assert list(by_id.verdict.reasons) == list(v.reasons)
    assert by_id.verdict.decided_at == v.decided_at
    assert by_id.received_at.seconds > 0


async def test_gate_retry_returns_stored_verdict_as_duplicate(stub):
    first = (await stub.Gate(pb.GateRequest(transcripts=[transcript("r1", *DIALOGUE)]))).verdicts[0]
    again = (await stub.Gate(pb.GateRequest(transcripts=[transcript("r1", "different content now")]))).verdicts[0]
    assert again.duplicate and not first.duplicate
    assert again.record_id == first.record_id
    assert again.content_sha256 == first.content_sha256  # the stored verdict, not a re-score
    assert len(again.turns) == len(DIALOGUE)


async def test_same_id_in_other_source_is_another_record(stub):
    a = (await stub.Gate(pb.GateRequest(transcripts=[transcript("x", "hi", source="a")]))).verdicts[0]
    b = (await stub.Gate(pb.GateRequest(transcripts=[transcript("x", "hi", source="b")]))).verdicts[0]
    assert a.record_id != b.record_id and not b.duplicate


async def test_repeated_key_within_one_batch_is_stored_once(stub):
    resp = await stub.Gate(pb.GateRequest(transcripts=[transcript("k", "one"), transcript("k", "two")]))
    assert [v.duplicate for v in resp.verdicts] == [False, True]
    assert resp.verdicts[0].record_id == resp.verdicts[1].record_id


async def test_gate_stream_answers_each_message_in_order(stub):
    batches = [[transcript(f"st{i}-{j}", *DIALOGUE) for j in range(i + 1)] for i in range(5)]

    async def requests():
        for b in batches:
            yield pb.GateRequest(transcripts=b)

    responses = [r async for r in stub.GateStream(requests())]
    assert [[v.transcript_id for v in r.verdicts] for r in responses] == [[t.id for t in b] for b in batches]
    rec = await stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source="test", id="st4-4")))
    assert rec.verdict.transcript_id == "st4-4"


async def test_gate_stream_error_names_the_bad_message_field(stub):
    async def requests():
        yield pb.GateRequest(transcripts=[transcript("ok", "fine")])
        yield pb.GateRequest(transcripts=[transcript("", "no id")])

    call = stub.GateStream(requests())
    first = await call.read()
    assert first.verdicts[0].transcript_id == "ok"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transcripts[0].id" in err.value.details()


async def test_server_info_reports_versions_and_limits(stub, settings):
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.model_version and info.policy_version == settings.policy.version
    assert info.limits.max_batch == settings.limits.max_batch
    assert info.limits.max_turn_bytes == settings.limits.max_turn_bytes
    assert info.limits.max_message_bytes == settings.limits.max_message_bytes
    assert info.store_backend == "sqlite"


async def test_get_record_without_key_is_invalid(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRecord(pb.GetRecordRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_concurrent_small_requests_are_batched_into_the_model(stub, server):
    calls = [stub.Score(pb.ScoreRequest(transcripts=[transcript(f"c{i}", *DIALOGUE)])) for i in range(64)]
    results = await asyncio.gather(*calls)
    assert len(results) == 64
    batch_hist = server.core.metrics.batch_size
    count = _sample(batch_hist, "_count")
    total = _sample(batch_hist, "_sum")
    assert total == 64 and count < 64  # at least some calls shared a model call


def _sample(metric, suffix: str) -> float:
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix):
                return s.value
    raise AssertionError(suffix)
