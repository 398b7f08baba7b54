"""Turn a batch of transcripts into scores: one ONNX call for the whole batch.

This is the hot path. Per batch: normalise each turn once, pack all turns into one byte
stream, look each turn up in the corpus memory (how often it was seen before), run the
model once, then compute repetition statistics. It runs on an executor
thread (see echogate.batcher), never on the event loop.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from echogate.corpus import CorpusMemory, turn_keys
from echogate.model import BotOriginModel
from echogate import repetition
from echogate.text import content_sha256, normalize, pack_turns
from echogate.types import Scores, Transcript, TurnScore


@dataclass(frozen=True)
class ScoredTranscript:
    scores: Scores
    content_sha256: str
    turn_evidence: tuple[float, ...]  # n-grams each turn contributed to the model
    model_version: str = ""  # the model that scored it (a reload may swap models between batches)


class Scorer:
    def __init__(self, model: BotOriginModel, memory: CorpusMemory | None = None):
        self.model = model
        self.memory = memory if memory is not None else CorpusMemory()

    @property
    def model_version(self) -> str:
        return self.model.version

    def score(self, transcripts: Sequence[Transcript]) -> list[ScoredTranscript]:
        model = self.model  # one model for the whole batch, even if a reload swaps it meanwhile
        roles = [turn.role for t in transcripts for turn in t.turns]
        texts = [normalize(turn.text) for t in transcripts for turn in t.turns]
        counts = [len(t.turns) for t in transcripts]
        turn_transcript = np.repeat(np.arange(len(transcripts), dtype=np.int64), counts)
        stream, byte_turn = pack_turns(texts, model.max_turn_bytes)
        seen = self.memory.observe([f"{t.source}\x1f{t.id}" for t in transcripts],
                                   turn_keys(stream, byte_turn, roles), counts)
        weights = model.role_weights
        out = model.run(
            stream=stream,
            byte_turn=byte_turn,
            turn_transcript=turn_transcript,
            turn_weight=np.array([weights.get(r, 0.0) for r in roles], np.float32),
            turn_seen=np.log1p(seen).astype(np.float32),
            transcript_count=len(transcripts),
        )
        turn_rep = repetition.turn_scores(texts, roles, turn_transcript)
        # one pass over the roles for both agent-side means: repetition and corpus duplicates
        doc_rep, doc_dup = repetition.transcript_scores(np.stack([turn_rep, seen > 0]), roles, turn_transcript,
                                                        len(transcripts)).tolist()
        turn_scores = list(map(TurnScore, out.turn_bot_origin.tolist(), turn_rep.tolist(), seen.tolist()))
        doc_bot = out.transcript_bot_origin.tolist()
        evidence = out.turn_ngrams.tolist()
        results, offset = [], 0
        for i, n in enumerate(counts):
            end = offset + n
            scores = Scores(bot_origin=doc_bot[i], repetitiveness=doc_rep[i], turns=tuple(turn_scores[offset:end]),
                            corpus_duplicate=doc_dup[i])
            results.append(ScoredTranscript(scores, content_sha256(roles[offset:end], texts[offset:end], normalized=True),
                                            tuple(evidence[offset:end]), model.version))
            offset = end
        return results
