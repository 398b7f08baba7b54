"""Two echogate servers sharing one PostgreSQL: overlapping (source, id) pairs gated concurrently
through both are stored exactly once, and every acknowledged verdict is in the database."""
from __future__ import annotations

import asyncio
import random
from collections import Counter

import psycopg

from echogate.grpc_api.server import EchogateServer
from echogate_client.client import AsyncClient
from tests.conftest import make_settings, transcript


async def test_two_replicas_store_each_pair_once(tmp_path, postgres_url):
    settings = [make_settings(tmp_path / name) for name in ("a", "b")]
    for s in settings:
        s.store.url = postgres_url
    pairs = [(source, f"r{i}") for source in ("acme", "beta") for i in range(150)]
    rng = random.Random(3)
    acknowledged: list = []

    async def send(client: AsyncClient, order: list) -> None:
        for start in range(0, len(order), 16):
            batch = [transcript(tid, "where is my order", f"It ships on day {tid}.", source=source)
                     for source, tid in order[start : start + 16]]
            acknowledged.extend(await client.gate(batch))

    async with EchogateServer(settings[0]) as a, EchogateServer(settings[1]) as b, \
            AsyncClient(a.address) as ca, AsyncClient(b.address) as cb:
        # each replica gets every pair, in its own shuffled order, four calls at a time
        orders = [rng.sample(pairs, len(pairs)) for _ in range(4)]
        await asyncio.gather(*(send(client, order[i::2]) for client, order in
                               zip([ca, cb, ca, cb], orders) for i in range(2)))

    assert len(acknowledged) == 4 * len(pairs)
    fresh = Counter((v.source, v.transcript_id) for v in acknowledged if not v.duplicate)
    assert fresh == Counter({pair: 1 for pair in pairs})  # exactly one call stored each pair
    ids = {}
    for v in acknowledged:
        assert ids.setdefault((v.source, v.transcript_id), v.record_id) == v.record_id
    with psycopg.connect(postgres_url) as con:
        rows = con.execute("SELECT source, transcript_id, record_id FROM records").fetchall()
    assert sorted((s, t) for s, t, _ in rows) == sorted(pairs)
    assert {(s, t): r for s, t, r in rows} == ids
