"""Decision rules on bot origin and repetitiveness, on plain types (no server needed)."""
from __future__ import annotations

import pytest

from echogate.policy import Policy
from echogate.scoring import ScoredTranscript
from echogate.settings import PolicySettings
from echogate.types import DeclaredOrigin, Decision, Role, Scores, Transcript, Turn, TurnScore


def _scored(bot: float, rep: float = 0.0) -> ScoredTranscript:
    return ScoredTranscript(Scores(bot, rep, (TurnScore(bot, rep), TurnScore(bot, rep))), "h", (10.0, 10.0))


def _transcript(origin=DeclaredOrigin.UNKNOWN) -> Transcript:
    return Transcript("t", "s", (Turn(Role.CUSTOMER, "hi"), Turn(Role.AGENT, "hello")), declared_origin=origin)


@pytest.mark.parametrize("bot,rep,decision,code", [
    (0.1, 0.0, Decision.ACCEPT, "accepted"),
    (0.6, 0.0, Decision.TAG, "bot_origin_elevated"),
    (0.85, 0.0, Decision.REVIEW, "bot_origin_high"),
    (0.99, 0.0, Decision.BLOCK, "bot_origin_very_high"),
    (0.1, 0.6, Decision.TAG, "repetitive"),
    (0.1, 0.95, Decision.BLOCK, "repetitive"),
])
def test_thresholds(bot, rep, decision, code):
    out = Policy(PolicySettings()).decide(_transcript(), _scored(bot, rep))
    assert out.decision is decision
    assert any(r.startswith(code + ":") for r in out.reasons), out.reasons


def test_declared_bot_is_tagged_without_a_high_score():
    out = Policy(PolicySettings()).decide(_transcript(DeclaredOrigin.BOT), _scored(0.01))
    assert out.decision is Decision.TAG and "declared_bot" in out.tags


def test_declared_human_scored_machine_goes_to_review():
    out = Policy(PolicySettings()).decide(_transcript(DeclaredOrigin.HUMAN), _scored(0.9))
    assert out.decision is Decision.REVIEW
    assert any(r.startswith("declared_human_scored_machine:") for r in out.reasons)


def test_reasons_name_the_turns_that_drove_the_score():
    out = Policy(PolicySettings()).decide(_transcript(), _scored(0.9))
    assert "turn 0 (customer, 0.90)" in out.reasons[0] or "turn 1 (agent, 0.90)" in out.reasons[0]


