"""JSONL records (the schema of the shared datasets) <-> echogate.v1 messages.

A record has `turns` (a list of {"role", "text"}) or only `text`; plain text becomes one
AGENT turn. `id` is optional (the line number is used), `source` and `metadata` are
passed through when present. Logged LLM conversations and chat training sets come in two
other shapes, read as turns too (TURN_LISTS): OpenAI's and Anthropic's `messages` (turns with
`role` and `content`; Anthropic's top-level `system` prompt is not a turn and is not read) and
ShareGPT's `conversations` (turns with `from` and `value`).

The schema's `text` of a dialogue is its turns joined as `role: text` lines, and a record may
carry only that (`turns_from_text`): such a text is read back into its turns, so a dialogue
scores the same whichever of the two fields it came in, rather than as one agent paragraph
with role names in it (its verdict still lists no turns: the record gave none).

`system` names two things in logged dialogues: platform messages beside an agent (hand-off
notices, canned text: the API's ROLE_SYSTEM, which the model does not weigh), and, in the DSTC,
MultiWOZ and Schema-Guided Dialogue files, the side that answers the user. A `turns` record with
no agent turn is read the second way: its system turns are the agent's, so the side that carries
most of the evidence is not dropped.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from echogate.v1 import gate_pb2 as pb

# Role names as logging tools and dialogue corpora write them (case and surrounding spaces ignored):
# OpenAI and Anthropic message lists (user, assistant), Gemini's (user, model), MultiWOZ's short
# forms (usr, sys), chat exports (customer, client, agent, operator, support, bot, chatbot, ai),
# Wizard of Wikipedia (apprentice, wizard), ReDial (seeker, recommender), the Twitter customer
# support corpus (customer, company), ABCD (customer, agent, action: what the agent's tools did).
ROLE_NAMES = {
    "customer": pb.ROLE_CUSTOMER, "user": pb.ROLE_CUSTOMER, "human": pb.ROLE_CUSTOMER, "client": pb.ROLE_CUSTOMER,
    "usr": pb.ROLE_CUSTOMER, "apprentice": pb.ROLE_CUSTOMER, "seeker": pb.ROLE_CUSTOMER, "caller": pb.ROLE_CUSTOMER,
    "guest": pb.ROLE_CUSTOMER, "visitor": pb.ROLE_CUSTOMER,
    "agent": pb.ROLE_AGENT, "assistant": pb.ROLE_AGENT, "bot": pb.ROLE_AGENT, "wizard": pb.ROLE_AGENT,
    "operator": pb.ROLE_AGENT, "support": pb.ROLE_AGENT, "model": pb.ROLE_AGENT, "chatbot": pb.ROLE_AGENT,
    "ai": pb.ROLE_AGENT, "recommender": pb.ROLE_AGENT, "company": pb.ROLE_AGENT, "representative": pb.ROLE_AGENT,
    "rep": pb.ROLE_AGENT, "staff": pb.ROLE_AGENT,
    "system": pb.ROLE_SYSTEM, "sys": pb.ROLE_SYSTEM, "action": pb.ROLE_SYSTEM,
}
# Names only message lists use (ShareGPT's answering side; OpenAI's tool results and developer
# prompts, Llama's code-interpreter output, which the model does not weigh). A text line
# "Function: ..." or "Tool: ..." is prose more often than a turn, so `turns_from_text` does not
# read these.
ROLE_NAMES_OF_MESSAGE_LISTS = {"gpt": pb.ROLE_AGENT, "tool": pb.ROLE_SYSTEM, "function": pb.ROLE_SYSTEM,
                               "developer": pb.ROLE_SYSTEM, "ipython": pb.ROLE_SYSTEM}
TURN_ROLES = {**ROLE_NAMES, **ROLE_NAMES_OF_MESSAGE_LISTS}
# ROLE_SYSTEM names that mean the answering side in a record of `turns` without an agent turn (the
# DSTC, MultiWOZ and SGD way); the others, and every system message of a message list (a prompt),
# are not the answering side wherever they stand
ANSWERING_SYSTEM_NAMES = frozenset({"system", "sys"})
# Fields that hold a record's turns, in the order they are looked for: the shared datasets'
# own, OpenAI's and Anthropic's message lists, ShareGPT's conversations
TURN_LISTS = ("turns", "messages", "conversations")
ORIGIN_NAMES = {"": pb.DECLARED_ORIGIN_UNSPECIFIED, "unknown": pb.DECLARED_ORIGIN_UNSPECIFIED,
                "human": pb.DECLARED_ORIGIN_HUMAN, "bot": pb.DECLARED_ORIGIN_BOT,
                "synthetic": pb.DECLARED_ORIGIN_SYNTHETIC}
DECISION_NAMES = {pb.DECISION_ACCEPT: "accept", pb.DECISION_TAG: "tag", pb.DECISION_REVIEW: "review",
                  pb.DECISION_BLOCK: "block", pb.DECISION_UNSPECIFIED: "unspecified"}


class RecordError(ValueError):
    """A JSONL record that cannot be turned into a transcript; says which line and why."""


def read_jsonl_lines(source: Path | IO[str], keep_going: bool = False) -> Iterator[tuple[int, str, object]]:
    """Yield (line number, line, parsed JSON) for each non-empty line, one line in memory at a time.

    A line that is not JSON raises RecordError; with `keep_going` it is yielded with that error in
    place of its value, so that a reader can write it back marked and go on (`echogate score
    --keep-going`). A file may start with a byte order mark (some Windows tools write one)."""
    fh = source.open(encoding="utf-8-sig") if isinstance(source, Path) else source
    try:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    value = RecordError(f"line {n}: not valid JSON ({exc.msg})")
                    if not keep_going:
                        raise value from None
                yield n, line, value
    finally:
        if isinstance(source, Path):
            fh.close()


def count_lines(source: Path | IO[str]) -> int | None:
    """Lines of a file, for a progress bar's total (None for a stream such as stdin, which can be
    read only once). Counted in 1 MB blocks of bytes: a pass that costs little beside scoring them."""
    if not isinstance(source, Path):
        return None
    count, last = 0, b"\n"
    with source.open("rb") as fh:
        while block := fh.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def read_jsonl(source: Path | IO[str]) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each non-empty line."""
    for n, _, record in read_jsonl_lines(source):
        yield n, record


def transcript_from_record(record: dict, line: int, default_source: str = "") -> pb.Transcript:
    """The Transcript message a record stands for; RecordError names the line and field when it cannot.

    JSON can escape half of a surrogate pair (a logger that cut a string in the middle of an emoji),
    which no UTF-8 message can carry: such a half is read as U+FFFD, the replacement character."""
    if not isinstance(record, dict):
        raise RecordError(f"line {line}: a record must be a JSON object, not {type(record).__name__}")
    try:
        return _transcript(record, line, default_source)
    except UnicodeEncodeError:
        return _transcript(_without_lone_surrogates(record), line, default_source)


def _transcript(record: dict, line: int, default_source: str) -> pb.Transcript:
    origin = ORIGIN_NAMES.get(str(record.get("declared_origin") or "").lower())
    if origin is None:
        raise RecordError(f"line {line}: declared_origin must be one of {sorted(ORIGIN_NAMES)}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RecordError(f"line {line}: metadata must be an object of names to values")
    message = pb.Transcript(id=str(record.get("id") or f"line-{line}"),
                            source=str(record.get("source") or default_source),
                            metadata={str(k): str(v) for k, v in metadata.items()}, declared_origin=origin,
                            language=str(record.get("lang") or record.get("language") or ""))
    field, turns = turn_list(record)
    if not turns and isinstance(record.get("text"), str):
        turns = turns_from_text(record["text"])
    if turns:
        if not isinstance(turns, list):
            raise RecordError(f"line {line}: {field} must be a list of {{\"role\", \"text\"}} objects")
        add = message.turns.add  # about twice as fast as building Turn messages and passing the list
        for role, t in zip(turn_roles(turns, line, field), turns):
            add(role=role, text=turn_text(t))
    elif isinstance(record.get("text"), str):
        message.turns.add(role=pb.ROLE_AGENT, text=record["text"])
    else:
        raise RecordError(f"line {line}: a record needs `turns` or `text`")
    return message


def turn_roles(turns: list, line: int, field: str = "turns") -> list[int]:
    """The API role (pb.ROLE_*) of each turn of a record's `field` list, from its role name
    (TURN_ROLES; RecordError names the line and turn of a name it does not list). In a `turns`
    list without an agent turn, the system turns are the answering side's (see the module
    docstring). The trainer reads its files' roles here too, so a model trains on the sides the
    server will score."""
    names = [_role_name(t, j, line, field) for j, t in enumerate(turns)]
    roles = [TURN_ROLES[name] for name in names]
    if pb.ROLE_AGENT not in roles and field == "turns":
        roles = [pb.ROLE_AGENT if name in ANSWERING_SYSTEM_NAMES else r for r, name in zip(roles, names)]
    return roles


def turn_list(record: dict) -> tuple[str, object]:
    """(the field that holds the record's turns, its value) from TURN_LISTS; ("turns", None) when
    the record has none (plain text, or a dialogue written as `role: text` lines)."""
    for name in TURN_LISTS:
        if record.get(name):
            return name, record[name]
    return "turns", None


# a `role: text` line: a role name (ROLE_NAMES, any case) at the start, a colon, then the turn's text
_ROLE_LINE = re.compile(r"[ \t]*([A-Za-z]+)[ \t]*:[ \t]?(.*)")


def turns_from_text(text: str) -> list[dict] | None:
    """A dialogue's turns from its `role: text` lines (the schema's `text` of a dialogue), or
    None for any other text.

    Read so only when the first line starts with a known role name and a colon. Any other line
    continues the turn before it, as a turn's own line breaks do once the turns are joined, so
    such turns come back whole."""
    turns: list[tuple[str, list[str]]] = []  # (role as written, the turn's lines)
    for line in text.split("\n"):
        m = _ROLE_LINE.fullmatch(line)
        if m is not None and m.group(1).lower() in ROLE_NAMES:
            turns.append((m.group(1), [m.group(2)]))
        elif turns:
            turns[-1][1].append(line)
        else:
            return None
    return [{"role": role, "text": "\n".join(lines)} for role, lines in turns]


# Where a turn's text is found (turn_text): the schema's `text`, ShareGPT's `value`, a message
# list's `content` (a string, a list of content blocks, or null where an assistant message only
# calls tools)
TURN_TEXT_FIELDS = ("text", "value", "content")


def turn_text(turn: dict) -> str:
    """A turn's text: `text`, `value` as ShareGPT names it, or `content` as OpenAI's and
    Anthropic's message lists name it (a string, or a list of content blocks whose `text` parts
    are joined by line breaks; null where an assistant message only calls tools)."""
    text = turn.get("text")
    if text is None:
        text = turn.get("value")
    if text is None:
        text = turn.get("content")
        if isinstance(text, list):
            text = "\n".join(b["text"] for b in text if isinstance(b, dict) and isinstance(b.get("text"), str))
    return text if isinstance(text, str) else str(text or "")


def _role_name(turn: object, j: int, line: int, field: str) -> str:
    """The turn's role name as TURN_ROLES lists it (case and surrounding spaces dropped); ShareGPT
    names the role `from`."""
    if not isinstance(turn, dict):
        raise RecordError(f"line {line}: {field}[{j}] must be an object with role and text")
    key = "role" if "role" in turn or "from" not in turn else "from"
    written = turn.get(key, "")
    if isinstance(written, str) and written in TURN_ROLES:  # the common case: written as listed
        return written
    name = str(written).strip().lower()
    if name not in TURN_ROLES:
        raise RecordError(f"line {line}: {field}[{j}].{key} {written!r} is not one of {sorted(TURN_ROLES)}")
    return name


def _without_lone_surrogates(value):
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


def verdict_to_dict(v: pb.Verdict, with_turns: bool = True) -> dict:
    out = {"bot_origin": round(v.bot_origin, 6), "repetitiveness": round(v.repetitiveness, 6),
           "corpus_duplicate": round(v.corpus_duplicate, 6),
           "repetition": {f.name: round(getattr(v.repetition, f.name), 6) for f in v.repetition.DESCRIPTOR.fields},
           "decision": DECISION_NAMES[v.decision], "tags": list(v.tags), "reasons": list(v.reasons),
           "turns": [{"bot_origin": round(t.bot_origin, 6), "repetitiveness": round(t.repetitiveness, 6),
                      "seen_before": t.seen_before}
                     for t in v.turns] if with_turns else [],
           "model_version": v.model_version, "policy_version": v.policy_version,
           "content_sha256": v.content_sha256}
    if v.record_id:
        out["record_id"] = v.record_id
        out["duplicate"] = v.duplicate
    return out
