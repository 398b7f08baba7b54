"""Property-based tests (hypothesis) over request messages: arbitrary unicode and control
characters, empty and oversized fields, unknown enum values, odd batch shapes. Whatever comes,
the server answers OK or INVALID_ARGUMENT (never INTERNAL, never a crash), and a batch is
stored whole or not at all."""
from __future__ import annotations

import itertools

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc
from tests.conftest import make_settings, server_in_thread

LIMITS = {"max_batch": 5, "max_turns": 6, "max_turn_bytes": 400, "max_id_bytes": 40,
          "max_metadata_entries": 4, "max_message_bytes": 8192}

# every code point but lone surrogates (which no UTF-8 string can carry), control characters included;
# mostly within the limits, sometimes past them, so both answers are exercised
CHARS = st.characters(exclude_categories=("Cs",))
TEXT = st.one_of(st.text(CHARS, max_size=80), st.text(CHARS, max_size=600))
SHORT = st.text(CHARS, max_size=50)
ID = st.one_of(st.text(CHARS, min_size=1, max_size=12), SHORT)
ROLE = st.sampled_from([1, 1, 2, 2, 3, 0, 5])  # 0 and 5 are not roles
ORIGIN = st.sampled_from([0, 0, 1, 2, 3, 9])  # 9 is not an origin
TURN = st.builds(pb.Turn, role=ROLE, text=TEXT, declared_author=ORIGIN)
TRANSCRIPT = st.builds(
    pb.Transcript, id=ID, source=st.text(CHARS, max_size=10), turns=st.lists(TURN, min_size=0, max_size=7),
    metadata=st.dictionaries(SHORT, TEXT, max_size=5), declared_origin=ORIGIN, language=SHORT)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server on its own event loop thread, for synchronous hypothesis examples."""
    with server_in_thread(make_settings(tmp_path_factory.mktemp("props"), limits=LIMITS)) as address:
        with grpc.insecure_channel(address) as channel:
            yield channel


serial = itertools.count()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(TRANSCRIPT, max_size=7))
def test_any_gate_request_is_answered_ok_or_invalid_and_stored_all_or_nothing(live, batch):
    stub = gate_pb2_grpc.QualityGateStub(live)
    n = next(serial)
    for t in batch:  # unique keys per example, so "stored" can only mean this example stored it
        t.source = f"p{n}{t.source}"
    try:
        reply = stub.Gate(pb.GateRequest(transcripts=batch), timeout=30)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        stored = 0
        for t in batch:
            try:
                stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source=t.source, id=t.id)))
                stored += 1
            except grpc.RpcError as missing:
                assert missing.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert stored == 0
        event("rejected")
        return
    event("stored" if batch else "empty batch accepted")
    assert len(reply.verdicts) == len(batch)
    first: dict[tuple[str, str], pb.Transcript] = {}
    for t, v in zip(batch, reply.verdicts):
        # a key repeated inside one batch is stored once, as its first occurrence, and answered as such
        stored = first.setdefault((t.source, t.id), t)
        assert v.duplicate == (stored is not t)
        assert 0.0 <= v.bot_origin <= 1.0 and 0.0 <= v.repetitiveness <= 1.0 and len(v.turns) == len(stored.turns)
        record = stub.GetRecord(pb.GetRecordRequest(record_id=v.record_id))
        assert [x.text for x in record.transcript.turns] == [x.text for x in stored.turns]
        assert dict(record.transcript.metadata) == dict(stored.metadata)


def test_the_server_is_still_serving_after_the_examples(live):
    reply = health_pb2_grpc.HealthStub(live).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=st.builds(pb.RecordFilter, sources=st.lists(SHORT, max_size=3), tags=st.lists(SHORT, max_size=3),
                   decisions=st.lists(st.integers(0, 6), max_size=3), text_contains=TEXT,
                   model_versions=st.lists(SHORT, max_size=2),
                   bot_origin=st.builds(pb.ScoreRange, at_least=st.floats(-1, 2), below=st.floats(-1, 2))),
       cursor=st.one_of(st.just(""), SHORT))
def test_any_query_is_answered_ok_or_invalid(live, f, cursor):
    stub = gate_pb2_grpc.QualityGateStub(live)
    try:
        for _ in stub.QueryRecords(pb.QueryRecordsRequest(filter=f, cursor=cursor, page_size=50), timeout=30):
            pass
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
