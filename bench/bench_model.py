"""Scoring speed without gRPC: the model and repetition statistics on SGD transcripts.

  python bench/bench_model.py [--data ../shared/datasets] [--file sgd.jsonl] [--threads 1] [--chunk-bytes N]
                              [--explain-above P]

`--file` takes another file of the datasets (its first 4,096 records; a plain-text record is one
agent turn): SGD is the issue's yardstick, but its turns are all ASCII, and a path only other
text takes (a whole-batch NFKC once cost 28 ms per batch of mixed data) never shows on it.

Reports transcripts/s for batches of 1, 32 and 256 on one thread (per core), from median call
times of measures taken in turn (a shared VM's slow spells otherwise decide the figure), split into
the ONNX model call alone (bot origin and the repetitiveness head), the repetition
features alone (echogate.repetition.analyse: what repetitiveness adds to the scorer besides
the head's few graph nodes), the whole Scorer on transcripts new to its corpus memory
(normalisation, packing, corpus memory, repetition, model), and the Scorer with the repetition
features replaced by zeros: the difference of the last two is what repetitiveness adds to
scoring time, cache effects included. Call latency p50/p99 for each. `--chunk-bytes` sets the
bytes per ONNX session call (echogate.model.CHUNK_BYTES by default; a huge value makes each batch
one call).
`--explain-above` is the score from which the scorer quotes machine-like phrases (echogate.explain;
0.5, the default policy's tag threshold, by default; above 1 turns them off): on SGD almost no
transcript reaches it, on cucom_ecommerce.jsonl nearly every one does.
"""
from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice
from pathlib import Path

import numpy as np

from echogate import repetition
from echogate.corpus import CorpusMemory, turn_keys
from echogate.grpc_api import convert
from echogate.grpc_api.server import tune_gc
from echogate.model import CHUNK_BYTES, BotOriginModel
from echogate.offline import OFFLINE_LIMITS
from echogate.scoring import Scorer
from echogate.settings import default_model_path
from echogate.text import model_texts, normalize, pack_turns, role_codes
from echogate.types import Transcript
from echogate_client.records import read_jsonl, transcript_from_record

ROOT = Path(__file__).resolve().parents[1]


def load(data: Path, n: int, name: str = "sgd.jsonl") -> list[Transcript]:
    """The file's first n records, read as `echogate score` reads them."""
    records = islice(read_jsonl(data / name), n)
    messages = [transcript_from_record(rec, line, "bench") for line, rec in records]
    return convert.transcripts_from_pb(messages, 0, OFFLINE_LIMITS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--file", default="sgd.jsonl", help="a file of --data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measure and batch size")
    parser.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES, help="bytes per ONNX session call")
    parser.add_argument("--explain-above", type=float, default=0.5, help="quote phrases from this score up")
    args = parser.parse_args()
    transcripts = load(args.data, 4096, args.file)
    sizes = [sum(len(t.text.encode()) for t in x.turns) for x in transcripts]
    print(f"{args.file}: {len(transcripts)} transcripts, median {statistics.median(sizes):.0f} bytes")
    model = BotOriginModel(default_model_path(), intra_op_threads=args.threads, chunk_bytes=args.chunk_bytes)
    scorer = Scorer(model, explain_above=args.explain_above)
    zeroed = Scorer(model, explain_above=args.explain_above)  # scores without repetition features
    tune_gc()  # as `echogate serve` does
    for batch in (1, 32, 256):
        chunks = [transcripts[i : i + batch] for i in range(0, len(transcripts) - batch + 1, batch)]
        packed, rep_inputs = [], []
        for chunk in chunks:
            texts = [normalize(t.text) for x in chunk for t in x.turns]
            roles = [t.role for x in chunk for t in x.turns]
            codes = role_codes(roles)
            packed_turns = pack_turns(texts, model.max_turn_bytes)
            read = pack_turns(model_texts(texts), model.max_turn_bytes)  # as the scorer feeds the model
            turn_transcript = np.repeat(np.arange(len(chunk)), [len(x.turns) for x in chunk])
            keys = turn_keys(packed_turns, codes)
            rep = repetition.analyse(packed_turns, codes, turn_transcript, len(chunk), keys)
            packed.append((read.stream, read.lengths, turn_transcript, np.ones(len(texts), np.float32),
                           np.zeros(len(texts), np.float32), len(chunk), rep.turn, rep.side.astype(np.float32)))
            rep_inputs.append((packed_turns, codes, turn_transcript, len(chunk), keys))

        def first_seen(s: Scorer):
            """Call i's batch for scorer s, whose corpus memory is emptied each time the calls
            start over the file: every transcript new to it, as in a stream of traffic, so it
            counts their turns (retries it only looks up: 1.6 ms less a batch of 256) and only
            what the file itself repeats reads as seen before."""
            def batch_for(i: int) -> list[Transcript]:
                if i % len(chunks) == 0:
                    s.memory = CorpusMemory()
                return chunks[i % len(chunks)]
            return batch_for

        def without_repetition(batch: list[Transcript]) -> None:
            """The scorer with the repetition features replaced by zeros of the same shape (the
            model still runs its head): what scoring would cost without them, caches included."""
            real = repetition.analyse
            repetition.analyse = _zero_repetition
            try:
                zeroed.score(batch)
            finally:
                repetition.analyse = real

        # The measures take turns call by call, so a slow spell of a shared VM hits them all
        # alike; rates are batch / median call time (a spell moves a mean, hardly a median).
        # Each is (its input for call i, made untimed; what is timed).
        fns = {"model only": (lambda i: packed[i % len(packed)], lambda inputs: model.run(*inputs)),
               "repetition": (lambda i: rep_inputs[i % len(rep_inputs)], lambda inputs: repetition.analyse(*inputs)),
               "full scorer": (first_seen(scorer), scorer.score),
               "no repetition": (first_seen(zeroed), without_repetition)}
        lat: dict[str, list[float]] = {name: [] for name in fns}
        end, i = time.perf_counter() + len(fns) * args.seconds, 0
        while time.perf_counter() < end:
            for name, (make_input, fn) in fns.items():
                inputs = make_input(i)
                t0 = time.perf_counter()
                fn(inputs)
                lat[name].append(time.perf_counter() - t0)
            i += 1
        median = {name: float(np.median(values)) for name, values in lat.items()}
        for name, values in lat.items():
            print(f"batch {batch:4d} {name:13s}: {batch / median[name]:9.0f} transcripts/s  "
                  f"call p50 {median[name] * 1e3:7.3f} ms  p99 {np.quantile(values, 0.99) * 1e3:7.3f} ms")
        full, bare = median["full scorer"], median["no repetition"]
        print(f"batch {batch:4d} repetition adds {full / bare - 1:.0%} to scoring time "
              f"({(full - bare) / batch * 1e6:.1f} of {full / batch * 1e6:.1f} us per transcript)")


def _zero_repetition(packed, codes: np.ndarray, turn_transcript: np.ndarray, n_transcripts: int,
                     keys: np.ndarray) -> repetition.Repetition:
    n_turns = len(codes)
    return repetition.Repetition(np.zeros((n_turns, len(repetition.TURN_FEATURES)), np.float32),
                                 np.zeros((n_transcripts, len(repetition.TRANSCRIPT_STATS))), np.ones(n_turns, bool),
                                 np.zeros(0, np.uint64), np.zeros(0, np.int64))


if __name__ == "__main__":
    main()
