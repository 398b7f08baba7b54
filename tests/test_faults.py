"""Faults injected under load, counting what was acknowledged against what was stored: the store's
disk fills up, turns read-only, PostgreSQL restarts. Acknowledged verdicts: none lost, none
stored twice; the server recovers by itself once the store is back (no restart).

The disk faults use a real size-limited tmpfs mounted for the test (root only: skipped where
mounting is not allowed); the PostgreSQL fault restarts the machine's real server.
Each test prints its figures (sent, acknowledged, stored, lost): `pytest -s tests/test_faults.py`.
"""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from echogate.grpc_api.server import EchogateServer
from echogate_client.client import AsyncClient, RetryPolicy
from tests.conftest import make_settings, transcript

FILLER = "Thank you for waiting. I have checked the order history and the courier's tracking page. " * 8


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs for the store; yields a function that remounts it with other options."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True, capture_output=True)
    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class Ledger:
    """What the client sent and what the server acknowledged."""

    def __init__(self):
        self.sent: set[str] = set()
        self.acknowledged: set[str] = set()
        self.failed_calls = 0

    async def gate(self, client: AsyncClient, ids: list[str]) -> bool:
        self.sent.update(ids)
        try:
            verdicts = await client.gate([transcript(i, "where is my parcel?", f"{FILLER} ({i})") for i in ids])
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
            self.failed_calls += 1
            return False
        assert [v.transcript_id for v in verdicts] == ids
        self.acknowledged.update(ids)
        return True

    def report(self, name: str, stored: list[str]) -> None:
        lost = self.acknowledged - set(stored)
        duplicated = len(stored) - len(set(stored))
        print(f"\n[{name}] sent {len(self.sent)}, acknowledged {len(self.acknowledged)}, stored {len(stored)}, "
              f"lost {len(lost)}, stored twice {duplicated}, failed calls {self.failed_calls}")
        assert not lost and not duplicated
        assert set(stored) <= self.sent


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [i for (i,) in con.execute("SELECT transcript_id FROM records")]


async def _fill_until_failing(client, ledger, prefix: str, limit: int = 400) -> int:
    """Gate batches until calls fail; returns the batch number reached."""
    for n in range(limit):
        if not await ledger.gate(client, [f"{prefix}{n}-{j}" for j in range(10)]):
            return n
    raise AssertionError("the store never failed")


async def _until_recovered(client, ledger, prefix: str, tries: int = 50) -> None:
    for n in range(tries):
        if await ledger.gate(client, [f"{prefix}{n}-{j}" for j in range(10)]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the server did not recover")


async def test_a_full_disk_fails_calls_cleanly_and_recovery_needs_no_restart(tmp_path, small_disk):
    mount, remount = small_disk
    settings = make_settings(tmp_path, corpus={"flush_seconds": 3600})
    settings.store.url = str(mount / "gate.db")
    ledger = Ledger()
    async with EchogateServer(settings) as srv, AsyncClient(srv.address, retry=RetryPolicy(attempts=1)) as client:
        await _fill_until_failing(client, ledger, "full")
        remount("size=64m")
        await _until_recovered(client, ledger, "after")
        # a retry of every call that failed: each is stored now, once
        retried = sorted(ledger.sent - ledger.acknowledged)
        for start in range(0, len(retried), 10):
            assert await ledger.gate(client, retried[start:start + 10])
        assert srv.core.metrics.store_errors._value.get() >= 1
    ledger.report("disk full", stored_ids(mount / "gate.db"))
    assert ledger.acknowledged == ledger.sent


async def test_a_store_that_refuses_writes_fails_calls_cleanly_and_recovers(tmp_path):
    """Read-only: a remount cannot take away a file the server holds open for writing (and root
    ignores file modes), so the store's own connection is switched to read-only (SQLite
    query_only), which fails writes with the same SQLITE_READONLY a read-only file gives."""
    settings = make_settings(tmp_path, corpus={"flush_seconds": 3600})
    ledger = Ledger()
    async with EchogateServer(settings) as srv, AsyncClient(srv.address, retry=RetryPolicy(attempts=1)) as client:
        for n in range(5):
            assert await ledger.gate(client, [f"rw{n}-{j}" for j in range(10)])
        writer = srv.core.store._con
        writer.execute("PRAGMA query_only = ON")
        for n in range(5):
            assert not await ledger.gate(client, [f"ro{n}-{j}" for j in range(10)])
        writer.execute("PRAGMA query_only = OFF")
        await _until_recovered(client, ledger, "back")
    ledger.report("read-only store", stored_ids(Path(settings.store.url)))


async def test_postgresql_restarted_under_load_loses_nothing(tmp_path, postgres_url):
    settings = make_settings(tmp_path)
    settings.store.url = postgres_url
    ledger = Ledger()
    patient = RetryPolicy(attempts=30, initial_backoff_s=0.2, max_backoff_s=1.0)
    run = uuid.uuid4().hex[:6]
    async with EchogateServer(settings) as srv, AsyncClient(srv.address, retry=patient) as client:
        async def load(worker: int) -> None:
            for n in range(60):
                ids = [f"pg{run}-{worker}-{n}-{j}" for j in range(5)]
                assert await ledger.gate(client, ids), "a call failed after all its retries"
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(load(w)) for w in range(3)]
        await asyncio.sleep(1.0)
        restart = await asyncio.to_thread(subprocess.run, ["service", "postgresql", "restart"],
                                          capture_output=True, text=True)
        assert restart.returncode == 0, restart.stderr
        await asyncio.gather(*tasks)
        errors = srv.core.metrics.store_errors._value.get()
    with psycopg.connect(postgres_url) as con:
        stored = [i for (i,) in con.execute("SELECT transcript_id FROM records")]
    ledger.report(f"PostgreSQL restart ({errors:.0f} failed commits, retried)", stored)
    assert ledger.acknowledged == ledger.sent and errors >= 1
