"""/metrics exposes the documented series; a real Prometheus scrapes and queries them."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest

from echogate.v1 import gate_pb2 as pb
from tests.conftest import transcript


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


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus binary not installed (.ci/run installs it)")
async def test_real_prometheus_scrapes_the_server(server, stub, tmp_path):
    await _traffic(stub)
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "echogate",
                            "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]}],
    }))
    port = _free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = 'sum by (grpc_code) (grpc_server_handled_total{grpc_method="Gate"})'
    try:
        deadline = time.monotonic() + 60
        result = []
        while time.monotonic() < deadline and len(result) < 2:
            time.sleep(1)
            try:
                url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    result = json.load(resp)["data"]["result"]
            except OSError:
                continue
        codes = {r["metric"]["grpc_code"]: float(r["value"][1]) for r in result}
        assert codes == {"OK": 2.0, "INVALID_ARGUMENT": 1.0}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        assert targets[0]["health"] == "up"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
