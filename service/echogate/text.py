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

import numpy as np

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


def content_sha256(roles: Sequence[str], texts: Sequence[str], normalized: bool = False) -> str:
    """Hash of the canonical content: for each turn in order, role, 0x1F, normalised text, 0x1E."""
    if not normalized:
        texts = [normalize(t) for t in texts]
    if len(roles) != len(texts):
        raise ValueError(f"{len(roles)} roles for {len(texts)} texts")
    canonical = "\x1e".join(map("\x1f".join, zip(roles, texts))) + "\x1e"  # role, 0x1F, text, 0x1E per turn
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
