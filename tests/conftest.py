"""Shared fixtures: a real server on a free port with a fresh embedded store."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.settings import Settings
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc

DATASETS = Path(os.environ.get("ECHOGATE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")


# The real PostgreSQL server every machine runs (CI included); each test gets its own schema.
POSTGRES = os.environ.get("ECHOGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url():
    """URL of a fresh, empty schema in the test database; dropped after the test."""
    schema = f"echogate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Each backend in turn: the embedded file and the real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("postgres_url")


def make_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(host="127.0.0.1", port=0, metrics_port=0, store={"url": str(tmp_path / "gate.db")},
                    grace_seconds=1.0, **overrides)


@contextmanager
def server_in_thread(settings: Settings) -> Iterator[str]:
    """A real server on its own event loop thread, for blocking clients; yields its address."""
    ready, done = threading.Event(), threading.Event()
    address = {}

    def run():
        async def main():
            async with EchogateServer(settings) as srv:
                address["a"] = srv.address
                ready.set()
                while not done.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "server did not start"
    try:
        yield address["a"]
    finally:
        done.set()
        thread.join(30)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def server(settings):
    async with EchogateServer(settings) as srv:
        yield srv


@pytest.fixture
async def stub(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield gate_pb2_grpc.QualityGateStub(channel)


def transcript(tid: str, *texts: str, source: str = "test", roles=None, **kw) -> pb.Transcript:
    """A transcript alternating customer/agent turns unless roles are given."""
    roles = roles or [pb.ROLE_CUSTOMER if i % 2 == 0 else pb.ROLE_AGENT for i in range(len(texts))]
    return pb.Transcript(id=tid, source=source, turns=[pb.Turn(role=r, text=t) for r, t in zip(roles, texts)], **kw)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`echogate ARGS...` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "echogate_client.cli", *args], capture_output=True, text=True,
                          timeout=120, input=stdin)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as jq, JavaScript and most other readers do."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)
