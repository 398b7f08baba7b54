"""Decision rules and repetition statistics, on plain types (no server needed)."""
from __future__ import annotations


import pytest

from echogate.policy import Policy
import numpy as np

from echogate.repetition import transcript_scores, turn_scores
from echogate.scoring import ScoredTranscript
from echogate.settings import PolicySettings
from echogate.types import DeclaredOrigin, Decision, Role, Scores, Transcript, Turn, TurnScore


def test_verbatim_repeat_scores_one_and_new_content_zero():
    roles = ["customer", "agent", "customer", "agent", "agent"]
    texts = ["my card is lost", "I can help you with that today.", "my card is lost",
             "I can help you with that today.", "Your new card ships tomorrow morning."]
    scores = turn_scores(texts, roles, np.zeros(len(texts), np.int64))
    assert scores[1] == 0.0 and scores[4] == 0.0
    assert scores[2] == 1.0 and scores[3] == 1.0  # each role is compared with its own earlier turns


def test_template_with_changed_slot_is_partly_repetitive_and_short_turns_are_not():
    roles = ["agent", "agent", "agent", "agent"]
    texts = ["Your table for 2 at Sino is booked for 7 pm.", "Your table for 4 at Sino is booked for 7 pm.",
             "Thanks.", "Thanks."]
    scores = turn_scores(texts, roles, np.zeros(len(texts), np.int64))
    assert 0.5 < scores[1] < 1.0
    assert scores[3] == 0.0
    assert transcript_scores(scores, roles, np.zeros(4, np.int64), 1)[0] == pytest.approx(sum(scores) / 4)


def test_repetition_is_per_transcript_and_matches_a_plain_python_reference():
    rng = np.random.default_rng(3)
    vocab = ["the", "card", "order", "is", "late", "sorry", "we", "can", "help", "ok", "Ünï"]
    texts = [" ".join(rng.choice(vocab, rng.integers(0, 9))) for _ in range(300)]
    roles = list(rng.choice(["customer", "agent", "system"], 300))
    doc = np.sort(rng.integers(0, 40, 300))
    got = turn_scores(texts, roles, doc)
    seen: dict = {}
    for k, (t, r, d) in enumerate(zip(texts, roles, doc)):
        words = t.lower().split()
        grams = set(zip(words, words[1:], words[2:]))
        earlier = seen.setdefault((d, r), set())
        expected = len(grams & earlier) / len(grams) if grams else 0.0
        assert got[k] == pytest.approx(expected), (k, t)
        earlier |= grams
    agent_only = transcript_scores(got, roles, doc, 40)
    d0 = [k for k in range(300) if doc[k] == doc[0]]
    pool = [got[k] for k in d0 if roles[k] == "agent"] or [got[k] for k in d0]
    assert agent_only[doc[0]] == pytest.approx(sum(pool) / len(pool))
    # several per-turn values at once give the same means as one at a time
    other = rng.random(300)
    both = transcript_scores(np.stack([got, other]), roles, doc, 40)
    np.testing.assert_allclose(both, [agent_only, transcript_scores(other, roles, doc, 40)])


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


