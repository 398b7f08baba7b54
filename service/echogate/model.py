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

from echogate.repetition import TURN_FEATURES
from echogate.text import NORMALIZATION_VERSION
from echogate.types import ROLE_CODES


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
    def __init__(self, path: str | Path, intra_op_threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("normalization") != NORMALIZATION_VERSION:
            raise ModelLoadError(f"{path}: model expects text normalisation {meta.get('normalization')!r}, "
                                 f"this build implements {NORMALIZATION_VERSION!r}")
        if meta.get("repetition_features") != ",".join(TURN_FEATURES):
            raise ModelLoadError(f"{path}: model's repetition features {meta.get('repetition_features')!r} are not "
                                 f"this build's {','.join(TURN_FEATURES)!r} (a model from an older release: retrain)")
        self.path = path
        self.version: str = meta["model_version"]
        self.role_weights: dict[str, float] = json.loads(meta["role_weights"])
        # the same by role code (echogate.text.role_codes); a role outside ROLE_CODES weighs nothing
        self.role_weight_by_code = np.array([self.role_weights.get(r, 0.0) for r in ROLE_CODES] + [0.0], np.float32)
        self.max_turn_bytes = int(meta["max_turn_bytes"])

    def run(self, stream: np.ndarray, byte_turn: np.ndarray, turn_transcript: np.ndarray,
            turn_weight: np.ndarray, turn_seen: np.ndarray, transcript_count: int, turn_repetition: np.ndarray,
            turn_side: np.ndarray) -> ModelOutputs:
        return ModelOutputs(*self.session.run(None, {
            "text_bytes": stream,
            "byte_turn": byte_turn,
            "turn_transcript": turn_transcript,
            "turn_weight": turn_weight,
            "turn_seen": turn_seen,
            "transcript_count": np.array([transcript_count], np.int64),
            "turn_repetition": turn_repetition,
            "turn_side": turn_side,
        }))
