"""What data engineers ask of the store: a record filter, group-by counts and a resumable cursor.

These are plain values shared by the gRPC API (QueryRecords, CountRecords), the command line
(`echogate query`, `export`, `purge`) and every store backend. Filters are parameters that the
backends bind into SQL; nothing a caller sends is ever spliced into a statement.

Intervals are half-open, [at_least, below) for scores and [since, until) for decision times, so
consecutive ranges never overlap or leave gaps.
"""
from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

from echogate.errors import FieldViolation, InvalidArgument
from echogate.types import DeclaredOrigin, Decision

MAX_PAGE = 1000
MAX_TEXT_QUERY = 256


@dataclass(frozen=True)
class ScoreRange:
    at_least: float | None = None  # inclusive
    below: float | None = None  # exclusive

    def is_set(self) -> bool:
        return self.at_least is not None or self.below is not None


@dataclass(frozen=True)
class RecordFilter:
    """Every condition must hold; an empty filter matches every record."""

    since: datetime | None = None  # decided_at >= since
    until: datetime | None = None  # decided_at < until
    sources: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    tags: tuple[str, ...] = ()  # the record carries every one of these tags
    declared_origins: tuple[DeclaredOrigin, ...] = ()
    model_versions: tuple[str, ...] = ()
    bot_origin: ScoreRange = field(default_factory=ScoreRange)
    repetitiveness: ScoreRange = field(default_factory=ScoreRange)
    corpus_duplicate: ScoreRange = field(default_factory=ScoreRange)
    text_contains: str = ""  # case-insensitive substring of any turn's text

    def is_empty(self) -> bool:
        return self == RecordFilter()

    def validate(self, prefix: str = "filter") -> None:
        """Raise InvalidArgument naming every bad field (ranges outside 0..1 or empty, and so on)."""
        problems = []
        for name in ("bot_origin", "repetitiveness", "corpus_duplicate"):
            r: ScoreRange = getattr(self, name)
            for bound in ("at_least", "below"):
                value = getattr(r, bound)
                if value is not None and not 0.0 <= value <= 1.0:
                    problems.append(FieldViolation(f"{prefix}.{name}.{bound}", f"{value} is outside 0..1"))
            if r.at_least is not None and r.below is not None and r.at_least >= r.below:
                problems.append(FieldViolation(f"{prefix}.{name}",
                                               f"empty range: at_least {r.at_least} >= below {r.below}"))
        if self.since and self.until and self.since >= self.until:
            problems.append(FieldViolation(f"{prefix}.decided_until", "must be later than decided_since"))
        if len(self.text_contains) > MAX_TEXT_QUERY:
            problems.append(FieldViolation(f"{prefix}.text_contains",
                                           f"{len(self.text_contains)} characters; at most {MAX_TEXT_QUERY}"))
        if problems:
            raise InvalidArgument(problems)


class GroupBy(enum.StrEnum):
    DECISION = "decision"
    SOURCE = "source"
    DAY = "day"  # UTC date of decided_at, YYYY-MM-DD


@dataclass(frozen=True)
class CountGroup:
    decision: Decision | None
    source: str | None
    day: str | None
    count: int


@dataclass(frozen=True)
class Cursor:
    """Where a query stopped: records come in (decided_at, record_id) order, so the next page
    starts strictly after this pair. Opaque to callers; stable across servers and restarts."""

    decided_at: datetime
    record_id: str

    def encode(self) -> str:
        raw = orjson.dumps([self.decided_at.astimezone(timezone.utc).isoformat(), self.record_id])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, field_name: str = "cursor") -> "Cursor":
        try:
            decided_at, record_id = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return cls(datetime.fromisoformat(decided_at), str(record_id))
        except Exception:  # noqa: BLE001 - any malformed token is the caller's error
            raise InvalidArgument([FieldViolation(field_name, "not a cursor returned by QueryRecords")]) from None
