"""Plain domain types: what the core works on, free of protobuf and gRPC.

The gRPC layer converts messages to these and back (echogate.grpc_api.convert); the
core, store and CLI never see protobuf. Enums are StrEnums: a member is its own string
value, so the hot path uses members directly where a string is needed.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


# Roles as small integers for array work (echogate.text.role_codes): 0, 1, 2 in Role's order;
# a role name outside Role (plain strings from offline tools) is OTHER_ROLE.
ROLE_CODES = {role: code for code, role in enumerate(Role)}
OTHER_ROLE = len(ROLE_CODES)


class DeclaredOrigin(enum.StrEnum):
    UNKNOWN = "unknown"
    HUMAN = "human"
    BOT = "bot"
    SYNTHETIC = "synthetic"


class Decision(enum.StrEnum):
    ACCEPT = "accept"
    TAG = "tag"
    REVIEW = "review"
    BLOCK = "block"


class Turn(NamedTuple):
    # A NamedTuple, not a dataclass: one is built per turn on the hot path.
    role: Role
    text: str
    timestamp: datetime | None = None
    declared_author: DeclaredOrigin = DeclaredOrigin.UNKNOWN


@dataclass(frozen=True)
class Transcript:
    id: str
    source: str
    turns: tuple[Turn, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    declared_origin: DeclaredOrigin = DeclaredOrigin.UNKNOWN
    language: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key."""
        return (self.source, self.id)


class TurnScore(NamedTuple):
    bot_origin: float
    repetitiveness: float
    seen_before: int = 0  # earlier transcripts that had this turn (echogate.corpus)


class RepetitionStats(NamedTuple):
    """Gopher-family statistics of a transcript's agent side (every turn when there is none);
    see echogate.repetition and docs/repetition.md."""

    duplicate_turn_fraction: float = 0.0
    duplicate_turn_char_fraction: float = 0.0
    top_trigram_fraction: float = 0.0
    distinct_3: float = 0.0
    compression_ratio: float = 0.0


class Scores(NamedTuple):
    """What the model and the repetition statistics say about one transcript. A NamedTuple, as
    TurnScore is: one is built per transcript on the hot path (0.9 us against a frozen
    dataclass's 2.3)."""

    bot_origin: float
    repetitiveness: float
    turns: tuple[TurnScore, ...]
    # share of the agent side (all turns when there is none) seen in earlier transcripts
    corpus_duplicate: float = 0.0
    repetition: RepetitionStats = RepetitionStats()


@dataclass(frozen=True)
class Verdict:
    transcript_id: str
    source: str
    content_sha256: str
    scores: Scores
    decision: Decision
    tags: tuple[str, ...]
    reasons: tuple[str, ...]
    model_version: str
    policy_version: str
    decided_at: datetime
    record_id: str = ""
    duplicate: bool = False


@dataclass(frozen=True)
class Record:
    """A stored verdict with the transcript it judged."""

    verdict: Verdict
    transcript: Transcript
    received_at: datetime


class Label(enum.StrEnum):
    """A reviewer's judgement of who wrote a transcript."""

    HUMAN = "human"
    MACHINE = "machine"


@dataclass(frozen=True)
class ReviewItem:
    """A REVIEW verdict handed to a reviewer, leased to them until `lease_expires_at`."""

    record: Record
    queued_at: datetime
    lease_expires_at: datetime
