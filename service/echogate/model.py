"""The shipped ONNX bot-origin model: loading, metadata checks, batched inference.

`InferenceSession.run` releases the GIL and is safe to call from several threads, so
the batcher runs it on a small thread pool, never on the event loop.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from echogate.explain import PhraseExplainer
from echogate.repetition import TURN_FEATURES
from echogate.text import NORMALIZATION_VERSION
from echogate.types import ROLE_CODES


# Bytes per session call (see BotOriginModel.run); picked with bench/bench_model.py --chunk-bytes.
CHUNK_BYTES = 1 << 15


# What BotOriginModel.run feeds the graph (echogate.training.graph documents each).
MODEL_INPUTS = ("text_bytes", "turn_length", "turn_transcript", "turn_weight", "turn_seen", "transcript_count",
                "turn_repetition", "turn_side")


class ModelLoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelOutputs:
    turn_bot_origin: np.ndarray  # float32 [R]
    transcript_bot_origin: np.ndarray  # float32 [T]
    turn_ngrams: np.ndarray  # float32 [R]: how much evidence each turn carried
    turn_repetitiveness: np.ndarray  # float32 [R]
    transcript_repetitiveness: np.ndarray  # float32 [T]


class BotOriginModel:
    def __init__(self, path: str | Path, intra_op_threads: int = 1, chunk_bytes: int = CHUNK_BYTES):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        model_bytes = path.read_bytes()  # read once: the session and the phrase explainer both need it
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("normalization") != NORMALIZATION_VERSION:
            raise ModelLoadError(f"{path}: model expects text normalisation {meta.get('normalization')!r}, "
                                 f"this build implements {NORMALIZATION_VERSION!r}")
        if meta.get("repetition_features") != ",".join(TURN_FEATURES):
            raise ModelLoadError(f"{path}: model's repetition features {meta.get('repetition_features')!r} are not "
                                 f"this build's {','.join(TURN_FEATURES)!r} (a model from an older release: retrain)")
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != set(MODEL_INPUTS):
            raise ModelLoadError(f"{path}: model inputs {sorted(inputs)} are not this build's {sorted(MODEL_INPUTS)} "
                                 "(a model from another release: retrain)")
        self.path = path
        self.version: str = meta["model_version"]
        self.role_weights: dict[str, float] = json.loads(meta["role_weights"])
        # the same by role code (echogate.text.role_codes); a role outside ROLE_CODES weighs nothing
        self.role_weight_by_code = np.array([self.role_weights.get(r, 0.0) for r in ROLE_CODES] + [0.0], np.float32)
        self.max_turn_bytes = int(meta["max_turn_bytes"])
        self.chunk_bytes = chunk_bytes
        try:
            self.explainer = PhraseExplainer.from_model(model_bytes, meta)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None

    def run(self, stream: np.ndarray, turn_length: np.ndarray, turn_transcript: np.ndarray,
            turn_weight: np.ndarray, turn_seen: np.ndarray, transcript_count: int, turn_repetition: np.ndarray,
            turn_side: np.ndarray) -> ModelOutputs:
        """Score a packed batch (`turn_length`: each turn's bytes in `stream`, int64), in session
        calls of whole transcripts up to `chunk_bytes` each.

        The graph's intermediates are 4 to 8 bytes per byte and n-gram order; past a few tens of KB a
        batch falls out of the core's cache, and one call over 256 SGD transcripts (200 KB)
        scored fewer transcripts a second than calls over 32 of them (bench/bench_model.py).
        Every transcript's score depends on its own turns only, so the parts give the whole."""
        ends = transcript_chunks(turn_length, turn_transcript, transcript_count, self.chunk_bytes)
        turn_end = np.cumsum(turn_length) if len(ends) > 1 else None
        parts, t0, r0, b0 = [], 0, 0, 0
        for t1 in ends:
            r1 = int(np.searchsorted(turn_transcript, t1))
            b1 = int(turn_end[r1 - 1]) if turn_end is not None and r1 > 0 else stream.shape[0]
            parts.append(self.session.run(None, {
                "text_bytes": stream[b0:b1],
                "turn_length": turn_length[r0:r1],
                "turn_transcript": turn_transcript[r0:r1] - t0,
                "turn_weight": turn_weight[r0:r1],
                "turn_seen": turn_seen[r0:r1],
                "transcript_count": np.array([t1 - t0], np.int64),
                "turn_repetition": turn_repetition[r0:r1],
                "turn_side": turn_side[r0:r1],
            }))
            t0, r0, b0 = t1, r1, b1
        if len(parts) == 1:
            return ModelOutputs(*parts[0])
        return ModelOutputs(*(np.concatenate(outputs) for outputs in zip(*parts)))


def transcript_chunks(turn_length: np.ndarray, turn_transcript: np.ndarray, transcript_count: int,
                      chunk_bytes: int) -> list[int]:
    """End indices of consecutive runs of transcripts holding at most `chunk_bytes` bytes each
    (a longer transcript is a run of its own); the last end is `transcript_count`."""
    if transcript_count <= 1 or int(turn_length.sum()) <= chunk_bytes:
        return [transcript_count]
    # bytes up to each transcript's end
    transcript_bytes = np.bincount(turn_transcript, weights=turn_length, minlength=transcript_count)
    transcript_end = np.cumsum(transcript_bytes).astype(np.int64)
    ends, start_bytes = [], 0
    while True:
        t = int(np.searchsorted(transcript_end, start_bytes + chunk_bytes, side="right"))
        t = max(t, (ends[-1] if ends else 0) + 1)
        if t >= transcript_count:
            return ends + [transcript_count]
        ends.append(t)
        start_bytes = int(transcript_end[t - 1])
