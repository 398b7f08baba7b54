"""The store interface and the group-commit writer every backend shares.

A verdict is acknowledged only after its transaction commits. Committing each request
on its own would cap throughput at the disk's sync rate, so one writer thread takes
everything queued while the previous commit ran and writes it in a single transaction
(group commit): each caller still waits for its own commit, but many share one sync.

Idempotency: (source, transcript_id) is unique. Within a group the first occurrence of a
key wins; a key already stored comes back as the stored verdict with duplicate=True.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime

from echogate.errors import Unavailable
from echogate.types import Record, Transcript, Verdict

log = logging.getLogger(__name__)


def record_id_for(source: str, transcript_id: str) -> str:
    """Deterministic record id: every replica derives the same id for the same key."""
    return hashlib.sha256(f"{source}\x1f{transcript_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoreItem:
    transcript: Transcript
    verdict: Verdict
    received_at: datetime


class Store(ABC):
    backend: str

    def __init__(self, max_group: int, on_commit=None):
        self._max_group = max_group
        self._on_commit = on_commit or (lambda items, seconds, ok: None)
        self._queue: queue.Queue[tuple[list[StoreItem], Future] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"echogate-{self.backend}-writer", daemon=True)
        self._writer.start()

    def set_commit_observer(self, on_commit) -> None:
        """on_commit(items: int, seconds: float, ok: bool), called after every group commit."""
        self._on_commit = on_commit

    def put(self, items: list[StoreItem]) -> Future:
        """Queue items for the next group commit; the future resolves to the stored verdicts."""
        future: Future = Future()
        if self._closed:
            future.set_exception(Unavailable("store is closed"))
        else:
            self._queue.put((items, future))
        return future

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            size = len(first[0])
            while size < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this group, then stop
                    break
                group.append(nxt)
                size += len(nxt[0])
            self._commit_group(group)

    def _commit_group(self, group: list[tuple[list[StoreItem], Future]]) -> None:
        # Deduplicate keys inside the group: the first occurrence is the one written.
        first_of: dict[tuple[str, str], int] = {}
        flat: list[StoreItem] = []
        for items, _ in group:
            for item in items:
                key = item.transcript.key
                if key not in first_of:
                    first_of[key] = len(flat)
                    flat.append(item)
        started = time.perf_counter()
        try:
            stored = self._commit(flat)  # key -> (verdict as stored, was already there)
        except Exception as exc:
            log.exception("store commit of %d records failed", len(flat))
            self._on_commit(len(flat), time.perf_counter() - started, False)
            error = Unavailable("the verdict store could not commit; nothing was stored, retry with the same ids")
            error.__cause__ = exc
            for _, fut in group:
                fut.set_exception(error)
            return
        self._on_commit(len(flat), time.perf_counter() - started, True)
        seen: set[tuple[str, str]] = set()
        for items, fut in group:
            out = []
            for item in items:
                key = item.transcript.key
                verdict, existed = stored[key]
                duplicate = existed or key in seen
                seen.add(key)
                out.append(replace(verdict, duplicate=duplicate))
            fut.set_result(out)

    @abstractmethod
    def _commit(self, items: list[StoreItem]) -> dict[tuple[str, str], tuple[Verdict, bool]]:
        """Insert items whose key is new, in one transaction; return every key's stored verdict
        and whether it existed before this commit."""

    @abstractmethod
    def get(self, record_id: str | None = None, key: tuple[str, str] | None = None) -> Record | None:
        """Read one record back, by record id or by (source, transcript_id)."""

    def close(self) -> None:
        """Commit what is queued, then stop the writer and release the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not None:
            self._writer.join()
        self._close()

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def load_corpus(self) -> dict[int, int]:
        """The saved corpus-memory counts (turn key -> transcripts that had it)."""

    @abstractmethod
    def save_corpus(self, changes: dict[int, int], replace_all: bool) -> None:
        """Write changed corpus counts (all of them, dropping the rest, when `replace_all`)."""
