"""QueryRecords and CountRecords over a real channel, on each store backend, and the retention rule."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from echogate.grpc_api.server import EchogateServer
from echogate_client.client import AsyncClient, field_violations
from echogate.v1 import gate_pb2 as pb
from tests.conftest import make_settings, transcript

SOURCES = ("acme", "beta")


@pytest.fixture
async def client(tmp_path, store_url):
    settings = make_settings(tmp_path)
    settings.store.url = store_url
    async with EchogateServer(settings) as srv, AsyncClient(srv.address) as c:
        for source in SOURCES:
            batch = [transcript(f"q{i}", "I need a refund for order 12" if i % 4 == 0 else "hello there",
                                f"Agent reply {i} for {source}.", source=source,
                                declared_origin=pb.DECLARED_ORIGIN_BOT if i % 5 == 0 else pb.DECLARED_ORIGIN_HUMAN)
                     for i in range(40)]
            await c.gate(batch)
        yield c


async def test_query_streams_every_match_once_in_pages(client):
    f = pb.RecordFilter(sources=["acme"])
    records = [r async for r in client.query_records(f, page_size=7)]
    assert sorted(r.transcript.id for r in records) == sorted(f"q{i}" for i in range(40))
    assert all(r.verdict.source == "acme" and r.transcript.turns for r in records)
    keys = [(r.verdict.decided_at.ToDatetime(), r.verdict.record_id) for r in records]
    assert keys == sorted(keys)


async def test_a_cursor_resumes_where_the_stream_stopped(client):
    f = pb.RecordFilter(sources=["beta"])
    responses = [r async for r in client.stub.QueryRecords(pb.QueryRecordsRequest(filter=f, page_size=15))]
    assert [len(r.records) for r in responses] == [15, 15, 10]
    rest = [r async for r in client.query_records(f, cursor=responses[0].cursor)]
    assert [r.verdict.record_id for r in rest] == [r.verdict.record_id for resp in responses[1:] for r in resp.records]
    limited = [r async for r in client.query_records(f, limit=9, page_size=4)]
    assert [r.verdict.record_id for r in limited] == [r.verdict.record_id for r in responses[0].records[:9]]


async def test_filters_reach_the_store(client):
    refund = [r async for r in client.query_records(pb.RecordFilter(text_contains="REFUND"))]
    assert len(refund) == 20 and all("refund" in r.transcript.turns[0].text for r in refund)
    declared = [r async for r in client.query_records(pb.RecordFilter(
        declared_origins=[pb.DECLARED_ORIGIN_BOT], sources=["acme"]))]
    assert sorted(r.transcript.id for r in declared) == sorted(f"q{i}" for i in range(0, 40, 5))
    future = Timestamp(seconds=4_000_000_000)
    assert [r async for r in client.query_records(pb.RecordFilter(decided_since=future))] == []


async def test_counts_by_group(client):
    reply = await client.count_records(pb.RecordFilter(), [pb.GROUP_BY_SOURCE, pb.GROUP_BY_DECISION])
    assert reply.total == 80
    per_source = {}
    for g in reply.groups:
        assert g.decision != pb.DECISION_UNSPECIFIED and not g.day
        per_source[g.source] = per_source.get(g.source, 0) + g.count
    assert per_source == {"acme": 40, "beta": 40}
    day = await client.count_records(pb.RecordFilter(sources=["beta"]), [pb.GROUP_BY_DAY])
    assert len(day.groups) == 1 and len(day.groups[0].day) == 10 and day.total == 40


@pytest.mark.parametrize("request_, field", [
    (pb.QueryRecordsRequest(cursor="not-a-cursor"), "cursor"),
    (pb.QueryRecordsRequest(page_size=5000), "page_size"),
    (pb.QueryRecordsRequest(filter=pb.RecordFilter(bot_origin=pb.ScoreRange(at_least=0.8, below=0.2))),
     "filter.bot_origin"),
    (pb.QueryRecordsRequest(filter=pb.RecordFilter(repetitiveness=pb.ScoreRange(below=1.5))),
     "filter.repetitiveness.below"),
    (pb.QueryRecordsRequest(filter=pb.RecordFilter(decisions=[pb.DECISION_UNSPECIFIED])), "filter.decisions[0]"),
    (pb.QueryRecordsRequest(filter=pb.RecordFilter(text_contains="x" * 300)), "filter.text_contains"),
])
async def test_bad_queries_name_the_field(client, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in client.stub.QueryRecords(request_)]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(err.value)]


async def test_bad_group_by_is_invalid_argument(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.CountRecords(pb.CountRecordsRequest(group_by=[pb.GROUP_BY_UNSPECIFIED]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(err.value)] == ["group_by[0]"]


SECRET_REPLY = "I completely understand your frustration, and I would be more than happy to assist you today."


async def test_blocked_transcripts_can_be_kept_without_their_words(tmp_path):
    settings = make_settings(tmp_path, policy={"block_bot_origin": 0.0, "review_bot_origin": 0.0,
                                               "tag_bot_origin": 0.0, "retain_blocked_text": False})
    async with EchogateServer(settings) as srv, AsyncClient(srv.address) as c:
        [verdict] = await c.gate([transcript("secret", "my card number is 4111", SECRET_REPLY,
                                             metadata={"email": "a@b.c"})])
        assert verdict.decision == pb.DECISION_BLOCK and "text_not_retained" in verdict.tags
        record = await c.get_record(verdict.record_id)
    assert [t.text for t in record.transcript.turns] == ["", ""]
    assert [t.role for t in record.transcript.turns] == [pb.ROLE_CUSTOMER, pb.ROLE_AGENT]
    assert not record.transcript.metadata
    assert record.verdict.content_sha256 == verdict.content_sha256 and len(record.verdict.turns) == 2
    assert record.verdict.reasons[0].startswith("bot_origin_very_high:")
    # the reasons of the verdict sent back and of the record name the turn but quote none of its words
    for reasons in (verdict.reasons, record.verdict.reasons):
        assert "turn 1 (agent, " in reasons[0] and not any(word in reasons[0] for word in SECRET_REPLY.split() if len(word) > 4)
