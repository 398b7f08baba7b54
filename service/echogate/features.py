"""The hashed byte n-gram features, in NumPy: the reference the ONNX graph reproduces.

An n-gram starting at byte i of the packed stream (see `echogate.text.pack_turns`) is
hashed as  (sum_k byte[i+k] * 257**k + salt(n)) mod TABLE_SIZE  and counts only when all
its bytes belong to the same turn. The trainer builds its design matrix from these
hashes; `echogate.model_graph` emits the same arithmetic as ONNX ops, and a test checks
that both agree bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BASE = 257
SALT = 1_000_003


SHAPE_SALT_OFFSET = 16


def _shape_classes() -> np.ndarray:
    """Byte -> writing-style class: letters lose their identity but keep their case, digits
    collapse to one class, punctuation and whitespace stay themselves, and bytes of
    non-ASCII characters share a class. N-grams of this stream describe how a text is
    written (capitalisation, punctuation, spacing, word lengths) rather than what about."""
    table = np.arange(256, dtype=np.uint8)
    table[ord("a") : ord("z") + 1] = ord("a")
    table[ord("A") : ord("Z") + 1] = ord("A")
    table[ord("0") : ord("9") + 1] = ord("0")
    table[128:] = 128
    return table


SHAPE_CLASSES = _shape_classes()


@dataclass(frozen=True)
class HashSpec:
    """Which n-gram orders are hashed into how many buckets.

    `orders` apply to the raw byte stream, `shape_orders` to its writing-style classes
    (SHAPE_CLASSES); both share one weight table, kept apart by their salts.
    """

    orders: tuple[int, ...] = (3, 4, 5)
    shape_orders: tuple[int, ...] = ()
    table_size: int = 524_287  # 2**19 - 1, prime

    def to_metadata(self) -> dict[str, str]:
        return {"hash_orders": ",".join(map(str, self.orders)),
                "hash_shape_orders": ",".join(map(str, self.shape_orders)),
                "hash_table_size": str(self.table_size)}


def ngram_hashes(stream: np.ndarray, turn_of_byte: np.ndarray, spec: HashSpec) -> tuple[np.ndarray, np.ndarray]:
    """All valid n-gram hashes of a packed stream and the turn each belongs to."""
    size = stream.shape[0]
    hashes, turns = [], []
    plans = [(stream.astype(np.int64), n, n * SALT) for n in spec.orders]
    if spec.shape_orders:
        shape = SHAPE_CLASSES[stream].astype(np.int64)
        plans += [(shape, n, (n + SHAPE_SALT_OFFSET) * SALT) for n in spec.shape_orders]
    for x, n, salt in plans:
        m = size - n + 1
        if m <= 0:
            continue
        g = np.full(m, salt, dtype=np.int64)
        for k in range(n):
            g += x[k : k + m] * BASE**k
        valid = turn_of_byte[:m] == turn_of_byte[n - 1 : n - 1 + m]
        hashes.append(g[valid] % spec.table_size)
        turns.append(turn_of_byte[:m][valid])
    if not hashes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(hashes), np.concatenate(turns)
