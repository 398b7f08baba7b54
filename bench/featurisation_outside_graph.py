"""What the n-gram evidence would cost outside the ONNX graph: the in-graph featurisation against two
ways of taking it out, on the same SGD batches.

  python bench/featurisation_outside_graph.py [--data ../shared/datasets] [--seconds 3]

The shipped graph hashes the bytes, looks the n-grams up and sums them per turn with onnxruntime's
element-wise operators: one pass over the batch per operator, about 300 of them. On a CPU without
AVX-512 the whole scorer then falls under the issue's 10,000 transcripts/s per core
(docs/benchmarks.md). The issue allows the featurisation outside the graph where inside is not
fast, with the preprocessing versioned with the model. Measured here, per batch of 256 SGD
transcripts cut into the scorer's 32 KB session calls (echogate.model.transcript_chunks), model
inputs read as the scorer reads them (echogate.text.model_texts), calls of the three taken in turn
and medians reported (a shared VM's slow spells hit all three alike):

- `graph`: the shipped file's session calls (BotOriginModel.run: hashing, lookups, sums and the
  calibrated outputs);
- `C sums`: a C kernel (below, compiled at run time with the system's `cc`) that hashes every
  n-gram family of the file's HashSpec as echogate.features does and adds up the file's own
  fixed-point weights per turn: everything but the calibration, outside onnxruntime;
- `C hashes + graph sums`: the same kernel writing the n-grams' table indices instead, and a
  five-operator onnxruntime graph (GatherElements on the weight table, Cast, CumSum, the segment
  ends' differences, a sum over families) adding them up per turn: the classifier's lookups stay
  in onnxruntime, only the hashing moves out.

Neither alternative counts the calibrated tail of the graph (per-turn and per-transcript
arithmetic, one more session call per batch). Both are checked first against the NumPy reference
(echogate.features.ngram_hashes over the same weight table): equal per-turn sums, bit for bit.
Results and the decision in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench_model import load
from echogate.explain import weight_table
from echogate.features import (BASE, FUNCTION_WORD_TABLE, MAX_ORDER, SHAPE_CLASSES, WORD_POWERS, WORD_TABLE_SIZE,
                               hash_plans, ngram_hashes)
from echogate.model import BotOriginModel, transcript_chunks
from echogate.settings import default_model_path
from echogate.text import model_texts, normalize_all, pack_turns

ROOT = Path(__file__).resolve().parents[1]

# Plan by plan (hash_plans' order), turn by turn: each byte stream's polynomial hashes over the whole
# batch in vectorisable passes (g2, g4, then the order's own), in uint32 (modulo 2**32, which leaves
# the table-size remainder NumPy's int64 sums leave), then the turn's valid n-grams. mode 0 adds the
# weights per turn into sums; mode 1 writes the indices from index[1] on and each (plan, turn)'s count.
KERNEL = r"""
#include <stdint.h>
#include <stdlib.h>

static int is_letter(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }
static uint64_t letter_code(uint8_t b) { return b >= 'a' ? b : (uint64_t)(b + ('a' - 'A')); }

int64_t ngrams(int mode, const uint8_t *stream, const int64_t *lengths, int64_t R, const int16_t *table,
               uint32_t mask, int n_plans, const int32_t *kinds, const int32_t *orders, const uint32_t *salts,
               const uint32_t *b, const int64_t *word_powers, const uint8_t *classes, const uint8_t *function_words,
               uint64_t word_mask, int64_t *sums, int32_t *index, int64_t *counts) {
    int64_t N = 0, m = 1;
    for (int64_t r = 0; r < R; r++) N += lengths[r];
    uint32_t *y[3], *g2 = calloc(N + 8, 4), *g4 = calloc(N + 8, 4), *gn = calloc(N + 8, 4), *wh = calloc(N + 1, 4);
    int64_t *turn_words = calloc(R + 1, 8);
    for (int s = 0; s < 3; s++) y[s] = calloc(N + 8, 4);
    for (int64_t i = 0; i < N; i++) y[0][i] = stream[i], y[1][i] = y[2][i] = classes[stream[i]];
    int64_t start = 0, w = 0;
    for (int64_t r = 0; r < R; r++) {  /* words within the turn: hashes, and the function-word skeleton */
        int64_t end = start + lengths[r];
        turn_words[r] = w;
        for (int64_t i = start; i < end;) {
            if (!is_letter(stream[i])) { i++; continue; }
            int64_t j = i;
            uint64_t h = 0;
            for (; j < end && is_letter(stream[j]); j++)  /* a word's first 14 letters, WORD_POWERS[14] = 0 */
                h += letter_code(stream[j]) * (uint64_t)word_powers[j - i < 14 ? j - i : 14];
            wh[w++] = (uint32_t)(h & word_mask);
            if (function_words[h & word_mask]) for (int64_t k = i; k < j; k++) y[2][k] = stream[k];
            i = j;
        }
        start = end;
    }
    turn_words[R] = w;
    int last_kind = -1;
    for (int p = 0; p < n_plans; p++) {
        int n = orders[p], kind = kinds[p];
        uint32_t salt = salts[p];
        const uint32_t *g = NULL;
        if (kind < 3) {
            const uint32_t *x = y[kind];
            if (kind != last_kind) {
                for (int64_t i = 0; i < N; i++) g2[i] = x[i] + b[1] * x[i + 1];
                for (int64_t i = 0; i < N; i++) g4[i] = g2[i] + b[2] * g2[i + 2];
                last_kind = kind;
            }
            if (n == 1) g = x;
            else if (n == 2) g = g2;
            else if (n == 4) g = g4;
            else {
                if (n == 3) for (int64_t i = 0; i < N; i++) gn[i] = g2[i] + b[2] * x[i + 2];
                else if (n == 5) for (int64_t i = 0; i < N; i++) gn[i] = g4[i] + b[4] * x[i + 4];
                else if (n == 6) for (int64_t i = 0; i < N; i++) gn[i] = g4[i] + b[4] * g2[i + 4];
                else for (int64_t i = 0; i < N; i++) gn[i] = g4[i] + b[4] * (g2[i + 4] + b[2] * x[i + 6]);
                g = gn;
            }
        }
        start = 0;
        for (int64_t r = 0; r < R; r++) {
            int64_t total = 0, first = m;
            if (kind == 3) {
                for (int64_t k = turn_words[r]; k + n <= turn_words[r + 1]; k++) {
                    uint32_t h = (salt + wh[k] * b[1] + (n == 2 ? wh[k + 1] * b[2] : 0)) & mask;
                    if (mode) index[m++] = (int32_t)h; else total += table[h];
                }
            } else {
                for (int64_t i = start; i + n <= start + lengths[r]; i++) {
                    uint32_t h = (g[i] + salt) & mask;
                    if (mode) index[m++] = (int32_t)h; else total += table[h];
                }
            }
            if (mode) counts[(int64_t)p * R + r] = m - first; else sums[r] += total;
            start += lengths[r];
        }
    }
    for (int s = 0; s < 3; s++) free(y[s]);
    free(g2); free(g4); free(gn); free(wh); free(turn_words);
    return m - 1;
}
"""


def ptr(array: np.ndarray) -> ctypes.c_void_p:
    return array.ctypes.data_as(ctypes.c_void_p)


def compile_kernel(workdir: Path) -> ctypes.CDLL:
    (workdir / "ngrams.c").write_text(KERNEL)
    subprocess.run(["cc", "-O3", "-march=native", "-shared", "-fPIC", "-o", str(workdir / "ngrams.so"),
                    str(workdir / "ngrams.c")], check=True)
    lib = ctypes.CDLL(str(workdir / "ngrams.so"))
    lib.ngrams.restype = ctypes.c_int64
    return lib


def sum_graph(table: np.ndarray, n_plans: int) -> ort.InferenceSession:
    """Per-turn sums of looked-up weights: `index` [M + 1] (index 0 points at a zero entry appended to
    the table, so the CumSum is the prefix sum itself), `bounds` [P * R + 1] the (plan, turn) segments'
    ends in it; the output [R] sums the plans."""
    nodes = [
        helper.make_node("GatherElements", ["table", "index"], ["w16"], axis=0),
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.INT64),
        helper.make_node("CumSum", ["w", "axis0"], ["prefix"]),
        helper.make_node("GatherElements", ["prefix", "bounds"], ["at"], axis=0),
        helper.make_node("Slice", ["at", "one", "end"], ["hi"]),
        helper.make_node("Slice", ["at", "zero", "minus_one"], ["lo"]),
        helper.make_node("Sub", ["hi", "lo"], ["segments"]),
        helper.make_node("Reshape", ["segments", "plans_by_turn"], ["grid"]),
        helper.make_node("ReduceSum", ["grid", "zero"], ["sums"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.append(table, np.int16(0)), "table"),
             numpy_helper.from_array(np.array(0, np.int64), "axis0"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
             numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end"),
             numpy_helper.from_array(np.array([n_plans, -1], np.int64), "plans_by_turn")]
    graph = helper.make_graph(nodes, "ngram_sums", [
        helper.make_tensor_value_info("index", TensorProto.INT32, ["M"]),
        helper.make_tensor_value_info("bounds", TensorProto.INT64, ["S"])],
        [helper.make_tensor_value_info("sums", TensorProto.INT64, ["R"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measure")
    args = parser.parse_args()
    model = BotOriginModel(default_model_path())
    spec = model.explainer.spec  # the file's hashing, read from its metadata as the scorer reads it
    table = np.ascontiguousarray(weight_table(model.path.read_bytes()), np.int16)  # its fixed-point weights
    plans = hash_plans(spec)
    kinds = np.array([int(k) for k, _, _ in plans], np.int32)
    orders = np.array([n for _, n, _ in plans], np.int32)
    salts = np.array([s % 2**32 for _, _, s in plans], np.uint32)
    powers = np.array([pow(BASE, k, spec.table_size) for k in range(MAX_ORDER + 1)], np.uint32)
    word_powers = np.ascontiguousarray(WORD_POWERS, np.int64)
    classes = np.ascontiguousarray(SHAPE_CLASSES, np.uint8)
    function_words = FUNCTION_WORD_TABLE.astype(np.uint8)

    transcripts = load(args.data, 4096)
    batches = []
    for i in range(0, len(transcripts), 256):
        chunk = transcripts[i : i + 256]
        packed = pack_turns(model_texts(normalize_all([t.text for x in chunk for t in x.turns])), model.max_turn_bytes)
        turn_transcript = np.repeat(np.arange(len(chunk), dtype=np.int64), [len(x.turns) for x in chunk])
        batches.append((packed, turn_transcript, len(chunk)))
    total_bytes = sum(p.stream.shape[0] for p, _, _ in batches)
    print(f"sgd.jsonl: {len(transcripts)} transcripts in batches of 256, {total_bytes / len(transcripts):.0f} "
          f"model bytes a transcript; {len(plans)} n-gram families {[(k.name.lower(), n) for k, n, _ in plans]}")

    with tempfile.TemporaryDirectory() as tmp:
        lib = compile_kernel(Path(tmp))

        def kernel(mode: int, stream: np.ndarray, lengths: np.ndarray):
            r = lengths.size
            sums = np.zeros(r, np.int64)
            index = np.empty(len(plans) * stream.shape[0] + 1, np.int32) if mode else np.empty(1, np.int32)
            counts = np.zeros(len(plans) * r, np.int64)
            m = lib.ngrams(mode, ptr(stream), ptr(lengths), ctypes.c_int64(r), ptr(table),
                           ctypes.c_uint32(spec.table_size - 1), len(plans), ptr(kinds), ptr(orders), ptr(salts),
                           ptr(powers), ptr(word_powers), ptr(classes), ptr(function_words),
                           ctypes.c_uint64(WORD_TABLE_SIZE - 1), ptr(sums), ptr(index), ptr(counts))
            if mode:
                index[0] = spec.table_size  # the zero entry sum_graph appends
                return index[: m + 1], np.concatenate([[0], np.cumsum(counts)])
            return sums

        summing = sum_graph(table, len(plans))

        def chunks(packed, turn_transcript, count):
            """The batch's session calls as BotOriginModel.run cuts them: (stream, lengths) each."""
            ends = transcript_chunks(packed.lengths, turn_transcript, count, model.chunk_bytes)
            turn_end = np.concatenate([[0], np.cumsum(packed.lengths)])
            r0 = 0
            for t1 in ends:
                r1 = int(np.searchsorted(turn_transcript, t1))
                yield packed.stream[turn_end[r0] : turn_end[r1]], packed.lengths[r0:r1]
                r0 = r1

        def c_sums(batch):
            return np.concatenate([kernel(0, s, n) for s, n in chunks(*batch)])

        def hybrid(batch):
            out = []
            for s, n in chunks(*batch):
                index, bounds = kernel(1, s, n)
                out.append(summing.run(None, {"index": index, "bounds": bounds})[0])
            return np.concatenate(out)

        def graph(batch):
            packed, turn_transcript, count = batch
            r = packed.lengths.size
            return model.run(packed.stream, packed.lengths, turn_transcript, np.ones(r, np.float32),
                             np.zeros(r, np.float32), count, np.zeros((r, 4), np.float32), np.ones(r, np.float32))

        packed = batches[0][0]
        hashes, turn = ngram_hashes(packed.stream, packed.byte_turn, spec)
        reference = np.bincount(turn, weights=table[hashes].astype(np.float64), minlength=packed.lengths.size)
        for name, fn in (("C sums", c_sums), ("C hashes + graph sums", hybrid)):
            if not np.array_equal(fn(batches[0]), reference.astype(np.int64)):
                raise SystemExit(f"{name}: per-turn sums differ from echogate.features' reference")
        print("per-turn sums of both alternatives equal the NumPy reference's on the first batch")

        fns = {"graph": graph, "C sums": c_sums, "C hashes + graph sums": hybrid}
        times: dict[str, list[float]] = {name: [] for name in fns}
        end, i = time.perf_counter() + len(fns) * args.seconds, 0
        while time.perf_counter() < end:
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(batches[i % len(batches)])
                times[name].append(time.perf_counter() - t0)
            i += 1
        per_byte = total_bytes / len(batches)
        for name, values in times.items():
            median = float(np.median(values))
            print(f"{name:22s}: {median * 1e6 / 256:6.1f} us a transcript, {median * 1e9 / per_byte:5.1f} ns a byte, "
                  f"{256 / median:8.0f} transcripts/s")


if __name__ == "__main__":
    main()
