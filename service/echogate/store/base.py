"""The store interface and the group-commit writer every backend shares.

A verdict is acknowledged only after its transaction commits. Committing each request
on its own would cap throughput at the disk's sync rate, so one writer thread takes
everything queued while the previous commit ran and writes it in a single transaction
(group commit): each caller still waits for its own commit, but many share one sync.

Idempotency: (source, transcript_id) is unique. Within a group the first occurrence of a
key wins; a key already stored comes back as the stored verdict with duplicate=True.

The corpus-memory counts (echogate.corpus) are written by the same writer thread, a chunk
at a time between verdict groups: a second writer would contend for the database's lock,
and a verdict commit must never wait behind a large background write.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime

from echogate.errors import Unavailable
from echogate.query import CountGroup, Cursor, GroupBy, RecordFilter
from echogate.types import Record, Transcript, Verdict

log = logging.getLogger(__name__)


def record_id_for(source: str, transcript_id: str) -> str:
    """Deterministic record id: every replica derives the same id for the same key."""
    return hashlib.sha256(f"{source}\x1f{transcript_id}".encode()).hexdigest()[:32]


CORPUS_CHUNK = 1000  # corpus rows per write between two verdict groups


@dataclass
class _CorpusJob:
    keys: list[int]
    counts: list[int]
    replace_all: bool
    future: Future = field(default_factory=Future)
    done: int = 0  # rows written so far


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
        self._queue: queue.Queue[tuple[list[StoreItem], Future] | _CorpusJob | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"echogate-{self.backend}-writer", daemon=True)
        self._writer.start()

    def queued(self) -> int:
        """Verdict groups and corpus jobs waiting for the writer (store saturation)."""
        return self._queue.qsize()

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

    def save_corpus(self, changes: dict[int, int], replace_all: bool) -> None:
        """Write changed corpus counts (all of them, dropping the rest, when `replace_all`);
        blocks until written. Runs on the writer thread, a chunk between verdict groups."""
        job = _CorpusJob(list(changes), list(changes.values()), replace_all)
        if self._closed:
            raise Unavailable("store is closed")
        self._queue.put(job)
        job.future.result()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if isinstance(first, _CorpusJob):
                self._corpus_step(first)
                continue
            group, deferred = [first], []
            size = len(first[0])
            while size < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this group, then stop
                    break
                if isinstance(nxt, _CorpusJob):
                    deferred.append(nxt)
                    continue
                group.append(nxt)
                size += len(nxt[0])
            self._commit_group(group)
            for job in deferred:
                self._queue.put(job)

    def _corpus_step(self, job: _CorpusJob) -> None:
        """Write the next chunk of a corpus job, then queue the rest behind waiting verdicts."""
        end = job.done + CORPUS_CHUNK
        try:
            self._write_corpus_chunk(job.keys[job.done : end], job.counts[job.done : end],
                                     clear_first=job.replace_all and job.done == 0)
        except Exception as exc:
            job.future.set_exception(exc)
            return
        job.done = end
        if job.done < len(job.keys):
            self._queue.put(job)
        else:
            job.future.set_result(None)

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
        while not self._queue.empty():  # a corpus job re-queued behind the stop: tell its waiter
            job = self._queue.get_nowait()
            if isinstance(job, _CorpusJob):
                job.future.set_exception(Unavailable("store is closed"))
        self._close()

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def query(self, f: RecordFilter, after: Cursor | None = None, limit: int = 100) -> list[Record]:
        """Records matching `f` in (decided_at, record_id) order, starting after the cursor."""

    @abstractmethod
    def count(self, f: RecordFilter, group_by: tuple[GroupBy, ...] = ()) -> list[CountGroup]:
        """How many records match `f`, per group (one group with every field None when ungrouped)."""

    @abstractmethod
    def purge(self, f: RecordFilter) -> list[CountGroup]:
        """Delete the records matching `f` in one transaction; returns what was removed per
        (source, decision)."""

    shared_corpus = False  # True: several replicas share the corpus counts through this store

    def sync_corpus(self, deltas: dict[int, int], capacity: int) -> tuple[dict[int, int], bool]:
        """Shared stores: add this replica's increments, halve the shared counts past `capacity`,
        and return the counts changed since this replica's last sync (all of them, True, after a
        halving)."""
        raise NotImplementedError(f"the {self.backend} store keeps one replica's corpus counts")

    @abstractmethod
    def load_corpus(self) -> dict[int, int]:
        """The saved corpus-memory counts (turn key -> transcripts that had it)."""

    @abstractmethod
    def _write_corpus_chunk(self, keys: list[int], counts: list[int], clear_first: bool) -> None:
        """Upsert corpus counts in one transaction (after deleting all saved ones if `clear_first`)."""
