"""Typed errors of the core. The gRPC layer maps each to one status code in one place
(echogate.grpc_api.errors); nothing else in the service knows about status codes."""
from __future__ import annotations

from dataclasses import dataclass


class EchogateError(Exception):
    """Base class: the message is safe to show to the caller."""


@dataclass(frozen=True)
class FieldViolation:
    field: str  # path such as "transcripts[3].turns[0].text"
    description: str


class InvalidArgument(EchogateError):
    def __init__(self, violations: list[FieldViolation]):
        self.violations = violations
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"{first.field}: {first.description}{more}")


class NotFound(EchogateError):
    pass


class FailedPrecondition(EchogateError):
    """The request is valid but the system is not in a state to carry it out (an expired review
    lease, a reload whose new files do not validate); the message says why."""


class Overloaded(EchogateError):
    """The scoring queue is full; retry after `retry_after_s` with the same ids."""

    def __init__(self, message: str, retry_after_s: float):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class Unavailable(EchogateError):
    """A dependency (the store) is down or the server is shutting down; safe to retry."""
