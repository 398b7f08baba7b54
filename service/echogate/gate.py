"""The transport-agnostic core: validate, score, decide, record.

The gRPC servicer and the offline `echogate score` command both call this class, so a
transcript gets the same verdict whichever way it arrives.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from echogate import __version__
from echogate.batcher import Batcher
from echogate.budget import SyntheticBudgetWindows
from echogate.corpus import CorpusMemory
from echogate.diversity import CorpusDiversity
from echogate.errors import FailedPrecondition, NotFound
from echogate.metrics import Metrics
from echogate.model import BotOriginModel, ModelLoadError
from echogate.policy import Policy, PolicyError, load_policy_file, without_wording
from echogate.query import CountGroup, Cursor, GroupBy, RecordFilter
from echogate.security import AuditLog
from echogate.scoring import ScoredTranscript, Scorer
from echogate.settings import Settings
from echogate.store import Store, StoreItem
from echogate.types import Decision, Label, Record, ReviewItem, Role, Transcript, Turn, Verdict
from echogate.validation import validate_batch

log = logging.getLogger(__name__)


class GateCore:
    def __init__(self, settings: Settings, metrics: Metrics, store: Store | None):
        self.settings = settings
        self.metrics = metrics
        memory = CorpusMemory(capacity=settings.corpus.capacity, shared=store is not None and store.shared_corpus)
        if store is not None:
            memory.load(store.load_corpus())
        diversity = CorpusDiversity(settings.corpus.diversity_window, metrics.source_label)
        self.policy = Policy(load_policy_file(settings.policy_file) if settings.policy_file else settings.policy)
        self.scorer = Scorer(BotOriginModel(settings.model_path, settings.batching.intra_op_threads), memory,
                             diversity, explain_above=self.policy.quote_wording_from)
        self.store = store
        self.budget = SyntheticBudgetWindows(on_share=self._report_share)
        self.audit = AuditLog(settings.security.audit_log)
        if store is not None:
            self._load_budget()
        b = settings.batching
        self.batcher: Batcher[Transcript, ScoredTranscript] = Batcher(
            self.scorer.score, max_batch=b.max_batch_transcripts, max_queue=b.max_queue_transcripts,
            workers=b.inference_threads, on_batch=metrics.observe_batch, on_queue=metrics.queue_depth.set,
            on_wait=metrics.queue_wait.observe, on_busy=metrics.workers_busy.set)
        metrics.queue_capacity.set(b.max_queue_transcripts)
        metrics.workers.set(b.inference_threads)
        if store is not None:
            store.set_commit_observer(metrics.observe_commit)
            metrics.store_queue.set_function(store.queued)
            metrics.watch_review_queue(store.review_stats)
        metrics.set_model(self.model_version, self.policy.version)
        metrics.corpus_keys.set_function(lambda: len(memory))
        metrics.most_repeated.set_function(lambda: memory.most_repeated)
        metrics.watch_diversity(diversity.distinct_3)
        self._stop_flushing = threading.Event()
        self._flusher = None
        if store is not None:
            self._flusher = threading.Thread(target=self._flush_corpus_loop, name="echogate-corpus-flush", daemon=True)
            self._flusher.start()

    @property
    def model_version(self) -> str:
        return self.scorer.model_version

    def _load_budget(self) -> None:
        """Rebuild the real-data floor's windows from the accepted records of the longest window."""
        budget = self.policy.settings.synthetic_budget  # sources override the share, never the window
        if budget is None:
            return
        since = datetime.now(timezone.utc) - timedelta(seconds=budget.window_seconds)
        self.budget.load(self.store.accepted_since(since), self.policy.budget_window)

    def _report_share(self, source: str, share: float) -> None:
        budget = self.policy.for_source(source).synthetic_budget
        self.metrics.set_synthetic_share(source, share, budget.max_share if budget else None)

    async def score(self, transcripts: Sequence[Transcript], mode: str = "score") -> list[Verdict]:
        """Validate, score and decide; stores nothing. In gate mode, ACCEPT verdicts are counted
        in the real-data floor's window at once (gate() takes back those not stored)."""
        validate_batch(transcripts, self.settings.limits)
        scored = await self.batcher.submit(transcripts)
        now = datetime.now(timezone.utc)
        self.metrics.transcripts.labels(mode).inc(len(transcripts))
        policy = self.policy  # one policy for the whole request, even across a reload
        return [self._verdict(policy, t, s, now, reserve=mode == "gate") for t, s in zip(transcripts, scored)]

    async def reload(self) -> tuple[str, str]:
        """Re-read the policy file (if any) and the model file; swap them in only if both load and
        the model scores a transcript. A failure keeps what runs and says why (FailedPrecondition).
        Returns the (model, policy) versions in service afterwards."""
        def load():
            s = self.settings
            policy = Policy(load_policy_file(s.policy_file) if s.policy_file else s.policy)
            model = BotOriginModel(s.model_path, s.batching.intra_op_threads)
            probe = Transcript("reload-check", "", (Turn(Role.CUSTOMER, "hello, my order is late"),
                                                    Turn(Role.AGENT, "Sorry to hear that, let me check.")))
            Scorer(model, CorpusMemory(capacity=16)).score([probe])
            return policy, model
        try:
            policy, model = await asyncio.get_running_loop().run_in_executor(None, load)
        except (PolicyError, ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            log.error("reload failed, keeping model %s and policy %s: %s", self.model_version, self.policy.version, exc)
            raise FailedPrecondition(f"reload failed, still serving model {self.model_version} and policy "
                                     f"{self.policy.version}: {exc}") from None
        self.scorer.model, self.scorer.explain_above, self.policy = model, policy.quote_wording_from, policy
        self.metrics.set_model(model.version, policy.version)
        log.info("reloaded: model %s, policy %s", model.version, policy.version)
        return model.version, policy.version

    async def gate(self, transcripts: Sequence[Transcript]) -> list[Verdict]:
        """Score, decide and commit; returns only after every verdict is durably stored."""
        if self.store is None:
            raise RuntimeError("gate() needs a store")
        received = datetime.now(timezone.utc)
        verdicts = await self.score(transcripts, mode="gate")
        items = [self._retained(StoreItem(t, v, received)) for t, v in zip(transcripts, verdicts)]
        try:
            stored = await asyncio.wrap_future(self.store.put(items))
        except BaseException:
            self._release_budget(verdicts, [True] * len(verdicts))
            raise
        self._release_budget(verdicts, [v.duplicate for v in stored])
        self.metrics.observe_gated(transcripts, stored)
        return stored

    def _release_budget(self, verdicts: Sequence[Verdict], not_stored: Sequence[bool]) -> None:
        """Take back the window counts of ACCEPT verdicts that were not stored (retries, failures)."""
        for v, dropped in zip(verdicts, not_stored):
            if dropped and v.decision is Decision.ACCEPT:
                window = self.policy.budget_window(v.source)
                if window is not None:
                    self.budget.add(v.source, -v.scores.bot_origin, window, count=-1)

    async def get_record(self, record_id: str | None = None, key: tuple[str, str] | None = None) -> Record:
        record = await self._in_store_thread("get", record_id, key)
        if record is None:
            what = f"record_id {record_id!r}" if record_id else f"source {key[0]!r}, id {key[1]!r}"
            raise NotFound(f"no record with {what}")
        return record

    async def query(self, f: RecordFilter, after: Cursor | None = None, limit: int = 0,
                    page_size: int = 100) -> AsyncIterator[tuple[list[Record], Cursor]]:
        """Pages of matching records with the cursor after each page, until `limit` (0: all).
        Each page is read on a worker thread, so a long export never blocks scoring."""
        sent = 0
        while not limit or sent < limit:
            size = min(page_size, limit - sent) if limit else page_size
            page = await self._in_store_thread("query", f, after, size)
            if not page:
                return
            after = Cursor(page[-1].verdict.decided_at, page[-1].verdict.record_id)
            sent += len(page)
            yield page, after
            if len(page) < size:
                return

    async def list_reviews(self, reviewer: str, max_items: int, lease_seconds: float,
                           sources: tuple[str, ...] = ()) -> list[ReviewItem]:
        return await self._in_store_thread("lease_reviews", reviewer, max_items, lease_seconds, sources)

    async def submit_review(self, record_id: str, reviewer: str, label: Label, final: Decision,
                            note: str) -> Record:
        record = await self._in_store_thread("submit_review", record_id, reviewer, label, final, note)
        self.metrics.reviews.labels(str(label), str(final)).inc()
        return record

    async def count(self, f: RecordFilter, group_by: tuple[GroupBy, ...] = ()) -> list[CountGroup]:
        return await self._in_store_thread("count", f, group_by)

    async def _in_store_thread(self, method: str, *args):
        """Call a store method on a worker thread: reads and review transactions never block the
        event loop that serves Gate."""
        if self.store is None:
            raise RuntimeError(f"{method}() needs a store; this core runs without one")
        return await asyncio.get_running_loop().run_in_executor(None, getattr(self.store, method), *args)

    def server_info(self) -> dict:
        return {"server_version": __version__, "model_version": self.model_version,
                "policy_version": self.policy.version, "limits": self.settings.limits,
                "store_backend": self.store.backend if self.store else ""}

    def _verdict(self, policy: Policy, t: Transcript, s: ScoredTranscript, now: datetime, reserve: bool) -> Verdict:
        outcome = policy.decide(t, s, self.budget, reserve=reserve)
        return Verdict(transcript_id=t.id, source=t.source, content_sha256=s.content_sha256, scores=s.scores,
                       decision=outcome.decision, tags=outcome.tags, reasons=outcome.reasons,
                       model_version=s.model_version, policy_version=policy.version, decided_at=now)

    def _retained(self, item: StoreItem) -> StoreItem:
        """What the store keeps of an item: everything, unless the policy keeps no text of blocked
        ones (then no reason quotes their wording either)."""
        if item.verdict.decision is not Decision.BLOCK or self.policy.for_source(
                item.transcript.source).retain_blocked_text:
            return item
        t = item.transcript
        turns = tuple(turn._replace(text="") for turn in t.turns)
        verdict = replace(item.verdict, tags=(*item.verdict.tags, "text_not_retained"),
                          reasons=tuple(map(without_wording, item.verdict.reasons)))
        return StoreItem(replace(t, turns=turns, metadata={}), verdict, item.received_at)

    def _flush_corpus_loop(self) -> None:
        while not self._stop_flushing.wait(self.settings.corpus.flush_seconds):
            self._flush_corpus()

    def _flush_corpus(self) -> None:
        """Write the corpus counts changed since the last flush to the store; a failure keeps them
        for the next try (the counts are a soft signal: verdicts never wait for this)."""
        memory = self.scorer.memory
        if memory.shared:  # several replicas: send our increments, take back everyone's changes
            deltas = memory.drain_deltas()
            try:
                counts, replace_all = self.store.sync_corpus(deltas, memory.capacity)
            except Exception:
                log.exception("could not sync %d corpus increments; will retry", len(deltas))
                memory.requeue_deltas(deltas)
                return
            memory.merge(counts, replace_all)
            return
        changes, full = memory.drain_changes()
        if not changes and not full:
            return
        try:
            self.store.save_corpus(changes, full)
        except Exception:
            log.exception("could not save %d corpus counts; will retry", len(changes))
            self.scorer.memory.requeue(changes, full)

    def close(self) -> None:
        self.batcher.close()
        if self.store is not None:
            self._stop_flushing.set()
            self._flusher.join()
            self._flush_corpus()
            self.store.close()
