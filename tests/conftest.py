"""Shared fixtures: a real server on a free port with a fresh embedded store."""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate.settings import Settings
from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc

DATASETS = Path(os.environ.get("ECHOGATE_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")


def make_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(host="127.0.0.1", port=0, metrics_port=0, store={"url": str(tmp_path / "gate.db")},
                    grace_seconds=1.0, **overrides)


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
