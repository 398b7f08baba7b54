"""Protobuf <-> plain types. The only module that knows both worlds."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from echogate.errors import FieldViolation, InvalidArgument
from echogate.settings import Limits
from echogate.types import DeclaredOrigin, Decision, Record, Role, Transcript, Turn, Verdict
from echogate.v1 import gate_pb2 as pb

_ROLE_FROM_PB = {pb.ROLE_CUSTOMER: Role.CUSTOMER, pb.ROLE_AGENT: Role.AGENT, pb.ROLE_SYSTEM: Role.SYSTEM}
_ROLE_TO_PB = {v: k for k, v in _ROLE_FROM_PB.items()}
_ORIGIN_FROM_PB = {pb.DECLARED_ORIGIN_UNSPECIFIED: DeclaredOrigin.UNKNOWN, pb.DECLARED_ORIGIN_HUMAN: DeclaredOrigin.HUMAN,
                   pb.DECLARED_ORIGIN_BOT: DeclaredOrigin.BOT, pb.DECLARED_ORIGIN_SYNTHETIC: DeclaredOrigin.SYNTHETIC}
_ORIGIN_TO_PB = {v: k for k, v in _ORIGIN_FROM_PB.items()}
_DECISION_TO_PB = {Decision.ACCEPT: pb.DECISION_ACCEPT, Decision.TAG: pb.DECISION_TAG,
                   Decision.REVIEW: pb.DECISION_REVIEW, Decision.BLOCK: pb.DECISION_BLOCK}


def transcripts_from_pb(messages, request_bytes: int, limits: Limits) -> list[Transcript]:
    """Convert a request's transcripts, rejecting what cannot be represented (unknown enum values,
    oversized messages) with the field path that is wrong."""
    if request_bytes > limits.max_message_bytes:
        raise InvalidArgument([FieldViolation(
            "transcripts", f"request of {request_bytes} bytes exceeds the message limit of {limits.max_message_bytes}")])
    problems: list[FieldViolation] = []
    out = []
    for i, m in enumerate(messages):
        turns = []
        for j, t in enumerate(m.turns):
            role = _ROLE_FROM_PB.get(t.role)
            if role is None:
                problems.append(FieldViolation(f"transcripts[{i}].turns[{j}].role",
                                               f"unknown or unspecified role {t.role}; use CUSTOMER, AGENT or SYSTEM"))
                continue
            author = _ORIGIN_FROM_PB.get(t.declared_author)
            if author is None:
                problems.append(FieldViolation(f"transcripts[{i}].turns[{j}].declared_author",
                                               f"unknown declared origin {t.declared_author}"))
                continue
            ts = t.timestamp.ToDatetime(tzinfo=timezone.utc) if t.HasField("timestamp") else None
            turns.append(Turn(role, t.text, ts, author))
        origin = _ORIGIN_FROM_PB.get(m.declared_origin)
        if origin is None:
            problems.append(FieldViolation(f"transcripts[{i}].declared_origin",
                                           f"unknown declared origin {m.declared_origin}"))
            origin = DeclaredOrigin.UNKNOWN
        out.append(Transcript(m.id, m.source, tuple(turns), dict(m.metadata), origin, m.language))
    if problems:
        raise InvalidArgument(problems)
    return out


def verdict_to_pb(v: Verdict) -> pb.Verdict:
    return pb.Verdict(
        transcript_id=v.transcript_id, source=v.source, record_id=v.record_id, content_sha256=v.content_sha256,
        bot_origin=v.scores.bot_origin, repetitiveness=v.scores.repetitiveness,
        # dicts instead of TurnScore objects: about 3x faster to build, one per turn on the hot path
        turns=[{"bot_origin": t.bot_origin, "repetitiveness": t.repetitiveness, "seen_before": t.seen_before}
               for t in v.scores.turns],
        corpus_duplicate=v.scores.corpus_duplicate,
        decision=_DECISION_TO_PB[v.decision], tags=v.tags, reasons=v.reasons, model_version=v.model_version,
        policy_version=v.policy_version, duplicate=v.duplicate, decided_at=_ts(v.decided_at),
    )


def record_to_pb(r: Record) -> pb.Record:
    t = r.transcript
    turns = [pb.Turn(role=_ROLE_TO_PB[x.role], text=x.text, declared_author=_ORIGIN_TO_PB[x.declared_author],
                     timestamp=_ts(x.timestamp) if x.timestamp else None) for x in t.turns]
    transcript = pb.Transcript(id=t.id, source=t.source, turns=turns, metadata=t.metadata,
                               declared_origin=_ORIGIN_TO_PB[t.declared_origin], language=t.language)
    return pb.Record(verdict=verdict_to_pb(r.verdict), transcript=transcript, received_at=_ts(r.received_at))


def limits_to_pb(limits: Limits) -> pb.Limits:
    return pb.Limits(max_batch=limits.max_batch, max_turns=limits.max_turns, max_turn_bytes=limits.max_turn_bytes,
                     max_id_bytes=limits.max_id_bytes, max_metadata_entries=limits.max_metadata_entries,
                     max_message_bytes=limits.max_message_bytes)


@lru_cache(maxsize=64)
def _ts(dt: datetime) -> Timestamp:
    """Cached: every verdict of a batch shares its decision time. Callers copy, never mutate."""
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts

