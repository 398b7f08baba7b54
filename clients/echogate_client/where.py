"""`--where` conditions of `echogate query`, `export` and `purge`, parsed into a RecordFilter.

One condition per `--where`; all must hold. Values are data, never SQL:

  source=acme,beta              any of these sources (likewise decision=, declared_origin=, model_version=)
  tag=likely_machine            carries this tag (repeat for several: all must be present)
  text~refund                   some turn's text contains this, ignoring case
  bot_origin<0.3                scores: bot_origin, repetitiveness, corpus_duplicate with >= or <
  decided_at>=2026-07-01        decision time, ISO 8601 date or time (UTC unless it says otherwise), >= or <
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone

from echogate.query import RecordFilter, ScoreRange
from echogate.types import DeclaredOrigin, Decision

_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(>=|<|=|~)\s*(.*?)\s*$")
_LISTS = {"source": "sources", "decision": "decisions", "declared_origin": "declared_origins",
          "model_version": "model_versions"}
_ENUMS = {"decisions": Decision, "declared_origins": DeclaredOrigin}
_SCORES = ("bot_origin", "repetitiveness", "corpus_duplicate")


class WhereError(ValueError):
    """A condition that cannot be read; the message says which and why."""


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise WhereError(f"{text!r} is not an ISO 8601 date or time (for example 2026-07-01)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_where(conditions: list[str], base: RecordFilter | None = None) -> RecordFilter:
    f = base or RecordFilter()
    for condition in conditions:
        match = _CONDITION.match(condition)
        if not match:
            raise WhereError(f"{condition!r}: expected FIELD OP VALUE with OP one of =, ~, >=, <")
        name, op, value = match.groups()
        try:
            f = _apply(f, name, op, value)
        except WhereError as exc:
            raise WhereError(f"{condition!r}: {exc}") from None
    f.validate("where")
    return f


def _apply(f: RecordFilter, name: str, op: str, value: str) -> RecordFilter:
    if name in _LISTS and op == "=":
        field = _LISTS[name]
        values = [v for v in (x.strip() for x in value.split(",")) if v]
        if field in _ENUMS:
            kind = _ENUMS[field]
            unknown = [v for v in values if v not in kind.__members__.values()]
            if unknown:
                raise WhereError(f"unknown {name} {unknown}; one of {[str(m) for m in kind]}")
            values = [kind(v) for v in values]
        return replace(f, **{field: getattr(f, field) + tuple(values)})
    if name == "tag" and op == "=":
        return replace(f, tags=f.tags + (value,))
    if name == "text" and op == "~":
        return replace(f, text_contains=value)
    if name in _SCORES and op in (">=", "<"):
        try:
            number = float(value)
        except ValueError:
            raise WhereError(f"{value!r} is not a number") from None
        r: ScoreRange = getattr(f, name)
        r = replace(r, at_least=number) if op == ">=" else replace(r, below=number)
        return replace(f, **{name: r})
    if name == "decided_at" and op in (">=", "<"):
        return replace(f, **{"since" if op == ">=" else "until": parse_time(value)})
    fields = sorted([*_LISTS, "tag", "text", *_SCORES, "decided_at"])
    raise WhereError(f"cannot use {name}{op}; fields: {', '.join(fields)} (lists with =, text with ~, "
                     "scores and decided_at with >= or <)")
