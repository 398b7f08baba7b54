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


def pack_turns(normalized: Sequence[str], max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate already-normalised turns, as UTF-8, into one byte stream.

    Returns (stream uint8 [N], turn_of_byte int64 [N]): the model's `text_bytes` and
    `byte_turn` inputs. Each turn is cut to `max_bytes`; an empty turn contributes no
    bytes (its n-gram count is zero).
    """
    encoded = [t.encode("utf-8")[:max_bytes] for t in normalized]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    stream = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    turn_of_byte = np.repeat(np.arange(len(encoded), dtype=np.int64), lengths)
    return stream, turn_of_byte


def role_codes(roles: Sequence[str]) -> np.ndarray:
    """int64 code per turn role (echogate.types.ROLE_CODES; OTHER_ROLE for any other name)."""
    return np.fromiter(map(ROLE_CODES.get, roles, repeat(OTHER_ROLE, len(roles))), np.int64, len(roles))


def turn_lengths(byte_turn: np.ndarray, n_turns: int) -> np.ndarray:
    """Bytes per turn of a packed stream (`byte_turn` is sorted: a search per turn, not a pass
    over every byte as bincount would make)."""
    return np.diff(np.searchsorted(byte_turn, np.arange(n_turns + 1)))


def content_sha256(roles: Sequence[str], texts: Sequence[str], normalized: bool = False) -> str:
    """Hash of the canonical content: for each turn in order, role, 0x1F, normalised text, 0x1E."""
    if not normalized:
        texts = [normalize(t) for t in texts]
    if len(roles) != len(texts):
        raise ValueError(f"{len(roles)} roles for {len(texts)} texts")
    canonical = "\x1e".join(map("\x1f".join, zip(roles, texts))) + "\x1e"  # role, 0x1F, text, 0x1E per turn
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class PowerTable:
    """base**i and base**-i modulo 2**bits (the dtype's width) for i < size, grown on demand.

    A polynomial hash of every word or turn of a packed stream at once: a reduceat over
    term * base**(position in the stream), times base**-(start of the word) (base is odd, so
    invertible; arithmetic wraps). Tables are replaced whole, so readers on other threads
    always see a consistent pair.
    """

    def __init__(self, base: int, dtype: type[np.unsignedinteger]):
        self.base, self.dtype = base, dtype
        self._tables = np.ones(1, dtype), np.ones(1, dtype)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        tables = self._tables
        if tables[0].size < size:
            n = max(size, 2 * tables[0].size)
            bits = np.dtype(self.dtype).itemsize * 8
            steps = np.full(n, self.base, self.dtype), np.full(n, pow(self.base, -1, 2**bits), self.dtype)
            steps[0][0] = steps[1][0] = 1
            tables = self._tables = np.cumprod(steps[0], dtype=self.dtype), np.cumprod(steps[1], dtype=self.dtype)
        return tables

