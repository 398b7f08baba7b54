"""Load beyond capacity: a full scoring queue answers RESOURCE_EXHAUSTED with retry advice instead
of growing; deadlines are honoured; a call that ends early (deadline, cancel) stores nothing."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.v1 import gate_pb2 as pb
from echogate_client.client import AsyncClient, RetryPolicy, retry_delay
from tests.conftest import make_settings, transcript


@pytest.fixture
async def slow_server(tmp_path):
    """One inference worker whose every model call takes 0.3 s more (a saturated server), and a
    queue of at most 8 transcripts."""
    settings = make_settings(tmp_path, batching={"max_queue_transcripts": 8, "inference_threads": 1,
                                                 "max_batch_transcripts": 4})
    async with EchogateServer(settings) as srv:
        score = srv.core.batcher._fn

        def slow(batch):
            time.sleep(0.3)
            return score(batch)
        srv.core.batcher._fn = slow
        yield srv


async def test_a_full_queue_answers_resource_exhausted_with_retry_info(slow_server):
    async with AsyncClient(slow_server.address, retry=RetryPolicy(attempts=1)) as client:
        calls = [client.score([transcript(f"o{i}-{j}", "hello", "hi there") for j in range(4)]) for i in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert refused and served
    for err in refused:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        assert retry_delay(err) > 0 and "queue full" in err.details()
    assert slow_server.core.batcher.queued == 0  # nothing left behind


async def test_the_client_retries_overload_until_served(slow_server):
    patient = RetryPolicy(attempts=20, initial_backoff_s=0.05, max_backoff_s=0.5)
    async with AsyncClient(slow_server.address, retry=patient) as client:
        results = await asyncio.gather(*(client.gate([transcript(f"r{i}-{j}", "hello", "hi there, how can I help?")
                                                      for j in range(4)]) for i in range(6)))
    assert sum(len(r) for r in results) == 24 and all(not v.duplicate for r in results for v in r)


async def test_a_call_past_its_deadline_stores_nothing(slow_server):
    async with AsyncClient(slow_server.address, retry=RetryPolicy(attempts=1), timeout_s=0.1) as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.gate([transcript("late", "hello", "hi there")])
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(0.8)  # the model call it was in has finished
    async with AsyncClient(slow_server.address) as client:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.stub.GetRecord(pb.GetRecordRequest(transcript=pb.TranscriptKey(source="test", id="late")))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_cancelled_stream_stops_and_keeps_what_was_answered(slow_server):
    async with AsyncClient(slow_server.address) as client:
        async def batches():
            for i in range(20):
                yield [transcript(f"s{i}", "hello", "hi there, anything else?")]
                await asyncio.sleep(0.05)
        call = client.gate_stream(batches())
        answered = []
        async for response in call:
            answered += [v.transcript_id for v in response.verdicts]
            if len(answered) == 2:
                call.cancel()
                break
        await asyncio.sleep(1.0)
        count = await client.count_records(pb.RecordFilter(sources=["test"]))
    assert answered == ["s0", "s1"]
    assert 2 <= count.total <= 3  # what was answered, and at most the one message in flight at the cancel
