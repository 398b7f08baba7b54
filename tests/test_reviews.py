"""The human review queue on each store backend: REVIEW verdicts queue with their records, leases
keep reviewers apart and expire, reviews change the record, and the labels export as training
data; `echogate review` drives it from a terminal."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request

import grpc
import pytest

from echogate.export import export_reviews
from echogate.grpc_api.server import EchogateServer
from echogate.store import open_store
from echogate.v1 import gate_pb2 as pb
from echogate_client.client import AsyncClient
from tests.conftest import make_settings, transcript

REVIEW_EVERYTHING = {"tag_bot_origin": 0.0, "review_bot_origin": 0.0, "block_bot_origin": 1.0,
                     "tag_repetitiveness": 1.0, "block_repetitiveness": 1.0}


@pytest.fixture
async def gate(tmp_path, store_url):
    settings = make_settings(tmp_path, policy=REVIEW_EVERYTHING)
    settings.store.url = store_url
    async with EchogateServer(settings) as srv, AsyncClient(srv.address) as client:
        verdicts = []
        for i in range(12):  # one call each: queue order is decision order
            verdicts += await client.gate([transcript(f"rv{i}", "is my refund coming?", f"It is on its way, {i}.",
                                                      source="acme" if i % 3 else "beta")])
        assert all(v.decision == pb.DECISION_REVIEW for v in verdicts)
        yield srv, client, verdicts


async def test_leases_hand_out_each_item_once_oldest_first(gate):
    srv, client, verdicts = gate
    alice = await client.list_reviews("alice", max_items=5)
    assert [i.record.transcript.id for i in alice] == [f"rv{i}" for i in range(5)]
    assert all(i.lease_expires_at.ToSeconds() > i.queued_at.ToSeconds() for i in alice)
    beta = await client.list_reviews("bob", max_items=10, sources=["beta"])
    assert {i.record.transcript.source for i in beta} == {"beta"}
    assert not {i.record.verdict.record_id for i in beta} & {i.record.verdict.record_id for i in alice}
    rest = await client.list_reviews("carol", max_items=100)
    taken = [i.record.verdict.record_id for i in alice + beta + rest]
    assert sorted(taken) == sorted(v.record_id for v in verdicts)
    assert await client.list_reviews("dave", max_items=5) == []


async def test_concurrent_reviewers_never_share_an_item(gate):
    srv, client, verdicts = gate

    async def reviewer(name: str) -> list[str]:
        got = []
        while items := await client.list_reviews(name, max_items=1):
            got += [i.record.verdict.record_id for i in items]
        return got

    results = await asyncio.gather(*(reviewer(f"r{n}") for n in range(4)))
    everything = [rid for r in results for rid in r]
    assert len(everything) == len(set(everything)) == len(verdicts)


async def test_an_expired_lease_returns_the_item_and_only_the_holder_may_submit(gate):
    srv, client, verdicts = gate
    [item] = await client.list_reviews("alice", max_items=1, lease_seconds=1)
    rid = item.record.verdict.record_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit_review(rid, "mallory", pb.LABEL_HUMAN, pb.DECISION_ACCEPT)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "held by alice" in err.value.details()
    await asyncio.sleep(1.3)
    [again] = await client.list_reviews("bob", max_items=1)
    assert again.record.verdict.record_id == rid
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit_review(rid, "alice", pb.LABEL_HUMAN, pb.DECISION_ACCEPT)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    record = await client.submit_review(rid, "bob", pb.LABEL_MACHINE, pb.DECISION_BLOCK, "canned reply")
    assert record.verdict.decision == pb.DECISION_BLOCK and "reviewed_machine" in record.verdict.tags
    assert record.verdict.reasons[0].startswith("human_review: bob judged it machine-written and decided block")
    assert (await client.get_record(rid)).verdict.decision == pb.DECISION_BLOCK
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit_review(rid, "bob", pb.LABEL_HUMAN, pb.DECISION_ACCEPT)
    assert "already reviewed by bob" in err.value.details()


async def test_bad_review_requests(gate):
    srv, client, verdicts = gate
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.submit_review("nope", "bob", pb.LABEL_HUMAN, pb.DECISION_ACCEPT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.SubmitReview(pb.SubmitReviewRequest(record_id=verdicts[0].record_id, reviewer="bob"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.ListReviews(pb.ListReviewsRequest(max_items=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_queue_metrics_and_reviewed_labels_export_as_training_data(gate, store_url, tmp_path):
    srv, client, verdicts = gate
    items = await client.list_reviews("alice", max_items=3)
    for item, label in zip(items, (pb.LABEL_HUMAN, pb.LABEL_MACHINE, pb.LABEL_HUMAN)):
        await client.submit_review(item.record.verdict.record_id, "alice", label, pb.DECISION_ACCEPT, "ok")
    await asyncio.sleep(5.1)  # the queue gauges are read from the store at most every 5 s
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(
        f"http://127.0.0.1:{srv.metrics_port}/metrics").read().decode())
    assert "echogate_review_queue_items 9.0" in text
    assert 'echogate_reviews_total{decision="accept",label="human"} 2.0' in text
    assert "echogate_review_queue_oldest_age_seconds " in text

    store = open_store(store_url)
    try:
        manifest = export_reviews(store, tmp_path / "reviews.jsonl")
    finally:
        store.close()
    lines = [json.loads(line) for line in (tmp_path / "reviews.jsonl").read_text().splitlines()]
    assert manifest["labels"] == {"human": 2, "machine": 1} and len(lines) == 3
    for line, item in zip(lines, items):
        assert set(line) >= {"id", "dataset", "label", "generator", "domain", "lang", "turns", "text"}
        assert line["turns"] == [{"role": "customer", "text": "is my refund coming?"},
                                 {"role": "agent", "text": item.record.transcript.turns[1].text}]
        assert line["reviewer"] == "alice" and line["record_id"] == item.record.verdict.record_id


async def test_the_review_command_walks_the_queue(gate):
    srv, client, verdicts = gate
    answers = "m\nb\nlooks canned\ns\nh\n\n\nq\n"  # machine+block+note, skip, human+default decision, quit
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "echogate_client.cli", "review", "--target", srv.address,
                         "--reviewer", "zoe"], input=answers, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "bot origin" in result.stdout and "[ 1] agent" in result.stdout
    assert "recorded: block" in result.stdout and "recorded: accept" in result.stdout
    assert "2 reviewed in this session" in result.stdout
    first = await client.get_record(verdicts[0].record_id)
    assert first.verdict.decision == pb.DECISION_BLOCK and "looks canned" in first.verdict.reasons[0]
    third = await client.get_record(verdicts[2].record_id)
    assert third.verdict.decision == pb.DECISION_ACCEPT and "reviewed_human" in third.verdict.tags
