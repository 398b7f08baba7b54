"""End-to-end benchmark: Score, Gate and GateStream over gRPC against a real server process.

The server runs in its own process (`echogate serve`, embedded SQLite store in a temp
directory) so the load generator does not share its GIL; both share this machine's cores,
as they would in a sidecar deployment. Transcripts are drawn from the shared datasets
(every file, turns or plain text) with fresh ids, so every Gate really stores.

  python bench/bench_gate.py [--data ../shared/datasets] [--seconds 8] [--out results.json]

Reports per (rpc, batch): transcripts/s, call latency p50/p99, server CPU (cores used) and,
at the end, the server's peak RSS. Also an open-loop run: single-transcript Gate at a fixed
200 requests/s, the latency a platform logging one conversation at a time would see.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from echogate.v1 import gate_pb2 as pb
from echogate.v1 import gate_pb2_grpc
from echogate_client.records import read_jsonl, transcript_from_record

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def load_pool(data: Path, size: int, seed: int) -> list[pb.Transcript]:
    rng = random.Random(seed)
    records = []
    for path in sorted(data.glob("*.jsonl")):
        # conversations (records with turns), the traffic the gate exists for
        records += [rec for _, rec in read_jsonl(path) if rec.get("turns") and len(rec["turns"]) > 1]
    rng.shuffle(records)
    return [transcript_from_record(rec, i, "bench") for i, rec in enumerate(records[:size])]


class Server:
    def __init__(self, store_dir: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echogate_client.cli", "serve", "--port", "0", "--metrics-port", "0",
             "--store", f"{store_dir}/bench.db"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        while True:
            line = self.proc.stderr.readline()
            if match := re.search(r"listening on (\S+)", line):
                self.address = match.group(1)
                break
            if not line:
                raise RuntimeError("server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def fresh(pool: list[pb.Transcript], n: int, rng: random.Random) -> list[pb.Transcript]:
    out = []
    for t in rng.sample(pool, n) if n <= len(pool) else rng.choices(pool, k=n):
        c = pb.Transcript()
        c.CopyFrom(t)
        c.id = uuid.uuid4().hex
        out.append(c)
    return out


async def closed_loop(stub, rpc: str, batch: int, concurrency: int, seconds: float, pool, seed: int,
                      cpu_seconds=lambda: 0.0, expected_rate: float = 4000.0):
    """`concurrency` callers, each sending its next request as soon as the last is answered.

    Requests (fresh ids, so every Gate stores) are built before the clock starts: the
    numbers measure the server, not the load generator's protobuf building.
    """
    rng = random.Random(seed)
    make = pb.ScoreRequest if rpc == "Score" else pb.GateRequest
    prepared = [make(transcripts=fresh(pool, batch, rng))
                for _ in range(int(seconds * expected_rate / batch) + 2 * concurrency)]
    latencies: list[float] = []
    done = 0
    deadline = time.perf_counter() + seconds

    def next_request():
        return prepared.pop() if prepared else make(transcripts=fresh(pool, batch, rng))

    async def unary_worker():
        nonlocal done
        method = stub.Score if rpc == "Score" else stub.Gate
        while time.perf_counter() < deadline:
            request = next_request()
            t0 = time.perf_counter()
            await method(request)
            latencies.append(time.perf_counter() - t0)
            done += batch

    async def stream_worker():
        nonlocal done
        call = stub.GateStream()
        while time.perf_counter() < deadline:
            request = next_request()
            t0 = time.perf_counter()
            await call.write(request)
            await call.read()
            latencies.append(time.perf_counter() - t0)
            done += batch
        await call.done_writing()

    worker = stream_worker if rpc == "GateStream" else unary_worker
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return done / elapsed, latencies, (cpu_seconds() - cpu0) / elapsed


async def open_loop(stub, rate: float, seconds: float, pool, seed: int, cpu_seconds=lambda: 0.0):
    rng = random.Random(seed)
    latencies: list[float] = []

    async def one(request):
        t0 = time.perf_counter()
        await stub.Gate(request)
        latencies.append(time.perf_counter() - t0)

    requests = [pb.GateRequest(transcripts=fresh(pool, 1, rng)) for _ in range(int(rate * seconds))]
    tasks = []
    start, cpu0 = time.perf_counter(), cpu_seconds()
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return len(tasks) / elapsed, latencies, (cpu_seconds() - cpu0) / elapsed


def ms(values: list[float], q: float) -> float:
    return float(np.quantile(values, q) * 1000)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pool = load_pool(args.data, 20_000, seed=7)
    sizes = [sum(len(x.text.encode()) for x in t.turns) for t in pool]
    print(f"pool: {len(pool)} transcripts, median {int(np.median(sizes))} bytes, "
          f"median {int(np.median([len(t.turns) for t in pool]))} turns")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(tmp)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = gate_pb2_grpc.QualityGateStub(channel)
                await closed_loop(stub, "Score", 32, 2, 2.0, pool, 0, expected_rate=500)  # warm-up
                # The latency run goes first: after the saturation runs below the server spends
                # seconds writing the corpus counts they changed, which is not the steady state
                # a platform logging one conversation at a time at 200/s would see.
                rate, lat, cores = await open_loop(stub, 200, args.seconds, pool, 99, server.cpu_seconds)
                row = {"rpc": "Gate open-loop 200/s", "batch": 1, "transcripts_per_s": rate,
                       "p50_ms": ms(lat, 0.5), "p99_ms": ms(lat, 0.99), "server_cores": cores}
                results.append(row)
                print(f"Gate, 1 transcript at 200 requests/s: p50 {row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms"
                      f"  server CPU {cores:.2f} cores", flush=True)
                for rpc in ("Score", "Gate", "GateStream"):
                    for batch, concurrency in ((1, 16), (32, 8), (256, 4)):
                        rate, lat, cores = await closed_loop(stub, rpc, batch, concurrency, args.seconds, pool, batch,
                                                             server.cpu_seconds)
                        row = {"rpc": rpc, "batch": batch, "concurrency": concurrency, "transcripts_per_s": rate,
                               "p50_ms": ms(lat, 0.5), "p99_ms": ms(lat, 0.99), "server_cores": cores}
                        results.append(row)
                        print(f"{rpc:10s} batch {batch:4d} x{concurrency:2d}: {rate:8.0f} transcripts/s  "
                              f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                              f"server CPU {cores:.2f} cores", flush=True)
            peak = server.peak_rss_mb()
            print(f"server peak RSS: {peak:.0f} MB")
        finally:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps({"results": results, "server_peak_rss_mb": peak}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
