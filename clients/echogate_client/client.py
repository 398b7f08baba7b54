"""Python client for echogate, sync (`Client`) and asyncio (`AsyncClient`).

Authentication: a bearer token (`token=` or the ECHOGATE_TOKEN variable) goes with every call;
`tls_credentials()` makes TLS or mutual-TLS channel credentials.

Retries resend the identical request, so the same transcript ids: Gate is idempotent by
(source, id) and a retried batch is never stored twice. Retried codes: UNAVAILABLE,
RESOURCE_EXHAUSTED (honouring the server's RetryInfo delay), ABORTED and, for calls that
are safe to repeat, DEADLINE_EXCEEDED.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import grpc
from google.rpc import error_details_pb2, status_pb2

from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def delay(self, attempt: int, error: grpc.RpcError) -> float:
        hinted = retry_delay(error)
        backoff = min(self.max_backoff_s, self.initial_backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return max(backoff, hinted or 0.0)


def rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status detail of a failed call, if the server attached one."""
    for key, value in (error.trailing_metadata() or ()):
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of an INVALID_ARGUMENT error's BadRequest detail."""
    status = rich_status(error)
    out = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def retry_delay(error: grpc.RpcError) -> float | None:
    status = rich_status(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _auth_metadata(token: str | None) -> tuple:
    """The bearer token of every call: the argument, else ECHOGATE_TOKEN, else none."""
    token = token or os.environ.get("ECHOGATE_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


def tls_credentials(ca_file: str | None = None, cert_file: str | None = None,
                    key_file: str | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials: the CA that signed the server's certificate (None: the system's),
    and for mutual TLS the client's own certificate and key."""
    def read(path):
        with open(path, "rb") as fh:
            return fh.read()
    return grpc.ssl_channel_credentials(root_certificates=read(ca_file) if ca_file else None,
                                        private_key=read(key_file) if key_file else None,
                                        certificate_chain=read(cert_file) if cert_file else None)


def connect(target: str, **kwargs) -> "Client":
    """A Client configured from the environment, as the command line uses it: ECHOGATE_TOKEN,
    and ECHOGATE_TLS_CA (plus ECHOGATE_TLS_CERT and ECHOGATE_TLS_KEY for mutual TLS)."""
    env = os.environ
    if env.get("ECHOGATE_TLS_CA") or env.get("ECHOGATE_TLS_CERT"):
        kwargs.setdefault("credentials", tls_credentials(env.get("ECHOGATE_TLS_CA"), env.get("ECHOGATE_TLS_CERT"),
                                                         env.get("ECHOGATE_TLS_KEY")))
    return Client(target, **kwargs)


_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


class Client:
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(self, target: str, retry: RetryPolicy = RetryPolicy(), timeout_s: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, token: str | None = None):
        self.channel = (grpc.secure_channel(target, credentials, _OPTIONS) if credentials
                        else grpc.insecure_channel(target, _OPTIONS))
        self.stub = gate_pb2_grpc.QualityGateStub(self.channel)
        self.retry = retry
        self.timeout_s = timeout_s
        self.metadata = _auth_metadata(token)

    def _call(self, method, request):
        for attempt in range(self.retry.attempts):
            try:
                return method(request, timeout=self.timeout_s, metadata=self.metadata)
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retry.attempts - 1:
                    raise
                time.sleep(self.retry.delay(attempt, err))
        raise AssertionError("unreachable")

    def score(self, transcripts: list[pb.Transcript]) -> list[pb.Verdict]:
        return list(self._call(self.stub.Score, pb.ScoreRequest(transcripts=transcripts)).verdicts)

    def gate(self, transcripts: list[pb.Transcript]) -> list[pb.Verdict]:
        return list(self._call(self.stub.Gate, pb.GateRequest(transcripts=transcripts)).verdicts)

    def gate_all(self, transcripts: Iterable[pb.Transcript], batch_size: int = 256) -> Iterator[pb.Verdict]:
        """Gate any number of transcripts in batches; yields verdicts in input order."""
        for batch in _batches(transcripts, batch_size):
            yield from self.gate(batch)

    def gate_stream(self, batches: Iterable[list[pb.Transcript]]) -> Iterator[pb.GateResponse]:
        """One GateStream call; no automatic retry (resend the unanswered batches on error)."""
        return self.stub.GateStream((pb.GateRequest(transcripts=b) for b in batches), metadata=self.metadata)

    def get_record(self, record_id: str = "", source: str = "", transcript_id: str = "") -> pb.Record:
        req = (pb.GetRecordRequest(record_id=record_id) if record_id else
               pb.GetRecordRequest(transcript=pb.TranscriptKey(source=source, id=transcript_id)))
        return self._call(self.stub.GetRecord, req)

    def query_records(self, filter: pb.RecordFilter | None = None, limit: int = 0, page_size: int = 500,
                      cursor: str = "") -> Iterator[pb.Record]:
        """Every stored record matching `filter`, oldest decision first. A broken stream is
        resumed from the last cursor received, so no record is skipped or repeated."""
        sent, attempt = 0, 0
        while not limit or sent < limit:
            request = pb.QueryRecordsRequest(filter=filter, cursor=cursor, page_size=page_size,
                                             limit=limit - sent if limit else 0)
            try:
                for response in self.stub.QueryRecords(request, timeout=self.timeout_s, metadata=self.metadata):
                    yield from response.records
                    cursor, sent, attempt = response.cursor, sent + len(response.records), 0
                return
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retry.attempts - 1:
                    raise
                time.sleep(self.retry.delay(attempt, err))
                attempt += 1

    def count_records(self, filter: pb.RecordFilter | None = None, group_by=()) -> pb.CountRecordsResponse:
        return self._call(self.stub.CountRecords, pb.CountRecordsRequest(filter=filter, group_by=group_by))

    def list_reviews(self, reviewer: str, max_items: int = 1, lease_seconds: int = 300,
                     sources=()) -> list[pb.ReviewItem]:
        return list(self._call(self.stub.ListReviews, pb.ListReviewsRequest(
            reviewer=reviewer, max_items=max_items, lease_seconds=lease_seconds, sources=sources)).items)

    def submit_review(self, record_id: str, reviewer: str, label: int, final_decision: int,
                      note: str = "") -> pb.Record:
        return self._call(self.stub.SubmitReview, pb.SubmitReviewRequest(
            record_id=record_id, reviewer=reviewer, label=label, final_decision=final_decision, note=note)).record

    def server_info(self) -> pb.ServerInfo:
        return self._call(self.stub.GetServerInfo, pb.GetServerInfoRequest())

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """asyncio client with the same methods as `Client`, as coroutines."""

    def __init__(self, target: str, retry: RetryPolicy = RetryPolicy(), timeout_s: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, token: str | None = None):
        self.channel = (grpc.aio.secure_channel(target, credentials, _OPTIONS) if credentials
                        else grpc.aio.insecure_channel(target, _OPTIONS))
        self.stub = gate_pb2_grpc.QualityGateStub(self.channel)
        self.retry = retry
        self.timeout_s = timeout_s
        self.metadata = _auth_metadata(token)

    async def _call(self, method, request):
        for attempt in range(self.retry.attempts):
            try:
                return await method(request, timeout=self.timeout_s, metadata=self.metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retry.attempts - 1:
                    raise
                await asyncio.sleep(self.retry.delay(attempt, err))
        raise AssertionError("unreachable")

    async def score(self, transcripts: list[pb.Transcript]) -> list[pb.Verdict]:
        return list((await self._call(self.stub.Score, pb.ScoreRequest(transcripts=transcripts))).verdicts)

    async def gate(self, transcripts: list[pb.Transcript]) -> list[pb.Verdict]:
        return list((await self._call(self.stub.Gate, pb.GateRequest(transcripts=transcripts))).verdicts)

    async def gate_all(self, transcripts: Iterable[pb.Transcript], batch_size: int = 256,
                       concurrency: int = 4) -> AsyncIterator[pb.Verdict]:
        """Gate in batches with up to `concurrency` calls in flight; yields verdicts in input order."""
        pending: list[asyncio.Task] = []
        for batch in _batches(transcripts, batch_size):
            pending.append(asyncio.create_task(self.gate(batch)))
            if len(pending) >= concurrency:
                for v in await pending.pop(0):
                    yield v
        for task in pending:
            for v in await task:
                yield v

    def gate_stream(self, batches: AsyncIterable[list[pb.Transcript]] | Iterable[list[pb.Transcript]]):
        """One GateStream call: an async iterator of GateResponse, one per batch, in order."""
        async def requests():
            if hasattr(batches, "__aiter__"):
                async for b in batches:
                    yield pb.GateRequest(transcripts=b)
            else:
                for b in batches:
                    yield pb.GateRequest(transcripts=b)
        return self.stub.GateStream(requests(), metadata=self.metadata)

    async def get_record(self, record_id: str = "", source: str = "", transcript_id: str = "") -> pb.Record:
        req = (pb.GetRecordRequest(record_id=record_id) if record_id else
               pb.GetRecordRequest(transcript=pb.TranscriptKey(source=source, id=transcript_id)))
        return await self._call(self.stub.GetRecord, req)

    async def query_records(self, filter: pb.RecordFilter | None = None, limit: int = 0, page_size: int = 500,
                            cursor: str = "") -> AsyncIterator[pb.Record]:
        """As `Client.query_records`: resumes a broken stream from the last cursor."""
        sent, attempt = 0, 0
        while not limit or sent < limit:
            request = pb.QueryRecordsRequest(filter=filter, cursor=cursor, page_size=page_size,
                                             limit=limit - sent if limit else 0)
            try:
                async for response in self.stub.QueryRecords(request, timeout=self.timeout_s, metadata=self.metadata):
                    for record in response.records:
                        yield record
                    cursor, sent, attempt = response.cursor, sent + len(response.records), 0
                return
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE or attempt == self.retry.attempts - 1:
                    raise
                await asyncio.sleep(self.retry.delay(attempt, err))
                attempt += 1

    async def count_records(self, filter: pb.RecordFilter | None = None, group_by=()) -> pb.CountRecordsResponse:
        return await self._call(self.stub.CountRecords, pb.CountRecordsRequest(filter=filter, group_by=group_by))

    async def list_reviews(self, reviewer: str, max_items: int = 1, lease_seconds: int = 300,
                           sources=()) -> list[pb.ReviewItem]:
        return list((await self._call(self.stub.ListReviews, pb.ListReviewsRequest(
            reviewer=reviewer, max_items=max_items, lease_seconds=lease_seconds, sources=sources))).items)

    async def submit_review(self, record_id: str, reviewer: str, label: int, final_decision: int,
                            note: str = "") -> pb.Record:
        return (await self._call(self.stub.SubmitReview, pb.SubmitReviewRequest(
            record_id=record_id, reviewer=reviewer, label=label, final_decision=final_decision, note=note))).record

    async def server_info(self) -> pb.ServerInfo:
        return await self._call(self.stub.GetServerInfo, pb.GetServerInfoRequest())

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
