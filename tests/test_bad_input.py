"""Bad requests get INVALID_ARGUMENT with google.rpc.BadRequest details, and store nothing."""
from __future__ import annotations

import grpc
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc
from echogate_client.client import field_violations
from tests.conftest import make_settings, transcript

SMALL_LIMITS = {"max_batch": 4, "max_turns": 3, "max_turn_bytes": 100, "max_id_bytes": 16,
                "max_metadata_entries": 2, "max_message_bytes": 4096}


@pytest.fixture
async def small_stub(tmp_path):
    async with EchogateServer(make_settings(tmp_path, limits=SMALL_LIMITS)) as srv:
        async with grpc.aio.insecure_channel(srv.address) as channel:
            yield gate_pb2_grpc.QualityGateStub(channel)


GOOD = transcript("good", "hello", "hi, how can I help?")

CASES = {
    "empty id": (transcript("", "hi"), "transcripts[1].id"),
    "blank id": (transcript("   ", "hi"), "transcripts[1].id"),
    "long id": (transcript("x" * 17, "hi"), "transcripts[1].id"),
    "long source": (transcript("a", "hi", source="s" * 17), "transcripts[1].source"),
    "no turns": (pb.Transcript(id="a", source="test"), "transcripts[1].turns"),
    "unspecified role": (pb.Transcript(id="a", turns=[pb.Turn(text="hi")]), "transcripts[1].turns[0].role"),
    "unknown role": (pb.Transcript(id="a", turns=[pb.Turn(role=42, text="hi")]), "transcripts[1].turns[0].role"),
    "unknown declared origin": (pb.Transcript(id="a", declared_origin=9, turns=[pb.Turn(role=1, text="hi")]),
                                "transcripts[1].declared_origin"),
    "text over limit": (transcript("a", "hi", "é" * 51), "transcripts[1].turns[1].text"),
    "text over limit in 4-byte characters": (transcript("a", "hi", "\U0001f600" * 26), "transcripts[1].turns[1].text"),
    "too many turns": (transcript("a", "1", "2", "3", "4"), "transcripts[1].turns"),
    "too much metadata": (transcript("a", "hi", metadata={"a": "1", "b": "2", "c": "3"}), "transcripts[1].metadata"),
}


@pytest.mark.parametrize("rpc", ["Score", "Gate"])
@pytest.mark.parametrize("case", list(CASES))
async def test_bad_transcript_is_rejected_with_field_path(small_stub, rpc, case):
    bad, field = CASES[case]
    request = (pb.GateRequest if rpc == "Gate" else pb.ScoreRequest)(transcripts=[GOOD, bad])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(small_stub, rpc)(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in field_violations(err.value)]
    assert field in fields, fields
    # nothing of the rejected batch is stored, not even its valid transcript
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await small_stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source="test", id="good")))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_turn_limit_counts_utf8_bytes_up_to_the_limit(small_stub):
    """100 bytes of 4-byte characters (25 of them) are within a 100-byte limit."""
    reply = await small_stub.Score(pb.ScoreRequest(transcripts=[transcript("a", "hi", "\U0001f600" * 25)]))
    assert len(reply.verdicts) == 1


async def test_every_violation_is_reported(small_stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_stub.Gate(pb.GateRequest(transcripts=[transcript("", "hi"), pb.Transcript(id="b")]))
    fields = {f for f, _ in field_violations(err.value)}
    assert {"transcripts[0].id", "transcripts[1].turns"} <= fields


async def test_batch_over_limit(small_stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_stub.Gate(pb.GateRequest(transcripts=[transcript(str(i), "hi") for i in range(5)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("transcripts", "5 transcripts exceed the batch limit of 4") in field_violations(err.value)


async def test_empty_batch(small_stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_stub.Score(pb.ScoreRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_message_over_size_limit(small_stub):
    big = [transcript(f"m{i}", "x" * 90, "y" * 90, "z" * 90) for i in range(4)]
    big[0].metadata.update({"k": "v" * 3000})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await small_stub.Gate(pb.GateRequest(transcripts=big))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message limit of 4096" in err.value.details()


async def test_internal_errors_do_not_leak_exception_text(server, stub, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret database password in traceback")

    monkeypatch.setattr(server.core.scorer.model, "run", boom)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Score(pb.ScoreRequest(transcripts=[GOOD]))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in err.value.details() and "incident" in err.value.details()
