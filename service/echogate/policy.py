"""The built-in decision policy: scores and declared origin in, decision with reasons out.

Each rule that fires adds a stable reason code ("code: explanation"); the strictest
decision among the rules wins. Thresholds come from settings (PolicySettings) and the
policy version is stamped on every verdict, so a stored decision can always be traced to
the rule set that made it.
"""
from __future__ import annotations

from dataclasses import dataclass

from echogate.scoring import ScoredTranscript
from echogate.settings import PolicySettings
from echogate.types import DeclaredOrigin, Decision, Transcript

_SEVERITY = {Decision.ACCEPT: 0, Decision.TAG: 1, Decision.REVIEW: 2, Decision.BLOCK: 3}


@dataclass(frozen=True)
class PolicyOutcome:
    decision: Decision
    tags: tuple[str, ...]
    reasons: tuple[str, ...]


class Policy:
    def __init__(self, settings: PolicySettings):
        self.settings = settings
        self.version = settings.version

    def decide(self, transcript: Transcript, scored: ScoredTranscript) -> PolicyOutcome:
        s = self.settings
        bot, rep = scored.scores.bot_origin, scored.scores.repetitiveness
        decision, tags, reasons = Decision.ACCEPT, [], []

        def fire(d: Decision, tag: str | None, reason: str) -> None:
            nonlocal decision
            if _SEVERITY[d] > _SEVERITY[decision]:
                decision = d
            if tag and tag not in tags:
                tags.append(tag)
            reasons.append(reason)

        declared = transcript.declared_origin
        if declared in (DeclaredOrigin.BOT, DeclaredOrigin.SYNTHETIC):
            fire(Decision.TAG, f"declared_{declared.value}",
                 f"declared_{declared.value}: the platform declared this transcript {declared.value}-written")
        if bot >= s.tag_bot_origin:
            evidence = _top_turns(transcript, scored)
            if bot >= s.block_bot_origin:
                fire(Decision.BLOCK, "likely_machine", f"bot_origin_very_high: machine-origin probability "
                     f"{bot:.2f} >= block threshold {s.block_bot_origin:.2f}{evidence}")
            elif bot >= s.review_bot_origin:
                fire(Decision.REVIEW, "likely_machine", f"bot_origin_high: machine-origin probability "
                     f"{bot:.2f} >= review threshold {s.review_bot_origin:.2f}{evidence}")
            else:
                fire(Decision.TAG, "possibly_machine", f"bot_origin_elevated: machine-origin probability "
                     f"{bot:.2f} >= tag threshold {s.tag_bot_origin:.2f}{evidence}")
            if declared is DeclaredOrigin.HUMAN and bot >= s.review_bot_origin:
                fire(Decision.REVIEW, "origin_conflict", "declared_human_scored_machine: declared human-written "
                     f"but scored {bot:.2f} machine-origin")
        if rep >= s.block_repetitiveness:
            fire(Decision.BLOCK, "repetitive", f"repetitive: {rep:.2f} of the agent side repeats earlier turns "
                 f"(block threshold {s.block_repetitiveness:.2f})")
        elif rep >= s.tag_repetitiveness:
            fire(Decision.TAG, "repetitive", f"repetitive: {rep:.2f} of the agent side repeats earlier turns "
                 f"(tag threshold {s.tag_repetitiveness:.2f})")
        if not reasons:
            reasons.append(f"accepted: machine-origin {bot:.2f} and repetitiveness {rep:.2f} under all thresholds")
        return PolicyOutcome(decision, tuple(tags), tuple(reasons))


def _top_turns(transcript: Transcript, scored: ScoredTranscript, k: int = 2) -> str:
    """Names the turns that drove a high score, so a reviewer knows where to look."""
    ranked = sorted(
        ((ts.bot_origin, i) for i, ts in enumerate(scored.scores.turns) if scored.turn_evidence[i] > 0),
        reverse=True,
    )[:k]
    if not ranked:
        return ""
    turns = scored.scores.turns
    parts = [f"turn {i} ({transcript.turns[i].role.value}, {p:.2f}"
             + (f", seen in {turns[i].seen_before} earlier transcripts" if turns[i].seen_before >= 2 else "") + ")"
             for p, i in ranked]
    return "; most machine-like: " + ", ".join(parts)
