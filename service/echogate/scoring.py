"""Turn a batch of transcripts into scores: one ONNX call for the whole batch.

This is the hot path. Per batch: normalise each turn once, pack all turns into one byte
stream, look each turn up in the corpus memory (how often it was seen before), compute the
repetition features (echogate.repetition), then run the model once on the turns as it reads
them (echogate.text.model_texts: digit runs masked): it returns bot origin and repetitiveness
for every turn and transcript. It runs on an executor thread (see
echogate.batcher), never on the event loop.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from echogate import repetition
from echogate.corpus import CorpusMemory, turn_keys
from echogate.diversity import CorpusDiversity
from echogate.explain import as_written
from echogate.model import BotOriginModel, ModelOutputs
from echogate.text import content_sha256_all, model_texts, normalize_all, pack_turns, role_codes
from echogate.types import RepetitionStats, Scores, Transcript, TurnScore


class ScoredTranscript(NamedTuple):
    """One transcript's scores and what the verdict needs beside them; a NamedTuple for the same
    reason as Scores."""

    scores: Scores
    content_sha256: str
    turn_evidence: tuple[float, ...]  # n-grams each turn contributed to the model
    model_version: str = ""  # the model that scored it (a reload may swap models between batches)
    # the most machine-like turn's index and the phrases in it that read as machine-written
    # (echogate.explain); -1 and () for a transcript scored under Scorer.explain_above
    phrase_turn: int = -1
    phrases: tuple[str, ...] = ()


class Scorer:
    def __init__(self, model: BotOriginModel, memory: CorpusMemory | None = None,
                 diversity: CorpusDiversity | None = None, explain_above: float = 0.5):
        self.model = model
        self.memory = memory if memory is not None else CorpusMemory()
        self.diversity = diversity
        # transcripts scored at or over this get phrase evidence (the lowest score a policy flags)
        self.explain_above = explain_above

    @property
    def model_version(self) -> str:
        return self.model.version

    def score(self, transcripts: Sequence[Transcript]) -> list[ScoredTranscript]:
        model = self.model  # one model for the whole batch, even if a reload swaps it meanwhile
        roles = [turn.role for t in transcripts for turn in t.turns]
        codes = role_codes(roles)
        texts = normalize_all([turn.text for t in transcripts for turn in t.turns])
        counts = [len(t.turns) for t in transcripts]
        turn_transcript = np.repeat(np.arange(len(transcripts), dtype=np.int64), counts)
        packed = pack_turns(texts, model.max_turn_bytes)
        keys = turn_keys(packed, codes)
        seen = self.memory.observe([f"{t.source}\x1f{t.id}" for t in transcripts], keys, counts)
        rep = repetition.analyse(packed, codes, turn_transcript, len(transcripts), keys)
        if self.diversity is not None:
            self.diversity.add([t.source for t in transcripts], rep.side_trigrams, rep.side_trigram_transcript)
        read = model_texts(texts)
        model_packed = packed if read is texts else pack_turns(read, model.max_turn_bytes)
        out = model.run(
            stream=model_packed.stream,
            turn_length=model_packed.lengths,
            turn_transcript=turn_transcript,
            turn_weight=model.role_weight_by_code[codes],
            turn_seen=np.log1p(seen).astype(np.float32),
            transcript_count=len(transcripts),
            turn_repetition=rep.turn,
            turn_side=rep.side.astype(np.float32),
        )
        doc_dup = repetition.side_means(seen > 0, rep.side, turn_transcript, len(transcripts)).tolist()
        # tuple.__new__ builds each NamedTuple in C (TurnScore(...) runs a Python-level __new__ per turn)
        turn_scores = list(map(tuple.__new__, repeat(TurnScore), zip(out.turn_bot_origin.tolist(),
                                                                     out.turn_repetitiveness.tolist(), seen.tolist())))
        doc_bot = out.transcript_bot_origin.tolist()
        doc_rep = out.transcript_repetitiveness.tolist()
        stats = [RepetitionStats(*row) for row in rep.transcript.tolist()]
        evidence = out.turn_ngrams.tolist()
        explained = self._explain(model, out, turn_transcript, read, texts)
        hashes = content_sha256_all(roles, texts, counts)
        results, offset = [], 0
        for i, n in enumerate(counts):
            end = offset + n
            scores = Scores(bot_origin=doc_bot[i], repetitiveness=doc_rep[i], turns=tuple(turn_scores[offset:end]),
                            corpus_duplicate=doc_dup[i], repetition=stats[i])
            turn, phrases = explained.get(i, (-1, ()))
            results.append(ScoredTranscript(scores, hashes[i], tuple(evidence[offset:end]), model.version, turn,
                                            phrases))
            offset = end
        return results

    def _explain(self, model: BotOriginModel, out: ModelOutputs, turn_transcript: np.ndarray,
                 read: list[str], texts: list[str]) -> dict[int, tuple[int, tuple[str, ...]]]:
        """{transcript: (its most machine-like turn with evidence, that turn's phrases)} for the
        transcripts scored at or over explain_above, in one pass over those turns. Phrases are
        found in the texts as the model read them (`read`) and quoted as written (`texts`,
        normalised): see explain.as_written."""
        flagged = np.flatnonzero(out.transcript_bot_origin >= self.explain_above)
        if flagged.size == 0:
            return {}
        # per transcript, the turn with evidence and the highest score (turns without n-grams rank last)
        rank = np.where(out.turn_ngrams > 0, out.turn_bot_origin, -1.0)
        order = np.lexsort((-rank, turn_transcript))
        firsts = order[np.minimum(np.searchsorted(turn_transcript[order], flagged), order.size - 1)]
        firsts = firsts[(turn_transcript[firsts] == flagged) & (rank[firsts] >= 0)]
        rows = firsts.tolist()
        phrases = model.explainer.phrases([read[r] for r in rows])
        # a text the model read as written (most) quotes as it is
        phrases = [p if read[r] == texts[r] else tuple(as_written(x, texts[r]) for x in p)
                   for r, p in zip(rows, phrases)]
        starts = np.searchsorted(turn_transcript, turn_transcript[firsts])
        return {int(turn_transcript[r]): (int(r - s), p) for r, s, p in zip(firsts, starts, phrases)}
