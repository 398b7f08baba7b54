"""Turn a batch of transcripts into scores: one ONNX call for the whole batch.

This is the hot path. Per batch: normalise each turn once, pack all turns into one byte
stream, run the model once, then compute repetition statistics. It runs on an executor
thread (see echogate.batcher), never on the event loop.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echogate.model import BotOriginModel
from echogate.repetition import transcript_repetitiveness, turn_repetitiveness
from echogate.text import content_sha256, normalize, pack_turns
from echogate.types import Scores, Transcript, TurnScore


@dataclass(frozen=True)
class ScoredTranscript:
    scores: Scores
    content_sha256: str
    turn_evidence: tuple[float, ...]  # n-grams each turn contributed to the model


class Scorer:
    def __init__(self, model: BotOriginModel):
        self.model = model

    @property
    def model_version(self) -> str:
        return self.model.version

    def score(self, transcripts: Sequence[Transcript]) -> list[ScoredTranscript]:
        roles = [[turn.role.value for turn in t.turns] for t in transcripts]
        texts = [[normalize(turn.text) for turn in t.turns] for t in transcripts]
        stream, byte_turn = pack_turns([s for ts in texts for s in ts], self.model.max_turn_bytes)
        turn_counts = [len(ts) for ts in texts]
        weights = self.model.role_weights
        out = self.model.run(
            stream=stream,
            byte_turn=byte_turn,
            turn_transcript=np.repeat(np.arange(len(transcripts), dtype=np.int64), turn_counts),
            turn_weight=np.array([weights.get(r, 0.0) for rs in roles for r in rs], np.float32),
            transcript_count=len(transcripts),
        )
        turn_probs = out.turn_bot_origin.tolist()
        evidence = out.turn_ngrams.tolist()
        results, offset = [], 0
        for i, (rs, ts) in enumerate(zip(roles, texts)):
            n = len(ts)
            rep = turn_repetitiveness(rs, ts)
            scores = Scores(
                bot_origin=float(out.transcript_bot_origin[i]),
                repetitiveness=transcript_repetitiveness(rs, rep),
                turns=tuple(TurnScore(p, r) for p, r in zip(turn_probs[offset : offset + n], rep)),
            )
            results.append(ScoredTranscript(scores, content_sha256(rs, ts, normalized=True),
                                            tuple(evidence[offset : offset + n])))
            offset += n
        return results
