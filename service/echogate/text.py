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

from echogate import _text
from echogate.types import OTHER_ROLE, ROLE_CODES

NORMALIZATION_VERSION = "nfkc-zw-ws-1"

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad"  # zero-width characters and the soft hyphen


def normalize(text: str) -> str:
    """NFKC, zero-width and soft-hyphen characters removed, whitespace runs collapsed.

    ASCII text is already NFKC and has no zero-width characters: it skips straight to
    the whitespace step (the common case, and this runs once per turn on the hot path).
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        for c in _ZERO_WIDTH:  # str.replace scans in C; str.translate looks up every character in a dict
            text = text.replace(c, "")
    return " ".join(text.split())


class Packed(NamedTuple):
    """Turns packed into one UTF-8 byte stream: what the model, the corpus keys and the
    repetition features all read. `byte_turn` is the turn of each byte (the model's input),
    `starts` and `lengths` each turn's first byte and byte count."""

    stream: np.ndarray  # uint8 [N]
    byte_turn: np.ndarray  # int64 [N]
    starts: np.ndarray  # int64 [R]
    lengths: np.ndarray  # int64 [R]


def normalize_all(texts: Sequence[str]) -> list[str]:
    """`normalize` of every text, found out on all of them joined.

    Most turns are ASCII with single spaces already. The batch is joined with NUL and scanned
    once as UTF-8 bytes for what `normalize` could change: a byte of a character that is not
    ASCII, a control byte (ASCII whitespace other than the space is among them), a space beside
    a space or at a text's edge. Only the texts that have one are normalised (a few dozen of
    4,000 turns in the gate's benchmark traffic); the others come back as they are. A
    whole-batch NFKC for the handful of texts that needed it cost 23 ms per 256 transcripts.
    Texts that contain NUL themselves take the per-text path.
    """
    joined = "\x00".join(texts)
    if len(texts) == 0 or joined.count("\x00") != len(texts) - 1:
        return [normalize(t) for t in texts]
    b = np.frombuffer(joined.encode("utf-8"), np.uint8)
    space, separator = b == 32, b == 0
    edge = space | separator
    changes = (b - np.uint8(1) < 31) | (b > 127)  # bytes 1-31 (0, the separator, wraps to 255) and 128-255
    changes[1:] |= space[1:] & edge[:-1]
    changes[:-1] |= space[:-1] & edge[1:]
    if b.size:
        changes[[0, -1]] |= space[[0, -1]]
    out = list(texts)
    if changes.any():
        # a flagged byte is never a separator: its text is the number of separators before it
        changed = np.searchsorted(np.flatnonzero(separator), np.flatnonzero(changes))
        for i in np.unique(changed).tolist():
            out[i] = normalize(out[i])
    return out


def pack_turns(normalized: Sequence[str], max_bytes: int) -> Packed:
    """Concatenate already-normalised turns, as UTF-8, into one byte stream.

    Each turn is cut to `max_bytes` (a cut may fall inside a character: the model reads bytes);
    an empty turn contributes no bytes (its n-gram count is zero). Packed in C
    (echogate/_text.c), one pass over the turns.
    """
    texts = normalized if isinstance(normalized, list) else list(normalized)
    stream, byte_turn, starts, lengths = _text.pack_turns(texts, max_bytes)
    return Packed(np.frombuffer(stream, np.uint8), np.frombuffer(byte_turn, np.int64), np.frombuffer(starts, np.int64),
                  np.frombuffer(lengths, np.int64))


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
