"""The phrases of a turn that read as machine-written: what a reviewer is shown beside a score.

The model is linear in its hashed n-grams, so a turn's score is a sum over the n-grams in it,
and each n-gram covers a few bytes. Spreading every n-gram's weight evenly over its bytes
gives each byte, and so each word, its share of the score; the run of a few consecutive words
with the largest positive sum is the phrase that pushed the score up most ("I sincerely
apologize for the inconvenience" rather than "turn 3 scored 0.91"). This reads the same
weight table the ONNX graph holds, hashed as echogate.features hashes (in C,
echogate/_explain.c, equal bit for bit to the NumPy reference in the tests), so the phrases
explain the shipped model, not a stand-in.

It runs on the scoring thread, on the most machine-like turn of each transcript a policy could
flag, all of them in one pass per batch: 0.11 ms for one SGD turn and 2.8 for 256 (the NumPy
spreading took 0.33 and 5.0 ms).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from echogate import _explain
from echogate.features import BASE, FUNCTION_WORD_TABLE, MAX_ORDER, SHAPE_CLASSES, WORD_POWERS, HashSpec, hash_plans
from echogate.text import CLITICS, DETACHED_PUNCTUATION, DIGIT_MARK, DIGIT_RUN, pack_turns

WEIGHT_TABLE = "ngram_weights"  # the graph's initializer (echogate.training.graph)
# the table's element types (onnx TensorProto.DataType) as NumPy reads their raw data: int16 since
# bot-origin-0.12.3, int32 before (a rolled-back model file still explains its scores)
TABLE_TYPES = {5: np.dtype("<i2"), 6: np.dtype("<i4")}
PHRASE_WORDS = 4  # words per phrase: long enough to read as wording, short enough to point at it
MAX_PHRASE_CHARS = 80


class PhraseExplainer:
    def __init__(self, weights: np.ndarray, spec: HashSpec, max_turn_bytes: int):
        self.weights = np.ascontiguousarray(weights, np.float32)  # half the cache misses of float64
        self.spec = spec
        self.max_turn_bytes = max_turn_bytes
        self._plans = hash_plans(spec)  # (stream, order, salt) for the C kernel
        self._base_powers = np.array([pow(BASE, k, spec.table_size) for k in range(MAX_ORDER + 1)], np.int64)

    @classmethod
    def from_model(cls, model_bytes: bytes, meta: dict[str, str]) -> PhraseExplainer:
        """The explainer of a model: its weight table (from the bytes the session was made from)
        and its hashing (from its metadata)."""
        def orders(key: str) -> tuple[int, ...]:  # a model from before word n-grams has no hash_word_orders
            return tuple(int(n) for n in meta.get(key, "").split(",") if n)

        spec = HashSpec(orders("hash_orders"), orders("hash_shape_orders"), int(meta["hash_table_size"]),
                        orders("hash_function_orders"), orders("hash_word_orders"))
        # the table is fixed point; its unit does not matter here: phrases are ranked and kept by
        # the sign of their sums, which any positive scale leaves alone
        return cls(weight_table(model_bytes), spec, int(meta["max_turn_bytes"]))

    def byte_shares(self, stream: np.ndarray, byte_turn: np.ndarray) -> np.ndarray:
        """Each byte's share of the model's evidence, float64 [N]: every valid n-gram's weight
        spread evenly over the bytes it spans (echogate/_explain.c, one pass per stream and
        order; the NumPy reference is in tests/test_explain.py)."""
        out = np.empty(stream.shape[0])
        _explain.byte_shares(stream, np.ascontiguousarray(byte_turn, np.int64), self.weights, self._plans,
                             self._base_powers, WORD_POWERS, SHAPE_CLASSES, FUNCTION_WORD_TABLE, out)
        return out

    def phrases(self, texts: Sequence[str], k: int = 2, words: int = PHRASE_WORDS) -> list[tuple[str, ...]]:
        """Up to k non-overlapping phrases of up to `words` words per (normalised) text, most
        machine-like first; only phrases whose n-grams add up to machine evidence (a positive sum).
        One vectorised pass over all the texts: no Python loop per byte, word or text but the last
        decoding of the chosen phrases."""
        if not texts:
            return []
        packed = pack_turns(list(texts), self.max_turn_bytes)
        stream, byte_turn = packed.stream, packed.byte_turn
        size = stream.shape[0]
        per_byte = self.byte_shares(stream, byte_turn)
        # words: runs of non-space bytes within a turn, each scored by the sum of its bytes' shares
        text = stream != ord(" ")
        new_turn = np.ones(size + 1, bool)
        new_turn[1:-1] = byte_turn[1:] != byte_turn[:-1]
        before = np.concatenate([[False], text[:-1]])
        after = np.concatenate([text[1:], [False]])
        word_begins = text & (new_turn[:-1] | ~before)
        first = np.flatnonzero(word_begins)
        last = np.flatnonzero(text & (new_turn[1:] | ~after))
        word_of_byte = np.cumsum(word_begins) - 1
        score = np.bincount(word_of_byte[text], per_byte[text], first.size)
        turn_of_word = byte_turn[first]
        # windows of `words` words starting at each word, kept within the turn (a shorter turn
        # has one window, all of it)
        turn_first = np.searchsorted(turn_of_word, turn_of_word)
        turn_end = np.searchsorted(turn_of_word, turn_of_word, side="right")
        index = np.arange(first.size)
        stop = np.minimum(index + words, turn_end)
        valid = (index + words <= turn_end) | (index == turn_first)
        cumulative = np.concatenate([[0.0], np.cumsum(score)])
        sums = np.where(valid, cumulative[stop] - cumulative[index], -np.inf)
        begins = np.flatnonzero(index == turn_first)  # each turn's first word
        chosen: list[list[str]] = [[] for _ in texts]
        for _ in range(k):
            best = self._best_per_turn(sums, begins, turn_end[begins] - begins)
            best = best[sums[best] > 0]
            for i in best.tolist():
                chosen[turn_of_word[i]].append(_decode(stream[first[i] : last[stop[i] - 1] + 1]))
            # the next phrase may not overlap this one: no window starting within `words` of it
            taken = np.full(first.size, -2 * words, np.int64)
            taken[turn_first[best]] = best  # at most one chosen window per turn per round
            sums = np.where(np.abs(index - taken[turn_first]) < words, -np.inf, sums)
        return [tuple(c) for c in chosen]

    @staticmethod
    def _best_per_turn(sums: np.ndarray, begins: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Index of the largest window sum of each turn (words begins[t] .. + counts[t]) that has
        a window left; the first, on a tie. Turns are contiguous runs: reduceat, no sort."""
        if sums.size == 0:
            return np.zeros(0, np.int64)
        top = np.maximum.reduceat(sums, begins)
        from_end = np.where(sums == np.repeat(top, counts), sums.size - np.arange(sums.size), 0)
        best = sums.size - np.maximum.reduceat(from_end, begins)
        return best[np.isfinite(top)]


def _onnx_model_message() -> type:
    """A protobuf class for the path from an ONNX model to its initializers, and nothing else:
    ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto dims (1), data_type (2),
    name (8), raw_data (9), field numbers from onnx.proto, unchanged since its first IR version.
    Protobuf skips every other field. Serving so needs no `onnx` package, a training dependency
    of 31 MB that takes 0.7 s to import."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="echogate_onnx_path.proto", package="echogate_onnx_path",
                                              syntax="proto2")
    tensor = file.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    tensor.field.add(name="data_type", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    tensor.field.add(name="name", number=8, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    tensor.field.add(name="raw_data", number=9, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    file.message_type.add(name="GraphProto").field.add(
        name="initializer", number=5, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".echogate_onnx_path.TensorProto")
    file.message_type.add(name="ModelProto").field.add(
        name="graph", number=7, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".echogate_onnx_path.GraphProto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("echogate_onnx_path.ModelProto"))


_OnnxModel = _onnx_model_message()


def weight_table(model_bytes: bytes) -> np.ndarray:
    """The graph's fixed-point n-gram weight table (WEIGHT_TABLE), as numpy_helper.from_array stored it."""
    model = _OnnxModel.FromString(model_bytes)
    table = next((t for t in model.graph.initializer if t.name == WEIGHT_TABLE), None)
    dtype = TABLE_TYPES.get(table.data_type) if table is not None else None
    if dtype is None or len(table.raw_data) != dtype.itemsize * int(np.prod(table.dims)):
        raise ValueError(f"the model has no int16 or int32 initializer {WEIGHT_TABLE!r} stored as raw data")
    return np.frombuffer(table.raw_data, dtype).reshape(tuple(table.dims))


def as_written(phrase: str, text: str) -> str:
    """The phrase as `text` spells it, where the model read `text` as echogate.text.model_texts
    does: each "0" back to the run of digits it stands for, and the spaces a tokeniser had put
    before punctuation and clitics back in place.

    A reviewer reading "Order #0-0-0" cannot tell which order was meant; "Order #112-3456789-0012"
    says. The phrase comes back as it is where it was cut (MAX_PHRASE_CHARS) or is not found, and
    is cut itself where its digits take it past MAX_PHRASE_CHARS (a run of a thousand digits is one
    "0" to the model). Most phrases are found with string searches; a regular expression (compiled
    once per phrase) only reads text that was tokenised, which the search for digits alone cannot
    place."""
    if phrase.endswith("…") or phrase in text:
        return phrase
    found = _with_digits(phrase, text)
    if found is None:
        match = _written_pattern(phrase).search(text)
        found = match.group() if match is not None else phrase
    return found if len(found) <= MAX_PHRASE_CHARS else found[: MAX_PHRASE_CHARS - 1] + "…"


def _with_digits(phrase: str, text: str) -> str | None:
    """The first span of `text` that reads as `phrase` with each "0" a run of digits; None where
    there is none. The model's text has no digit but those zeros, so a piece between them is
    matched as it is and each run taken whole."""
    pieces = phrase.split(DIGIT_MARK)
    if len(pieces) == 1:
        return None
    start = text.find(pieces[0])
    while start != -1:
        end = start + len(pieces[0])
        for piece in pieces[1:]:
            run = DIGIT_RUN.match(text, end)
            if run is None or not text.startswith(piece, run.end()):
                break
            end = run.end() + len(piece)
        else:
            return text[start:end]
        start = text.find(pieces[0], start + 1)
    return None


# what model_texts' detokenising removes a space before
_DETACHABLE = re.compile(f"{DETACHED_PUNCTUATION}|{CLITICS}", re.IGNORECASE)


@lru_cache(maxsize=4096)
def _written_pattern(phrase: str) -> re.Pattern:
    """A pattern for the texts the model would read as `phrase`, tokenised or not. Cached: a
    tokenised corpus quotes its machine-like phrases ("how can i help you") again and again."""
    parts, end = [], 0
    for m in _DETACHABLE.finditer(phrase):
        parts += [re.escape(phrase[end:m.start()]).replace(DIGIT_MARK, DIGIT_RUN.pattern), " ?", re.escape(m.group())]
        end = m.end()
    parts.append(re.escape(phrase[end:]).replace(DIGIT_MARK, DIGIT_RUN.pattern))
    return re.compile("".join(parts))


def _decode(raw: np.ndarray) -> str:
    text = raw.tobytes().decode("utf-8", errors="replace")
    return text if len(text) <= MAX_PHRASE_CHARS else text[: MAX_PHRASE_CHARS - 1] + "…"
