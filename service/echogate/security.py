"""Who may call what: bearer tokens with scopes and sources, and the audit log.

Tokens are configured by the SHA-256 of their secret, never the secret itself; a presented
token is hashed and compared with every configured hash in constant time. Scopes:

  ingest  Score, Gate, GateStream      read    GetRecord, QueryRecords, CountRecords
  review  ListReviews, SubmitReview    admin   Reload
  (any valid token) GetServerInfo

A token limited to sources may only gate transcripts of those sources and only read and
review records of those sources, so one platform cannot read or write another's records.
Health and reflection need no token (probes and tooling); reflection reveals only the API
schema, which is public in proto/.
"""
from __future__ import annotations

import contextvars
import getpass
import hashlib
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from echogate.errors import EchogateError
from echogate.settings import SecuritySettings

log = logging.getLogger("echogate.audit")

METHOD_SCOPES = {
    "Score": "ingest", "Gate": "ingest", "GateStream": "ingest",
    "GetRecord": "read", "QueryRecords": "read", "CountRecords": "read",
    "ListReviews": "review", "SubmitReview": "review",
    "Reload": "admin",
    "GetServerInfo": None,  # any valid token
}


class Unauthenticated(EchogateError):
    """No token, or one that matches no configured token."""


class PermissionDenied(EchogateError):
    """A valid token without the scope or the source a call needs."""


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    sources: frozenset[str]  # empty: every source

    def may_use(self, source: str) -> bool:
        return not self.sources or source in self.sources

    def check_source(self, source: str, what: str) -> None:
        if not self.may_use(source):
            raise PermissionDenied(f"token {self.name!r} may not use source {source!r} ({what})")


ANONYMOUS = Principal("anonymous", frozenset(METHOD_SCOPES.values()) - {None}, frozenset())
caller: contextvars.ContextVar[Principal] = contextvars.ContextVar("echogate_caller", default=ANONYMOUS)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh secret and the hash to put in the settings."""
    secret = "eg_" + secrets.token_urlsafe(32)
    return secret, hash_token(secret)


class Authenticator:
    def __init__(self, settings: SecuritySettings):
        self.enabled = bool(settings.tokens)
        self._tokens = [(bytes.fromhex(t.sha256), Principal(t.name, frozenset(t.scopes), frozenset(t.sources)))
                        for t in settings.tokens]

    def authenticate(self, metadata, method: str) -> Principal:
        """The caller of `method`, from its `authorization: Bearer TOKEN` metadata."""
        if not self.enabled:
            return ANONYMOUS
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if not header or not header.lower().startswith("bearer "):
            raise Unauthenticated("this server needs a token: send metadata 'authorization: Bearer <token>'")
        digest = hashlib.sha256(header[7:].strip().encode()).digest()
        found = None
        for stored, principal in self._tokens:  # compare with every one: time does not depend on which matched
            if hmac.compare_digest(stored, digest):
                found = principal
        if found is None:
            raise Unauthenticated("the token is not valid for this server")
        scope = METHOD_SCOPES.get(method, "admin")
        if scope is not None and scope not in found.scopes:
            raise PermissionDenied(f"token {found.name!r} lacks the {scope!r} scope that {method} needs")
        return found


class AuditLog:
    """Who did what, when: one JSON object per line, appended and flushed per entry."""

    def __init__(self, path: str | None):
        self.path = path
        self._lock = threading.Lock()

    def record(self, who: str, action: str, **details) -> None:
        entry = {"time": datetime.now(timezone.utc).isoformat(), "who": who, "action": action, **details}
        line = json.dumps(entry, default=str, sort_keys=True)
        log.info("audit %s", line)
        if self.path:
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()


def local_user() -> str:
    """The operator running a command-line action, for the audit log."""
    try:
        return f"local:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "local:unknown"
