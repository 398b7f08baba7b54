"""Scoring speed without gRPC: the model and repetition statistics on SGD transcripts.

  python bench/bench_model.py [--data ../shared/datasets] [--threads 1]

Reports transcripts/s for batches of 1, 32 and 256 on one thread (per core), best of
--rounds interleaved rounds (a shared VM's slow spells otherwise decide the figure), split into
the ONNX model call alone (bot origin and the repetitiveness head), the repetition
features alone (echogate.repetition.analyse: what repetitiveness adds to the scorer besides
the head's few graph nodes), and the whole Scorer (normalisation, packing, corpus memory,
repetition, model), plus call latency p50/p99.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from echogate import repetition
from echogate.corpus import turn_keys
from echogate.grpc_api.server import tune_gc
from echogate.model import BotOriginModel
from echogate.scoring import Scorer
from echogate.settings import default_model_path
from echogate.text import normalize, pack_turns, role_codes
from echogate.types import Role, Transcript, Turn

ROOT = Path(__file__).resolve().parents[1]


def load(data: Path, n: int) -> list[Transcript]:
    import json

    out = []
    with (data / "sgd.jsonl").open() as fh:
        for i, line in zip(range(n), fh):
            rec = json.loads(line)
            out.append(Transcript(str(i), "bench", tuple(Turn(Role(t["role"]), t["text"]) for t in rec["turns"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measure and batch size, over all rounds")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    transcripts = load(args.data, 4096)
    sizes = [sum(len(t.text.encode()) for t in x.turns) for x in transcripts]
    print(f"SGD sample: {len(transcripts)} transcripts, median {statistics.median(sizes):.0f} bytes")
    model = BotOriginModel(default_model_path(), intra_op_threads=args.threads)
    scorer = Scorer(model)
    tune_gc()  # as `echogate serve` does
    for batch in (1, 32, 256):
        chunks = [transcripts[i : i + batch] for i in range(0, len(transcripts) - batch + 1, batch)]
        packed, rep_inputs = [], []
        for chunk in chunks:
            texts = [normalize(t.text) for x in chunk for t in x.turns]
            roles = [t.role for x in chunk for t in x.turns]
            codes = role_codes(roles)
            packed_turns = pack_turns(texts, model.max_turn_bytes)
            stream, byte_turn = packed_turns.stream, packed_turns.byte_turn
            turn_transcript = np.repeat(np.arange(len(chunk)), [len(x.turns) for x in chunk])
            keys = turn_keys(packed_turns, codes)
            rep = repetition.analyse(packed_turns, codes, turn_transcript, len(chunk), keys)
            packed.append((stream, byte_turn, turn_transcript, np.ones(len(texts), np.float32),
                           np.zeros(len(texts), np.float32), len(chunk), rep.turn, rep.side.astype(np.float32)))
            rep_inputs.append((packed_turns, codes, turn_transcript, len(chunk), keys))

        def repetition_only(i: int) -> None:
            repetition.analyse(*rep_inputs[i % len(rep_inputs)])

        # Rounds interleave the three measures, so a slow spell of a shared VM hits all of them; each
        # reports its best round (the machine's capacity, as timeit advises) and its median round.
        fns = {"model only": lambda i: model.run(*packed[i % len(packed)]),
               "repetition": repetition_only,
               "full scorer": lambda i: scorer.score(chunks[i % len(chunks)])}
        per_transcript: dict[str, list[float]] = {name: [] for name in fns}
        lat: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                spent, done, i = 0.0, 0, 0
                while spent < args.seconds / args.rounds:
                    t0 = time.perf_counter()
                    fn(i)
                    took = time.perf_counter() - t0
                    lat[name].append(took)
                    spent += took
                    done += batch
                    i += 1
                per_transcript[name].append(spent / done)
        for name in fns:
            best, median = min(per_transcript[name]), statistics.median(per_transcript[name])
            print(f"batch {batch:4d} {name:12s}: {1 / best:9.0f} transcripts/s (median round {1 / median:7.0f})  "
                  f"call p50 {np.median(lat[name]) * 1e3:7.3f} ms  p99 {np.quantile(lat[name], 0.99) * 1e3:7.3f} ms")
        rep, full = min(per_transcript["repetition"]), min(per_transcript["full scorer"])
        print(f"batch {batch:4d} repetition adds {rep / (full - rep):.0%} to the rest of the scorer "
              f"({rep * 1e6:.1f} of {full * 1e6:.1f} us per transcript, best rounds)")


if __name__ == "__main__":
    main()
