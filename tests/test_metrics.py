"""/metrics exposes the documented series; a real Prometheus scrapes and queries them."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.v1 import gate_pb2 as pb
from echogate_client.client import AsyncClient
from tests.conftest import make_settings, transcript


async def _traffic(stub):
    await stub.Gate(pb.GateRequest(transcripts=[transcript(f"m{i}", "hi", "How can I help?") for i in range(5)]))
    await stub.Gate(pb.GateRequest(transcripts=[transcript("m0", "hi", "How can I help?")]))  # a retry
    await stub.Score(pb.ScoreRequest(transcripts=[transcript("s", "hi")]))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Gate(pb.GateRequest(transcripts=[transcript("", "no id")]))


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def test_metrics_endpoint_has_red_saturation_and_score_series(server, stub):
    await _traffic(stub)
    text = _scrape(server.metrics_port)
    labels = 'grpc_method="Gate",grpc_service="echogate.v1.QualityGate",grpc_type="unary"'
    assert f'grpc_server_started_total{{{labels}}} 3.0' in text
    assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}} 2.0' in text
    assert f'grpc_server_handled_total{{grpc_code="INVALID_ARGUMENT",{labels}}} 1.0' in text
    assert f"grpc_server_handling_seconds_count{{{labels}}} 3.0" in text
    assert 'echogate_transcripts_total{mode="gate"} 6.0' in text
    assert "echogate_duplicates_total 1.0" in text
    assert "echogate_bot_origin_score_count 5.0" in text
    assert "echogate_repetitiveness_score_count 5.0" in text
    assert 'source="test"' in text and "echogate_decisions_total{" in text
    for name in ("echogate_model_batch_transcripts_bucket", "echogate_model_inference_seconds_bucket",
                 "echogate_scoring_queue_transcripts", "echogate_store_commit_seconds_bucket",
                 "echogate_store_commit_records_bucket", "echogate_build_info", "echogate_model_info",
                 "echogate_reasons_total"):
        assert name in text, name
    assert '"m0"' not in text and '"m1"' not in text  # never transcript ids as label values
    # the corpus watch: "How can I help?" was new in m0 and seen before in m1..m4 (the retry counts nothing)
    assert 'echogate_agent_turns_total{seen="true",source="test"} 4.0' in text
    assert 'echogate_agent_turns_total{seen="false",source="test"} 1.0' in text
    assert "echogate_corpus_memory_turns 1.0" in text  # "hi" is too short to be counted
    assert "echogate_corpus_most_repeated_turn_transcripts 5.0" in text


async def test_source_label_cardinality_is_bounded(server, stub):
    server.core.metrics._max_sources = 3
    batch = [transcript(f"c{i}", "hi", source=f"tenant-{i}") for i in range(6)]
    await stub.Gate(pb.GateRequest(transcripts=batch))
    text = _scrape(server.metrics_port)
    assert text.count('echogate_decisions_total{decision=') <= 4
    assert 'source="__other__"' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus binary not installed (.ci/run installs it)")
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@contextmanager
def prometheus(tmp_path, metrics_port: int, rule_files=()):
    """A real Prometheus scraping the server every second; yields its query function."""
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [{"job_name": "echogate", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    port = _free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(path: str, **params) -> dict | list:
        url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)["data"]
    try:
        yield api
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _poll(fn, timeout: float = 60.0):
    """Call fn every second until it returns something truthy (or the time is up); returns the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    return value


@needs_prometheus
async def test_real_prometheus_scrapes_the_server(server, stub, tmp_path):
    await _traffic(stub)
    query = 'sum by (grpc_code) (grpc_server_handled_total{grpc_method="Gate"})'
    with prometheus(tmp_path, server.metrics_port) as api:
        result = await asyncio.to_thread(_poll, lambda: len(r := api("query", query=query)["result"]) >= 2 and r)
        codes = {r["metric"]["grpc_code"]: float(r["value"][1]) for r in result}
        assert codes == {"OK": 2.0, "INVALID_ARGUMENT": 1.0}
        assert api("targets")["activeTargets"][0]["health"] == "up"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of the shipped dashboard, Grafana variables filled in."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "echogate.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "10s").replace("$__range", "1m")
                    .replace("$source", ".*"))
            out.append((f"{panel['title']} [{target['refId']}]", expr))
    return out


@needs_prometheus
async def test_every_dashboard_panel_has_data_and_every_rule_loads(tmp_path):
    """Under a short load, each panel query of deploy/grafana returns series from a real Prometheus,
    and the alert rules of deploy/prometheus load and evaluate without error. Source "beta" goes
    to human review whatever a model scores it, where a reviewer works (the reviews panel needs
    reviews; its transcript scored 0.961 under bot-origin-0.18.0 and 0.972 under 0.19.0, over the
    default block threshold); "acme" has a synthetic budget, and thresholds and a budget loose
    enough that its transcripts are accepted whatever a model scores this canned traffic (the
    accepted-share panels need accepts; the first acme transcript scored 0.48 under
    bot-origin-0.6.0 and 0.59 under 0.7.0)."""
    loose = {"tag_bot_origin": 0.997, "review_bot_origin": 0.998, "block_bot_origin": 0.999,
             "tag_repetitiveness": 0.998, "block_repetitiveness": 0.999, "synthetic_budget_max_share": 0.999}
    settings = make_settings(tmp_path, policy={
        "synthetic_budget": {"max_share": 0.5, "window_seconds": 3600},
        "sources": {"beta": {"tag_bot_origin": 0.0, "review_bot_origin": 0.0, "block_bot_origin": 1.0,
                             "block_repetitiveness": 1.0}, "acme": loose}})
    async with EchogateServer(settings) as server, AsyncClient(server.address) as client:
        await _dashboard_under_load(server, client.stub, client, tmp_path)


async def _dashboard_under_load(server, stub, client, tmp_path):
    stop = asyncio.Event()

    async def load():
        canned = "Thank you for contacting us, your request has been forwarded to the right team."
        n = 0
        while not stop.is_set():
            batch = [transcript(f"load{n}-{i}", "my parcel never arrived, can you check please",
                                canned if i % 2 else f"I am sorry, I will look at order {n}-{i} right now.",
                                source=("acme", "beta")[i % 2]) for i in range(4)]
            await stub.Gate(pb.GateRequest(transcripts=batch))
            await stub.Gate(pb.GateRequest(transcripts=batch[:1]))  # a retry: answered as a duplicate
            for item in await client.list_reviews("reviewer", max_items=2):
                await client.submit_review(item.record.verdict.record_id, "reviewer", pb.LABEL_MACHINE,
                                           pb.DECISION_TAG)
            n += 1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(load())
    try:
        with prometheus(tmp_path, server.metrics_port, [DEPLOY / "prometheus" / "rules" / "echogate.yml"]) as api:
            queries = dashboard_queries()
            assert len(queries) >= 25

            def empty_panels():
                missing = [title for title, expr in queries if not api("query", query=expr)["result"]]
                return missing or None

            still_empty = await asyncio.to_thread(_poll, lambda: empty_panels() is None or None, 90)
            assert still_empty, f"panels without data: {empty_panels()}"

            def rules_ok():
                groups = api("rules")["groups"]
                rules = [r for g in groups for r in g["rules"]]
                return len(rules) >= 17 and all(r["health"] == "ok" for r in rules) and rules
            rules = await asyncio.to_thread(_poll, rules_ok, 30)
            assert rules, api("rules")
            assert {r["name"] for r in rules if r["type"] == "alerting"} >= {
                "EchogateDown", "EchogateHighErrorRatio", "EchogateStoreCommitFailures",
                "EchogateSyntheticShareOverBudget", "EchogateCorpusDiversityFalling", "EchogateReviewQueueAgeing"}
    finally:
        stop.set()
        await task
