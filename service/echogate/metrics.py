"""Prometheus metrics, one registry per server (so several servers can run in one process).

gRPC metrics use the go-grpc-prometheus names so existing dashboards work. Labels are
bounded: method, code, decision, source (platform names, capped by `max_sources`) and
reason code; never transcript ids or free text.
"""
from __future__ import annotations

import platform
import threading
import time
from datetime import datetime, timezone
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily

import echogate
from echogate.types import Transcript, Verdict

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))
OTHER_SOURCE = "__other__"


class Metrics:
    def __init__(self, max_sources: int = 200):
        r = self.registry = CollectorRegistry()
        self._max_sources = max_sources
        self._sources: set[str] = set()
        self._lock = threading.Lock()
        g = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", g, registry=r)
        self.handled = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                               (*g, "grpc_code"), registry=r)
        self.handling = Histogram("grpc_server_handling_seconds", "Time to handle an RPC, to its last reply.",
                                  g, buckets=_LATENCY_BUCKETS, registry=r)
        self.msg_received = Counter("grpc_server_msg_received_total", "Stream messages received.", g, registry=r)
        self.msg_sent = Counter("grpc_server_msg_sent_total", "Stream messages sent.", g, registry=r)

        self.batch_size = Histogram("echogate_model_batch_transcripts", "Transcripts per model call.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=r)
        self.inference = Histogram("echogate_model_inference_seconds", "Wall time of one batched scoring call.",
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("echogate_scoring_queue_transcripts", "Transcripts waiting for a model call.",
                                 registry=r)
        self.queue_capacity = Gauge("echogate_scoring_queue_capacity_transcripts",
                                    "Queue size past which requests get RESOURCE_EXHAUSTED.", registry=r)
        self.queue_wait = Histogram("echogate_scoring_queue_wait_seconds",
                                    "Time a request waited in the scoring queue for a model call.",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.workers = Gauge("echogate_inference_workers", "Model calls that can run at once.", registry=r)
        self.workers_busy = Gauge("echogate_inference_workers_busy", "Model calls running now.", registry=r)
        self.transcripts = Counter("echogate_transcripts_total", "Transcripts scored, by RPC kind.", ("mode",),
                                   registry=r)
        self.decisions = Counter("echogate_decisions_total", "Verdicts by decision and source (gated only).",
                                 ("decision", "source"), registry=r)
        self.reasons = Counter("echogate_reasons_total", "Reason codes on gated verdicts, by source.",
                               ("reason", "source"), registry=r)
        self.expected_machine = Counter(
            "echogate_expected_machine_transcripts_total", "Sum of bot-origin probabilities of gated verdicts: the "
            "expected number of machine-written transcripts. Divided by echogate_decisions_total it is the "
            "synthetic share, e.g. of what was accepted.", ("decision", "source"), registry=r)
        self.duplicates = Counter("echogate_duplicates_total", "Gated transcripts already recorded (retries).",
                                  registry=r)
        self.bot_origin = Histogram("echogate_bot_origin_score", "Transcript bot-origin probability (gated).",
                                    buckets=_SCORE_BUCKETS, registry=r)
        self.repetitiveness = Histogram("echogate_repetitiveness_score", "Transcript repetitiveness (gated).",
                                        buckets=_SCORE_BUCKETS, registry=r)
        self.synthetic_share = Gauge(
            "echogate_synthetic_share", "Real-data floor: expected machine-written share of the transcripts accepted "
            "from a source over its budget window.", ("source",), registry=r)
        self.synthetic_budget = Gauge("echogate_synthetic_budget_max_share",
                                      "Real-data floor: the share a source's accepted transcripts may not exceed.",
                                      ("source",), registry=r)
        self.agent_turns = Counter(
            "echogate_agent_turns_total", "Agent turns of gated transcripts, by source and by whether an earlier "
            "transcript had the same turn (seen=true): their ratio is the corpus near-duplicate share.",
            ("source", "seen"), registry=r)
        self.corpus_keys = Gauge("echogate_corpus_memory_turns", "Distinct turns held by the corpus memory.",
                                 registry=r)
        self.most_repeated = Gauge("echogate_corpus_most_repeated_turn_transcripts",
                                   "Earlier transcripts that had the most repeated turn held by the corpus memory.",
                                   registry=r)
        self.store_commit = Histogram("echogate_store_commit_seconds", "Time of one group commit.",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.store_commit_records = Histogram("echogate_store_commit_records", "Records per group commit.",
                                              buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=r)
        self.store_errors = Counter("echogate_store_commit_errors_total", "Failed group commits.", registry=r)
        self.store_queue = Gauge("echogate_store_queue_groups", "Verdict groups waiting for the store writer.",
                                 registry=r)
        self.review_items = Gauge("echogate_review_queue_items", "REVIEW verdicts waiting for a reviewer's judgement.",
                                  registry=r)
        self.review_oldest = Gauge("echogate_review_queue_oldest_age_seconds",
                                   "Age of the oldest unreviewed item (0 when the queue is empty).", registry=r)
        self.reviews = Counter("echogate_reviews_total", "Reviews submitted, by label and final decision.",
                               ("label", "decision"), registry=r)
        self.build = Info("echogate_build", "Server build.", registry=r)
        self.model = Info("echogate_model", "Loaded model and policy.", registry=r)
        self.build.info({"version": echogate.__version__, "python": platform.python_version()})
        self._http = None

    def source_label(self, source: str) -> str:
        """Caps label cardinality: sources past `max_sources` share one label value."""
        if source in self._sources:
            return source
        with self._lock:
            if len(self._sources) < self._max_sources:
                self._sources.add(source)
                return source
        return OTHER_SOURCE

    def set_model(self, model_version: str, policy_version: str) -> None:
        self.model.info({"model_version": model_version, "policy_version": policy_version})

    def watch_diversity(self, distinct_3: Callable[[], dict[str, float]]) -> None:
        """Report corpus diversity per source (echogate.diversity), computed when scraped."""

        class Diversity:
            def collect(self) -> Iterator[GaugeMetricFamily]:
                family = GaugeMetricFamily(
                    "echogate_corpus_distinct_3", "Distinct word trigrams over trigrams among the agent side's most "
                    "recent trigrams, per source (corpus.diversity_window of them): falls as bots settle into "
                    "templates.", labels=["source"])
                for source, value in sorted(distinct_3().items()):
                    family.add_metric([source], value)
                yield family

        self.registry.register(Diversity())

    def watch_review_queue(self, stats, max_age_s: float = 5.0) -> None:
        """Report the review queue from `stats()` -> (items, oldest queued_at), read at most every
        `max_age_s` seconds however often Prometheus scrapes."""
        cache = {"at": 0.0, "value": (0, None)}

        def read():
            if time.monotonic() - cache["at"] > max_age_s:
                try:
                    cache["value"] = stats()
                except Exception:  # noqa: BLE001 - a store hiccup must not break the scrape
                    pass
                cache["at"] = time.monotonic()
            return cache["value"]

        def age() -> float:
            oldest = read()[1]
            return (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0.0
        self.review_items.set_function(lambda: read()[0])
        self.review_oldest.set_function(age)

    def set_synthetic_share(self, source: str, share: float, max_share: float | None) -> None:
        label = self.source_label(source or "default")
        self.synthetic_share.labels(label).set(share)
        if max_share is not None:
            self.synthetic_budget.labels(label).set(max_share)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def observe_commit(self, records: int, seconds: float, ok: bool) -> None:
        if ok:
            self.store_commit.observe(seconds)
            self.store_commit_records.observe(records)
        else:
            self.store_errors.inc()

    def observe_gated(self, transcripts: Iterable[Transcript], verdicts: Iterable[Verdict]) -> None:
        for t, v in zip(transcripts, verdicts):
            if v.duplicate:
                self.duplicates.inc()
                continue
            source = self.source_label(v.source or "default")
            self.decisions.labels(v.decision.value, source).inc()
            self.expected_machine.labels(v.decision.value, source).inc(v.scores.bot_origin)
            for reason in v.reasons:
                self.reasons.labels(reason.split(":", 1)[0], source).inc()
            self.bot_origin.observe(v.scores.bot_origin)
            self.repetitiveness.observe(v.scores.repetitiveness)
            agent = [score.seen_before > 0 for turn, score in zip(t.turns, v.scores.turns) if turn.role == "agent"]
            if agent:
                seen = sum(agent)
                self.agent_turns.labels(source, "true").inc(seen)
                self.agent_turns.labels(source, "false").inc(len(agent) - seen)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; returns the bound port (port 0 picks a free one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
