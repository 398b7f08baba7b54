"""The QualityGate servicer: protobuf in, core call, protobuf out. No logic of its own."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from echogate.errors import FieldViolation, InvalidArgument
from echogate.gate import GateCore
from echogate.grpc_api import convert
from echogate.query import MAX_PAGE, Cursor
from echogate.security import caller
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc


class QualityGateServicer(gate_pb2_grpc.QualityGateServicer):
    def __init__(self, core: GateCore):
        self.core = core

    def _transcripts(self, request):
        transcripts = convert.transcripts_from_pb(request.transcripts, request.ByteSize(), self.core.settings.limits)
        who = caller.get()
        for i, t in enumerate(transcripts):
            who.check_source(t.source, f"transcripts[{i}]")
        return transcripts

    @staticmethod
    def _sources(requested) -> tuple[str, ...]:
        """The sources a read may cover: what was asked, within what the caller's token allows."""
        who = caller.get()
        for source in requested:
            who.check_source(source, "filter")
        return tuple(requested) or tuple(sorted(who.sources))

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        verdicts = await self.core.score(self._transcripts(request))
        return pb.ScoreResponse(verdicts=[convert.verdict_to_pb(v) for v in verdicts])

    async def Gate(self, request: pb.GateRequest, context: grpc.aio.ServicerContext) -> pb.GateResponse:
        verdicts = await self.core.gate(self._transcripts(request))
        return pb.GateResponse(verdicts=[convert.verdict_to_pb(v) for v in verdicts])

    async def GateStream(self, request_iterator: AsyncIterator[pb.GateRequest],
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GateResponse]:
        # One message at a time: the next is read only after this one is stored and answered,
        # so a fast producer is held back by gRPC flow control instead of filling memory.
        async for request in request_iterator:
            verdicts = await self.core.gate(self._transcripts(request))
            yield pb.GateResponse(verdicts=[convert.verdict_to_pb(v) for v in verdicts])

    async def GetRecord(self, request: pb.GetRecordRequest, context: grpc.aio.ServicerContext) -> pb.Record:
        which = request.WhichOneof("key")
        if which == "record_id" and request.record_id:
            record = await self.core.get_record(record_id=request.record_id)
        elif which == "transcript" and request.transcript.id:
            record = await self.core.get_record(key=(request.transcript.source, request.transcript.id))
        else:
            raise InvalidArgument([FieldViolation("key", "set record_id or transcript.id")])
        caller.get().check_source(record.transcript.source, "record")
        return convert.record_to_pb(record)

    async def QueryRecords(self, request: pb.QueryRecordsRequest,
                           context: grpc.aio.ServicerContext) -> AsyncIterator[pb.QueryRecordsResponse]:
        f = convert.filter_from_pb(request.filter)
        f = replace(f, sources=self._sources(f.sources))
        after = Cursor.decode(request.cursor) if request.cursor else None
        if request.page_size > MAX_PAGE:
            raise InvalidArgument([FieldViolation("page_size", f"{request.page_size} is over the maximum {MAX_PAGE}")])
        sent = 0
        try:
            async for page, cursor in self.core.query(f, after, request.limit, request.page_size or 100):
                sent += len(page)
                yield pb.QueryRecordsResponse(records=[convert.record_to_pb(r) for r in page], cursor=cursor.encode())
        finally:
            self.core.audit.record(caller.get().name, "query_records", filter=f, cursor=request.cursor, records=sent)

    async def CountRecords(self, request: pb.CountRecordsRequest,
                           context: grpc.aio.ServicerContext) -> pb.CountRecordsResponse:
        f = convert.filter_from_pb(request.filter)
        groups = await self.core.count(replace(f, sources=self._sources(f.sources)),
                                       convert.group_by_from_pb(request.group_by))
        return pb.CountRecordsResponse(groups=[convert.count_to_pb(g) for g in groups],
                                       total=sum(g.count for g in groups))

    async def ListReviews(self, request: pb.ListReviewsRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListReviewsResponse:
        problems = []
        if not request.reviewer or len(request.reviewer) > 128:
            problems.append(FieldViolation("reviewer", "required, at most 128 characters"))
        if request.max_items > 100:
            problems.append(FieldViolation("max_items", f"{request.max_items} is over the maximum 100"))
        if request.lease_seconds > 86_400:
            problems.append(FieldViolation("lease_seconds", f"{request.lease_seconds} is over the maximum 86400"))
        if problems:
            raise InvalidArgument(problems)
        items = await self.core.list_reviews(request.reviewer, request.max_items or 1, request.lease_seconds or 300,
                                             self._sources(request.sources))
        return pb.ListReviewsResponse(items=[convert.review_item_to_pb(i) for i in items])

    async def SubmitReview(self, request: pb.SubmitReviewRequest,
                           context: grpc.aio.ServicerContext) -> pb.SubmitReviewResponse:
        label, final = convert.review_from_pb(request)
        who = caller.get()
        if who.sources:
            current = await self.core.get_record(record_id=request.record_id)
            who.check_source(current.transcript.source, "record")
        record = await self.core.submit_review(request.record_id, request.reviewer, label, final, request.note)
        self.core.audit.record(who.name, "submit_review", record_id=request.record_id, reviewer=request.reviewer,
                               label=str(label), final_decision=str(final), note=request.note)
        return pb.SubmitReviewResponse(record=convert.record_to_pb(record))

    async def Reload(self, request: pb.ReloadRequest, context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        who = caller.get().name
        try:
            model_version, policy_version = await self.core.reload()
        except Exception as exc:
            self.core.audit.record(who, "reload", ok=False, error=str(exc))
            raise
        self.core.audit.record(who, "reload", ok=True, model_version=model_version, policy_version=policy_version)
        return pb.ReloadResponse(model_version=model_version, policy_version=policy_version)

    async def GetServerInfo(self, request, context) -> pb.ServerInfo:
        info = self.core.server_info()
        return pb.ServerInfo(server_version=info["server_version"], model_version=info["model_version"],
                             policy_version=info["policy_version"], limits=convert.limits_to_pb(info["limits"]),
                             store_backend=info["store_backend"])
