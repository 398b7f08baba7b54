"""Text normalisation and byte packing shared by the scorer and the trainer.

The ONNX model reads raw UTF-8 bytes; everything the model sees passes through
`normalize` first so that Unicode tricks (full-width letters, zero-width characters,
odd whitespace) cannot move a score. `NORMALIZATION_VERSION` is written into the model
metadata: a model trained with one normalisation refuses to load with another.
"""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from echogate.types import OTHER_ROLE, ROLE_CODES

NORMALIZATION_VERSION = "nfkc-zw-ws-1"

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))


def normalize(text: str) -> str:
    """NFKC, zero-width and soft-hyphen characters removed, whitespace runs collapsed.

    ASCII text is already NFKC and has no zero-width characters: it skips straight to
    the whitespace step (the common case, and this runs once per turn on the hot path).
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return " ".join(text.split())


class Packed(NamedTuple):
    """Turns packed into one UTF-8 byte stream: what the model, the corpus keys and the
    repetition features all read. `byte_turn` is the turn of each byte (the model's input),
    `starts` and `lengths` each turn's first byte and byte count."""

    stream: np.ndarray  # uint8 [N]
    byte_turn: np.ndarray  # int64 [N]
    starts: np.ndarray  # int64 [R]
    lengths: np.ndarray  # int64 [R]


_ASCII_WHITESPACE = tuple("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")  # besides the space: all that str.split splits at


def normalize_all(texts: Sequence[str]) -> list[str]:
    """`normalize` of every text, checked and done on all of them joined.

    Most batches are ASCII text with single spaces already: a few scans of the joined batch
    show it, and the texts come back as they are. Otherwise one NFKC pass, one split and one
    join for the batch. Texts are joined with NUL: not whitespace to str.split, and a
    character NFKC neither composes with nor produces, so normalising the whole equals joining
    the normalised parts. Texts that contain NUL themselves take the per-text path.
    """
    joined = "\x00".join(texts)
    if len(texts) == 0 or joined.count("\x00") != len(texts) - 1:
        return [normalize(t) for t in texts]
    ascii_only = joined.isascii()
    if ascii_only and not any(c in joined for c in _ASCII_WHITESPACE):
        b = np.frombuffer(joined.encode("ascii"), np.uint8)
        space = b == 32
        edge = space | (b == 0)  # a space beside a space or a separator is a run, or a text's edge
        if not b.size or not (space[0] or space[-1] or (space[1:] & edge[:-1]).any() or (edge[1:] & space[:-1]).any()):
            return list(texts)
    elif not ascii_only:
        joined = unicodedata.normalize("NFKC", joined).translate(_ZERO_WIDTH)
    # whitespace runs become one space; the space next to a separator was a text's edge
    return " ".join(joined.split()).replace(" \x00", "\x00").replace("\x00 ", "\x00").split("\x00")


def pack_turns(normalized: Sequence[str], max_bytes: int) -> Packed:
    """Concatenate already-normalised turns, as UTF-8, into one byte stream.

    Each turn is cut to `max_bytes`; an empty turn contributes no bytes (its n-gram count is
    zero).
    """
    encoded = [t.encode("utf-8")[:max_bytes] for t in normalized]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    starts = np.zeros(len(encoded), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    stream = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    turn_of_byte = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    return Packed(stream, turn_of_byte, starts, lengths)


def role_codes(roles: Sequence[str]) -> np.ndarray:
    """int64 code per turn role (echogate.types.ROLE_CODES; OTHER_ROLE for any other name)."""
    return np.fromiter(map(ROLE_CODES.get, roles, repeat(OTHER_ROLE, len(roles))), np.int64, len(roles))


def content_sha256(roles: Sequence[str], texts: Sequence[str], normalized: bool = False) -> str:
    """Hash of the canonical content: for each turn in order, role, 0x1F, normalised text, 0x1E."""
    if not normalized:
        texts = normalize_all(texts)
    if len(roles) != len(texts):
        raise ValueError(f"{len(roles)} roles for {len(texts)} texts")
    canonical = "\x1e".join(map("\x1f".join, zip(roles, texts))) + "\x1e"  # role, 0x1F, text, 0x1E per turn
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
