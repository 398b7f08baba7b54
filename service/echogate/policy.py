"""The decision policy: scores and declared origin in, decision with reasons out.

Rules, in the order they are considered (docs/policy.md has the policy file format):

1. A transcript declared bot or synthetic by the platform is decided by its declaration
   (`declared_bot`, `declared_synthetic`: tag or block) without asking the model.
2. Otherwise the thresholds on bot origin and repetitiveness fire; the strictest decision
   wins. Declared human but scored at or over the review threshold takes
   `declared_human_scored_machine` (review by default).
3. The real-data floor: a verdict that would be ACCEPT becomes TAG (`synthetic_budget`) when
   accepting it would lift the source's expected machine-written share of accepted
   transcripts over the window past `synthetic_budget.max_share`.

Every rule that fires adds a reason, "code: explanation"; the first reason is the rule that
decided. Per-source overrides (`sources:`) change thresholds, declared-origin actions, tags and
the budget for one source. The policy version is stamped on every verdict.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from echogate.budget import SyntheticBudgetWindows
from echogate.scoring import ScoredTranscript
from echogate.settings import PolicySettings
from echogate.types import DeclaredOrigin, Decision, Transcript

_SEVERITY = {Decision.ACCEPT: 0, Decision.TAG: 1, Decision.REVIEW: 2, Decision.BLOCK: 3}


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class PolicyOutcome:
    decision: Decision
    tags: tuple[str, ...]
    reasons: tuple[str, ...]


class Policy:
    def __init__(self, settings: PolicySettings):
        self.settings = settings
        self.version = settings.version
        self.for_source = lru_cache(maxsize=1024)(settings.resolve)

    def decide(self, transcript: Transcript, scored: ScoredTranscript,
               budget: SyntheticBudgetWindows | None = None, reserve: bool = False) -> PolicyOutcome:
        """Decide one transcript. With `budget`, the real-data floor applies; with `reserve`, an
        ACCEPT is counted in the window at once (the caller releases it if it is not stored)."""
        s = self.for_source(transcript.source)
        bot, rep = scored.scores.bot_origin, scored.scores.repetitiveness
        decision, decisive, tags, reasons = Decision.ACCEPT, "", list(s.tags), []

        def fire(d: Decision, tag: str | None, reason: str) -> None:
            nonlocal decision, decisive
            if not decisive or _SEVERITY[d] > _SEVERITY[decision]:  # the first of the strictest decides
                decision, decisive = d, reason
            if tag and tag not in tags:
                tags.append(tag)
            reasons.append(reason)

        declared = transcript.declared_origin
        if declared in (DeclaredOrigin.BOT, DeclaredOrigin.SYNTHETIC):
            action = Decision(s.declared_bot if declared is DeclaredOrigin.BOT else s.declared_synthetic)
            fire(action, f"declared_{declared.value}",
                 f"declared_{declared.value}: the platform declared this transcript {declared.value}-written "
                 f"({action.value} by policy, the model was not asked)")
            return self._outcome(decision, decisive, tags, reasons)

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
                fire(Decision(s.declared_human_scored_machine), "origin_conflict",
                     f"declared_human_scored_machine: declared human-written but scored {bot:.2f} machine-origin "
                     f"({s.declared_human_scored_machine} by policy)")
        if rep >= s.block_repetitiveness:
            fire(Decision.BLOCK, "repetitive", f"repetitive: {rep:.2f} of the agent side repeats earlier turns "
                 f"(block threshold {s.block_repetitiveness:.2f})")
        elif rep >= s.tag_repetitiveness:
            fire(Decision.TAG, "repetitive", f"repetitive: {rep:.2f} of the agent side repeats earlier turns "
                 f"(tag threshold {s.tag_repetitiveness:.2f})")
        if decision is Decision.ACCEPT and budget is not None and s.synthetic_budget is not None:
            cap = s.synthetic_budget
            share = budget.share_if_accepted(transcript.source, bot, cap.window_seconds)
            if share > cap.max_share:
                fire(Decision.TAG, "synthetic_budget", f"synthetic_budget: accepting would lift the machine-written "
                     f"share of accepted transcripts from {transcript.source or 'default'} to {share:.3f}, over its "
                     f"budget of {cap.max_share:.3f}")
            elif reserve:
                budget.add(transcript.source, bot, cap.window_seconds)
        if decision is Decision.ACCEPT:
            reasons.append(f"accepted: machine-origin {bot:.2f} and repetitiveness {rep:.2f} under all thresholds")
            return PolicyOutcome(decision, tuple(tags), tuple(reasons))
        return self._outcome(decision, decisive, tags, reasons)

    @staticmethod
    def _outcome(decision: Decision, decisive: str, tags: list[str], reasons: list[str]) -> PolicyOutcome:
        ordered = [decisive, *(r for r in reasons if r != decisive)]  # the deciding rule first
        return PolicyOutcome(decision, tuple(tags), tuple(ordered))

    @property
    def quote_wording_from(self) -> float:
        """The lowest machine-origin score that any source's rules flag: the scorer finds the
        machine-like wording of transcripts from there up (echogate.scoring.Scorer.explain_above);
        never, where the policy quotes none."""
        if not self.settings.quote_wording:
            return float("inf")
        return min(self.for_source(name).tag_bot_origin for name in ["", *self.settings.sources])

    def budget_window(self, source: str) -> float | None:
        """The real-data floor's window for `source` (None: no budget applies)."""
        budget = self.for_source(source).synthetic_budget
        return budget.window_seconds if budget else None


def _top_turns(transcript: Transcript, scored: ScoredTranscript, k: int = 2) -> str:
    """Names the turns that drove a high score, so a reviewer knows where to look, and quotes
    the phrases of the top one that read as machine-written (echogate.explain)."""
    ranked = sorted(
        ((ts.bot_origin, i) for i, ts in enumerate(scored.scores.turns) if scored.turn_evidence[i] > 0),
        reverse=True,
    )[:k]
    if not ranked:
        return ""
    turns = scored.scores.turns
    parts = [f"turn {i} ({transcript.turns[i].role.value}, {p:.2f}"
             + (f", its wording seen in {turns[i].seen_before} earlier transcripts, names and numbers aside"
                if turns[i].seen_before >= 2 else "")
             + (f", machine-like wording: {', '.join(map(_quote, scored.phrases))}"
                if i == scored.phrase_turn and scored.phrases else "") + ")"
             for p, i in ranked]
    return "; most machine-like: " + ", ".join(parts)


QUOTED_WORDING = re.compile(r', machine-like wording: "[^"]*"(?:, "[^"]*")*')


def _quote(phrase: str) -> str:
    return '"' + phrase.replace('"', "'") + '"'  # no quote inside: QUOTED_WORDING finds where each ends


def without_wording(reason: str) -> str:
    """The reason without the words it quotes from the transcript, for records kept without them."""
    return QUOTED_WORDING.sub("", reason)


def load_policy_file(path: str | Path) -> PolicySettings:
    """Read and validate a policy file; a PolicyError names the line and field of every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path} line 1: a policy file is a mapping of fields (version, thresholds, sources, ...)")
    try:
        return PolicySettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = f"{'.'.join(str(part) for part in loc) or '(policy)'}: {error['msg']}"
            if not loc and error["msg"].startswith("Value error, "):  # cross-field checks start with their path
                message = error["msg"].removeprefix("Value error, ")
                loc = tuple(message.split(" ", 1)[0].split("."))
            problems.append(f"{path} line {_line_of(root, loc)}: {message}")
        raise PolicyError("\n".join(problems)) from None


def _line_of(node, loc: tuple) -> int:
    """The 1-based line of the deepest YAML node on `loc` (the parent's line for a missing key)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            line = key.start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
