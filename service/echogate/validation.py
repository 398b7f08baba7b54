"""Request validation against the configured limits.

Every violation in a request is collected (not just the first) so that a platform can
fix a rejected batch in one go. Field paths match the protobuf field names.
"""
from __future__ import annotations

from collections.abc import Sequence

from echogate.errors import FieldViolation, InvalidArgument
from echogate.settings import Limits
from echogate.types import Transcript


def validate_batch(transcripts: Sequence[Transcript], limits: Limits) -> None:
    """Raise InvalidArgument listing every problem; return quietly if the batch is fine."""
    problems: list[FieldViolation] = []
    if not transcripts:
        problems.append(FieldViolation("transcripts", "at least one transcript is required"))
    if len(transcripts) > limits.max_batch:
        problems.append(FieldViolation(
            "transcripts", f"{len(transcripts)} transcripts exceed the batch limit of {limits.max_batch}"))
    for i, t in enumerate(transcripts[: limits.max_batch]):
        problems.extend(_check_transcript(f"transcripts[{i}]", t, limits))
    if problems:
        raise InvalidArgument(problems)


def _check_transcript(path: str, t: Transcript, limits: Limits) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if not t.id.strip():
        out.append(FieldViolation(f"{path}.id", "must not be empty"))
    for name, value in (("id", t.id), ("source", t.source)):
        if len(value.encode()) > limits.max_id_bytes:
            out.append(FieldViolation(f"{path}.{name}", f"longer than {limits.max_id_bytes} bytes"))
    if not t.turns:
        out.append(FieldViolation(f"{path}.turns", "at least one turn is required"))
    elif len(t.turns) > limits.max_turns:
        out.append(FieldViolation(f"{path}.turns", f"{len(t.turns)} turns exceed the limit of {limits.max_turns}"))
    for j, turn in enumerate(t.turns[: limits.max_turns]):
        size = len(turn.text.encode())
        if size > limits.max_turn_bytes:
            out.append(FieldViolation(f"{path}.turns[{j}].text",
                                      f"{size} bytes exceed the limit of {limits.max_turn_bytes}"))
    if len(t.metadata) > limits.max_metadata_entries:
        out.append(FieldViolation(f"{path}.metadata",
                                  f"{len(t.metadata)} entries exceed the limit of {limits.max_metadata_entries}"))
    meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in t.metadata.items())
    if meta_bytes > limits.max_metadata_bytes:
        out.append(FieldViolation(f"{path}.metadata", f"{meta_bytes} bytes exceed the limit of {limits.max_metadata_bytes}"))
    return out
