"""Build the bot-origin ONNX graph: raw UTF-8 bytes in, calibrated probabilities out.

Featurisation runs inside the graph (hashed byte n-grams, see `echogate.features`), so a
client in any language that can pack bytes can run the same file. Inputs:

- ``text_bytes``      uint8 [N]   normalised UTF-8 of all turns of the batch, concatenated
- ``turn_length``     int64 [R]   each turn's bytes in ``text_bytes``, in order (they add up to N)
- ``turn_transcript`` int64 [R]   index of the transcript each turn belongs to (non-decreasing)
- ``turn_weight``     float [R]   weight of each turn in its transcript's score (role-based)
- ``turn_seen``       float [R]   log1p(how many earlier transcripts had this turn), see echogate.corpus
- ``transcript_count`` int64 [1]  number of transcripts T in the batch
- ``turn_repetition`` float [R, 4] the turn's repetition features (echogate.repetition.TURN_FEATURES)
- ``turn_side``       float [R]   1 for the turns a transcript's repetitiveness is over (its agent
                                  turns; every turn of a transcript without any), else 0

Outputs: ``turn_bot_origin`` float [R] and ``transcript_bot_origin`` float [T]; a
transcript of one turn takes that turn's probability (single texts have their own calibration).
``turn_ngrams`` [R] is how many n-grams each turn contributed (its evidence).
``turn_repetitiveness`` [R] = sigmoid(head weights . turn_repetition + bias): how likely the
turn needlessly repeats what was said before in the conversation (see
echogate.training.repetition). ``transcript_repetitiveness`` [T] is the share of the side's
turns that is repetition, within the conversation or of the corpus: the mean over side turns
of 1 - (1 - turn_repetitiveness) * (1 - c / (c + h)), c = exp(turn_seen) - 1 the number of
earlier transcripts with the turn and h = RepetitionHead.corpus_half_count (a turn seen h times
counts as half repetition, one seen a thousand times as nearly all).
A document's raw score is  sum(weights of its n-grams) / (n-gram count) ** power (the weights
held in fixed point, see WEIGHT_TABLE_TYPE; a transcript's count pooled from its turns', and
the powers and the model's intercept, are the calibration's: see Calibration), then Platt-calibrated (separately for turns and transcripts) with the corpus signal added: each
turn's ``turn_seen`` scaled by min(1, its bytes / seen_full_bytes) (see `seen_scale`), a single
text's own, a transcript's role-weighted mean. Working on one flat stream
means no padding: cost is linear in the bytes of the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from echogate.features import (BASE, FUNCTION_SALT_OFFSET, FUNCTION_WORD_TABLE, LETTER_CODES, SALT, SHAPE_CLASSES,
                               SHAPE_SALT_OFFSET, WORD_HASH_LETTERS, WORD_POWERS, WORD_SALT_OFFSET, WORD_TABLE_SIZE,
                               HashSpec)
from echogate.repetition import TURN_FEATURES
from echogate.training.repetition import RepetitionHead

OPSET = 18  # BitwiseAnd
# The n-gram weight table is stored in fixed point: int16 multiples of 2**-bits, bits as many as
# the largest weight leaves room for (weight_fraction_bits; 11 for bot-origin-0.12.3, whose
# weights stay under 16). Half the bytes of an int32 table: the lookups, random over the table,
# miss the core's cache half as often. The orders' weights are then added up byte by byte in
# int32 (which holds the sum of 65,536 int16 values), and the per-turn sums are differences of an
# int64 prefix sum, exact: onnxruntime's CumSum runs several times faster on int64 than on float.
# Rounding moves a weight by at most half a unit (2.4e-4 at 11 bits); against 0.12.2's int32 table
# it moved no probability on the shared files by more than 2.4e-4 (docs/benchmarks.md).
WEIGHT_TABLE_TYPE = np.int16
# Hashes are built in uint32, which wraps modulo 2**32: for a power-of-two table of at most 2**32
# entries the remainder is the one exact arithmetic gives, and onnxruntime's Mul and Add ran 2.7
# times faster on 32-bit than on 64-bit elements (262,144 of them, one thread). Table indices
# are then int32, which GatherElements takes as well.
HASH = TensorProto.UINT32


def hash_const(value: int) -> np.ndarray:
    """A hash constant as the uint32 graph arithmetic uses it (its value modulo 2**32)."""
    return np.array([value % 2**32], np.uint32)


@dataclass(frozen=True)
class Calibration:
    """logit = scale * raw + offset + seen_weight * seen: Platt scaling plus the corpus signal.

    raw = sum(n-gram weights) / count ** count_power. The model trains at 0.5 (a sum of n-gram
    evidence over its standard deviation), and a single text is read so. A dialogue's count is
    pooled from its turns' counts, each raised to turn_count_power and role-weighted: at 1 it is
    the dialogue's n-gram count; at 0.5, with count_power 1, the dialogue's raw score is the mean
    of its turns' single-text scores (each turn's sum over sqrt(its count)), weighted by
    role and sqrt(count), so it does not grow with the number of turns whichever way they lean
    (TrainConfig.transcript_count_power and transcript_turn_count_power; docs/benchmarks.md).
    The model's intercept is not in `raw`: the offset takes its place, fitted on held-out scores,
    so the calibration does not inherit each held-out fold model's own intercept (a constant of
    what that fold left out of training) times its slope."""

    scale: float
    offset: float
    seen_weight: float = 0.0
    count_power: float = 0.5
    turn_count_power: float = 1.0


def seen_scale(turn_bytes: np.ndarray, seen_full_bytes: int) -> np.ndarray:
    """How much of a turn's corpus signal counts: min(1, its bytes / seen_full_bytes).

    People repeat short turns and almost never long ones. In streams of 3,000 turns of a file
    (slot-masked keys), human turns of 3-4 words had an earlier twin 8-40% of the time (SGD 26%,
    Taskmaster 40%, STAR customers 14%) and turns of 12-19 words 0.1-4%, while STAR's template
    turns had one 73-98% of the time at every length. A repeat of "thank you so much" says
    little about who wrote it; a repeat of a 15-word sentence says a script did. The graph
    computes the same from the turn lengths it already has."""
    return np.minimum(np.asarray(turn_bytes, np.float64) / seen_full_bytes, 1.0)


def weight_fraction_bits(weights: np.ndarray) -> int:
    """The most fractional bits with which every weight fits WEIGHT_TABLE_TYPE once rounded."""
    top = float(np.abs(np.asarray(weights, np.float64)).max(initial=0))
    if not np.isfinite(top):
        raise ValueError("n-gram weights must be finite")
    limit = np.iinfo(WEIGHT_TABLE_TYPE).max
    bits = 15 if top == 0 else 14 - math.floor(math.log2(top))  # top * 2**bits in [2**14, 2**15)
    while np.rint(top * 2.0**bits) > limit:  # rounding may reach 2**15 itself
        bits -= 1
    return bits


def fixed_point_weights(weights: np.ndarray) -> tuple[np.ndarray, int]:
    """The weight table as the graph stores it, and its unit's bits: WEIGHT_TABLE_TYPE multiples
    of 2**-bits."""
    bits = weight_fraction_bits(weights)
    return np.rint(np.asarray(weights, np.float64) * 2.0**bits).astype(WEIGHT_TABLE_TYPE), bits


def lookup(node, table: str, index: str, name: str) -> str:
    """table[index] for a 1-D table and index: GatherElements, the same values as Gather, which
    onnxruntime's CPU provider runs about seven times faster on 1-D data (0.15 against 1.0 ms
    for 190,000 lookups, whether the table has 256 entries or half a million)."""
    return node("GatherElements", [table, index], name, axis=0)


def table_index(node, hashed: str, prefix: str) -> str:
    """The weight table's index of uint32 hashes: their remainder by the table size (a bitwise
    AND, the size being a power of two), as int32 for GatherElements."""
    return node("Cast", [node("BitwiseAnd", [hashed, "table_mask"], prefix + "h_u32")], prefix + "h",
                to=TensorProto.INT32)


@dataclass(frozen=True)
class WordNodes:
    """Names of the graph's word tensors (echogate.features._words): `first` marks each word's
    first byte, `word` numbers each byte's word (slot 0 before the first), `hashes` [words + 1]
    is each word's hash."""

    letter: str
    first: str
    word: str
    hashes: str


def words(node, const, x: str, size: str, index: str, same_turn: str) -> WordNodes:
    """ONNX ops for echogate.features._words. Words are numbered by a cumulative sum of their
    first letters (a letter after a non-letter or at a turn's first byte); slot 0 stands before
    the first word, so a batch without letters needs no special case. A word's hash is a
    difference of prefix sums of its letters' terms between its first byte and the next word's
    (bytes between words add nothing), which needs no scatter."""
    codes = lookup(node, const("letter_codes", LETTER_CODES), x, "f_codes")
    letter = node("Greater", [codes, "zero_i"], "f_letter")
    # the byte before each byte (none before the first): a letter of the same turn?
    prev_letter = node("Slice", [node("Concat", [const("f_false", np.array([False])), letter], "f_letter_pad", axis=0),
                                 "zero_i", size], "f_prev_letter")
    first = node("And", [letter, node("Not", [node("And", [prev_letter, same_turn], "f_continues")], "f_breaks")],
                 "f_first")
    word = node("CumSum", [node("Cast", [first], "f_first_i", to=TensorProto.INT64), "axis0"], "f_word")
    word_starts = node("Concat", ["zero_i", node("Compress", [index, first], "f_starts", axis=0)], "f_word_starts",
                       axis=0)
    next_starts = node("Concat", [node("Slice", [word_starts, "one_i", "end_i"], "f_later_starts"), size],
                       "f_next_starts", axis=0)
    position = node("Sub", [index, lookup(node, word_starts, word, "f_word_start")], "f_position")
    power = lookup(node, const("word_powers", WORD_POWERS),
                   node("Min", [position, const("f_last", np.array(WORD_HASH_LETTERS, np.int64))], "f_position_c"),
                   "f_power")
    terms = node("Mul", [codes, power], "f_terms")  # 0 for every byte that is not a letter
    prefix = node("Concat", ["zero_i", node("CumSum", [terms, "axis0"], "f_terms_cs")], "f_prefix", axis=0)
    sums = node("Sub", [lookup(node, prefix, next_starts, "f_prefix_end"),
                        lookup(node, prefix, word_starts, "f_prefix_start")], "f_word_sum")
    # sums >= 0 and a power-of-two table: the remainder is a bitwise AND
    hashes = node("BitwiseAnd", [sums, const("word_table_mask", np.array(WORD_TABLE_SIZE - 1, np.int64))],
                  "f_word_hash")
    return WordNodes(letter, first, word, hashes)


def function_word_stream(node, const, x: str, shape: str, w: WordNodes) -> str:
    """ONNX ops for echogate.features.function_word_stream: function words' bytes kept,
    every other byte its writing-style class."""
    is_function = lookup(node, const("function_words", FUNCTION_WORD_TABLE), w.hashes, "f_is_function")
    keep = node("And", [w.letter, lookup(node, is_function, w.word, "f_keep_word")], "f_keep")
    # shape + keep * (x - shape), wrapping in uint32: onnxruntime's Where took 1.1 ms for a batch's
    # 190,000 bytes, these three 0.3
    return node("Add", [shape, node("Mul", [node("Cast", [keep], "f_keep_i", to=HASH),
                                             node("Sub", [x, shape], "f_x_minus_shape")], "f_kept")], "f_stream")


def byte_ngram_sums(node, const, weights: list[tuple[int, str]], starts: str, length: str) -> str:
    """Per-turn fixed-point weight sums of the byte streams' n-grams of every order, from one
    prefix sum over the stream. `weights` are (order, its n-grams' weights by starting byte,
    int32, zero-padded to N + 1 entries).

    The orders' weights add up byte by byte, and a turn's bytes [start, start + len) sum every
    n-gram starting in it; those starting in its last n - 1 bytes run past its end (or past the
    stream's, where the padding holds 0) and are taken off again: at most max order - 1 lookups
    per turn and order. One CumSum over the stream instead of one per order (six for the shipped
    orders), which is most of what the n-gram sums cost."""
    total = weights[0][1]
    for i, (_, w) in enumerate(weights[1:]):
        total = node("Add", [total, w], f"b_total{i}")
    # int32 holds any byte's total (one int16 weight per order); int64 holds their running sum
    total = node("Cast", [total], "b_total64", to=TensorProto.INT64)
    prefix = node("Concat", ["zero_i", node("CumSum", [total, "axis0"], "b_cs")], "b_prefix", axis=0)
    end = node("Add", [starts, length], "b_end")
    turn_sum = node("Sub", [lookup(node, prefix, end, "b_p_hi"), lookup(node, prefix, starts, "b_p_lo")], "b_whole")
    back = max(n for n, _ in weights) - 1
    if back == 0:
        return turn_sum
    # [R, back], column k - 1: the turn's k-th last byte, and whether the turn has k bytes
    ks = const("b_back", np.arange(1, back + 1, dtype=np.int64))
    axis1 = const("b_axis1", np.array([1], np.int64))
    tail_byte = node("Max", [node("Sub", [node("Unsqueeze", [end, axis1], "b_end_col"), ks], "b_tail_raw"), "zero_i"],
                     "b_tail_byte")
    inside = node("Cast", [node("GreaterOrEqual", [node("Unsqueeze", [length, axis1], "b_len_col"), ks], "b_inside_b")],
                  "b_inside", to=TensorProto.INT32)
    # the tail bytes flattened, for GatherElements (a 1-D lookup; see `lookup`), then back to [R, back]
    tail_flat = node("Reshape", [tail_byte, const("b_flat", np.array([-1], np.int64))], "b_tail_flat")
    tail_shape = node("Shape", [tail_byte], "b_tail_shape")
    leaving: dict[int, str] = {}  # order -> [R, back]: 1 where an n-gram starting there leaves the turn
    past_end = None  # [R, back]: the weights of those n-grams, every order's added up
    for n, w in weights:
        if n == 1:
            continue
        if n not in leaving:
            leaving[n] = node("Mul", [inside, const(f"b_k_lt_{n}", (np.arange(1, back + 1) < n).astype(np.int32))],
                              f"b_leaving{n}")
        tail = node("Reshape", [lookup(node, w, tail_flat, f"{w}_tail_flat"), tail_shape], f"{w}_tail")
        part = node("Mul", [tail, leaving[n]], f"{w}_tail_leaving")
        past_end = part if past_end is None else node("Add", [past_end, part], f"{w}_past_end")
    per_turn = node("Cast", [node("ReduceSum", [past_end, axis1], "b_past_end32", keepdims=0)], "b_past_end",
                    to=TensorProto.INT64)
    return node("Sub", [turn_sum, per_turn], "b_sum")


def word_ngram_sums(node, const, spec: HashSpec, w: WordNodes, starts: str, length: str) -> tuple[list[str], list[str]]:
    """Per-turn fixed-point weight sums and counts of the word n-grams (echogate.features.
    word_ngram_spans). A turn's words are a contiguous run of word numbers: (lo, hi], lo and hi
    the number of words begun before its first byte and before its end, so each order's sum is a
    difference of a prefix sum over the words, as the byte orders' sums are."""
    begun = node("Concat", ["zero_i", w.word], "w_begun", axis=0)  # words begun before each byte, and in all
    lo = lookup(node, begun, starts, "w_lo")
    hi = lookup(node, begun, node("Add", [starts, length], "w_turn_end"), "w_hi")
    word_hashes = node("Cast", [node("Slice", [w.hashes, "one_i", "end_i"], "w_hashes64")], "w_hashes",
                       to=HASH)  # words 1.., slot 0 dropped
    sums, counts = [], []
    for n in sorted(spec.word_orders):
        p = f"w{n}_"
        salt = const(p + "salt", hash_const((n + WORD_SALT_OFFSET) * SALT))
        g = node("Mul", [word_hashes, const(p + "b1", hash_const(BASE))], p + "g1")
        if n == 2:  # word j with word j + 1; pairs across turns are computed but fall outside every turn's range
            g = node("Add", [node("Slice", [g, "zero_i", const(p + "last", np.array([-1], np.int64))], p + "head"),
                             node("Mul", [node("Slice", [word_hashes, "one_i", "end_i"], p + "next"),
                                          const(p + "b2", hash_const(pow(BASE, 2, spec.table_size)))],
                                  p + "tail")], p + "g2")
        h = table_index(node, node("Add", [g, salt], p + "gs"), p)
        weights = node("Cast", [lookup(node, "ngram_weights", h, p + "w")], p + "w64", to=TensorProto.INT64)
        prefix = node("Concat", ["zero_i", node("CumSum", [weights, "axis0"], p + "cs")], p + "prefix", axis=0)
        # turn (lo, hi] holds max(hi - lo - n + 1, 0) n-grams, the first at word index lo (0-based)
        count = node("Max", [node("Sub", [node("Sub", [hi, lo], p + "words"),
                                          const(p + "nm1", np.array([n - 1], np.int64))], p + "raw_count"),
                             "zero_i"], p + "count")
        # a turn without n-grams may begin past the last one (lo = the words' count): clamped, as
        # its sum is empty either way
        m = node("Shape", [h], p + "m")
        first = node("Min", [lo, m], p + "lo")
        end = node("Min", [node("Add", [lo, count], p + "end_raw"), m], p + "end")
        sums.append(node("Sub", [lookup(node, prefix, end, p + "p_hi"), lookup(node, prefix, first, p + "p_lo")],
                         p + "sum"))
        counts.append(node("Cast", [count], p + "count_f", to=TensorProto.FLOAT))
    return sums, counts


def build_graph(
    spec: HashSpec,
    weights: np.ndarray,
    turn_calibration: Calibration,
    transcript_calibration: Calibration,
    repetition_head: RepetitionHead,
    metadata: dict[str, str],
    seen_full_bytes: int,
) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    table, fraction_bits = fixed_point_weights(weights)
    inits = [
        numpy_helper.from_array(table, "ngram_weights"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_i"),
        numpy_helper.from_array(np.array([1], np.int64), "one_i"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end_i"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one_f"),
        numpy_helper.from_array(hash_const(spec.table_size - 1), "table_mask"),
    ]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = node("Cast", ["text_bytes"], "x", to=HASH)  # the bytes, to hash
    byte_code = node("Cast", ["text_bytes"], "byte_code", to=TensorProto.INT32)  # the bytes, to look up by
    size = node("Shape", [x], "n_bytes")
    axis0 = const("axis0", np.array(0, np.int64))
    index = node("Range", [const("zero_s", np.array(0, np.int64)), node("Squeeze", [size], "n_bytes_s"),
                           const("one_s", np.array(1, np.int64))], "byte_index")
    n_turns = node("Shape", ["turn_transcript"], "n_turns")
    zeros_docs = node("ConstantOfShape", ["transcript_count"], "zeros_docs",
                      value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    # Turn offsets in the flat stream, from the turns' lengths. An n-gram of turn r starting
    # inside it is valid iff it ends inside it, so turn r's order-n n-grams are exactly positions
    # [start_r, start_r + max(len_r - n + 1, 0)) of that order's hash array: per-turn sums are
    # differences of a prefix sum (byte_ngram_sums, word_ngram_sums), with no scatter over the
    # n-grams and no mask over the stream. Lengths come in rather than each byte's turn: finding
    # where turns begin in a per-byte array took onnxruntime's Compress about 6 ns a byte.
    length = "turn_length"
    starts = node("CumSum", [length, axis0], "turn_start", exclusive=1)
    size_1 = node("Add", [size, "one_i"], "n_bytes_1")
    # per byte: does it continue the turn of the byte before it? (no at each turn's first byte;
    # an empty turn marks the next turn's first byte, or the slot past the stream, dropped: where
    # starts repeat, every write is the same True)
    begins = node("ScatterElements", [
        node("ConstantOfShape", [size_1], "no_bytes_begin", value=helper.make_tensor("f", TensorProto.BOOL, [1], [False])),
        starts,
        node("ConstantOfShape", [n_turns], "turns_begin", value=helper.make_tensor("t", TensorProto.BOOL, [1], [True]))],
        "turn_begins_1", axis=0)
    same_turn = node("Not", [node("Slice", [begins, "zero_i", size], "turn_begins")], "same_turn")

    streams = [(x, spec.orders, 0, "o")]
    shape = None
    if spec.shape_orders or spec.function_orders:
        shape = node("Cast", [lookup(node, const("shape_classes", SHAPE_CLASSES), byte_code, "shape_u8")], "shape",
                     to=HASH)
    if spec.shape_orders:
        streams.append((shape, spec.shape_orders, SHAPE_SALT_OFFSET, "s"))
    found_words = (words(node, const, byte_code, size, index, same_turn)
                   if spec.function_orders or spec.word_orders else None)
    if spec.function_orders:
        streams.append((function_word_stream(node, const, x, shape, found_words), spec.function_orders,
                        FUNCTION_SALT_OFFSET, "f"))
    sums, counts, byte_weights = [], [], []
    order_nodes: dict[int, tuple[str, str]] = {}  # byte order -> (its padding, its n-grams per turn)
    for data, orders, salt_offset, tag in streams:
        polynomials = {1: data}

        def polynomial(n: int) -> str:
            """g_n[i] = sum_k<n data[i+k] * BASE**k (mod table size) for the n-grams that fit in
            the stream, as g_a[i] + BASE**a * g_(n-a)[i+a] with a the largest power of two below n:
            orders 4 and 6 cost three Slice-Mul-Adds (g_2, g_4, g_6) where adding one byte at a time
            took five. In uint32, modulo 2**32 (see HASH)."""
            if n not in polynomials:
                a = 1 << ((n - 1).bit_length() - 1)
                p = f"{tag}g{n}_"
                m = node("Max", [node("Sub", [size, const(p + "nm1", np.array([n - 1], np.int64))], p + "m_raw"),
                                 "zero_i"], p + "m")
                shift = const(p + "a", np.array([a], np.int64))
                head = node("Slice", [polynomial(a), "zero_i", m], p + "head")
                tail = node("Slice", [polynomial(n - a), shift, node("Add", [m, shift], p + "tail_end")], p + "tail")
                power = const(p + "b", hash_const(pow(BASE, a, spec.table_size)))
                polynomials[n] = node("Add", [head, node("Mul", [tail, power], p + "tail_b")], p + "g")
            return polynomials[n]

        for n in sorted(orders):
            p = f"{tag}{n}_"
            salt = const(p + "salt", hash_const((n + salt_offset) * SALT))
            h = table_index(node, node("Add", [polynomial(n), salt], p + "gs"), p)
            if n not in order_nodes:
                # N - n + 1 n-grams (none in fewer bytes) padded with min(n, N + 1) zeros to N + 1
                # entries: the n-gram starting at byte i is entry i of every order
                pad_end = node("Min", [const(f"n{n}", np.array([n], np.int64)), size_1], f"n{n}_pad_end")
                count = node("Max", [node("Sub", [length, const(f"n{n}_m1", np.array([n - 1], np.int64))],
                                          f"n{n}_len_m"), "zero_i"], f"n{n}_count")
                order_nodes[n] = (node("Concat", ["zero_i", pad_end], f"n{n}_pads", axis=0),
                                  node("Cast", [count], f"n{n}_count_f", to=TensorProto.FLOAT))
            pads, count = order_nodes[n]
            byte_weights.append((n, node("Pad", [node("Cast", [lookup(node, "ngram_weights", h, p + "w")], p + "w32",
                                                      to=TensorProto.INT32), pads], p + "w_pad")))
            counts.append(count)
    if byte_weights:
        sums.append(byte_ngram_sums(node, const, byte_weights, starts, length))
    if spec.word_orders:
        word_sums, word_counts = word_ngram_sums(node, const, spec, found_words, starts, length)
        sums += word_sums
        counts += word_counts
    total = sums[0]
    for i, part in enumerate(sums[1:]):  # ONNX's Sum takes no integers
        total = node("Add", [total, part], f"turn_sum_fixed{i}")
    turn_sum = node("Mul", [node("Cast", [total], "turn_sum_f", to=TensorProto.FLOAT),
                            const("weight_unit", np.array(2.0 ** -fraction_bits, np.float32))], "turn_sum")
    turn_cnt = node("Sum", counts, "turn_ngrams")

    def power(x: str, p: float, out: str) -> str:
        """x ** p: x itself at 1, a Sqrt at 0.5 (cheaper than Pow), else Pow."""
        if p == 1:
            return x
        return node("Sqrt", [x], out) if p == 0.5 else node("Pow", [x, const(out + "_p", np.array(p, np.float32))], out)

    def calibrated(total: str, count: str, seen: str, cal: Calibration, out: str) -> str:
        norm = power(node("Max", [count, "one_f"], out + "_cnt1"), cal.count_power, out + "_norm")
        raw = node("Div", [total, norm], out + "_raw")
        a = const(out + "_a", np.array(cal.scale, np.float32))
        b = const(out + "_b", np.array(cal.offset, np.float32))
        beta = const(out + "_seen_w", np.array(cal.seen_weight, np.float32))
        logit = node("Add", [node("Add", [node("Mul", [raw, a], out + "_ar"), b], out + "_arb"),
                             node("Mul", [seen, beta], out + "_seen")], out + "_logit")
        return node("Sigmoid", [logit], out)

    # the corpus signal as calibration reads it: scaled down for short turns (seen_scale)
    length_factor = node("Min", [node("Mul", [node("Cast", [length], "turn_bytes_f", to=TensorProto.FLOAT),
                                              const("per_full_bytes", np.array(1.0 / seen_full_bytes, np.float32))],
                                      "turn_bytes_share"), "one_f"], "seen_scale")
    scaled_seen = node("Mul", ["turn_seen", length_factor], "turn_seen_scaled")
    turn_prob = calibrated(turn_sum, turn_cnt, scaled_seen, turn_calibration, "turn_bot_origin")

    def per_doc(values: str, name: str) -> str:
        return node("ScatterElements", [zeros_docs, "turn_transcript", values], name, axis=0, reduction="add")

    doc_sum = per_doc(node("Mul", [turn_sum, "turn_weight"], "ws"), "doc_sum")
    turn_evidence = power(turn_cnt, transcript_calibration.turn_count_power, "turn_cnt_q")
    doc_cnt = per_doc(node("Mul", [turn_evidence, "turn_weight"], "wc"), "doc_cnt")
    # the transcript's corpus signal: role-weighted mean of its turns' seen-before values
    doc_seen = node("Div", [per_doc(node("Mul", [scaled_seen, "turn_weight"], "wseen"), "doc_seen_sum"),
                            node("Max", [per_doc("turn_weight", "doc_weight"), const("eps", np.array(1e-6, np.float32))],
                                 "doc_weight1")], "doc_seen")
    dialogue_prob = calibrated(doc_sum, doc_cnt, doc_seen, transcript_calibration, "dialogue_bot_origin")
    # A one-turn transcript (a plain text, a single logged message) is a single text: it takes
    # its turn's probability, calibrated on single texts, not the dialogue calibration.
    doc_turns = per_doc(node("ConstantOfShape", ["n_turns"], "ones_turns",
                             value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0])), "doc_turns")
    single = node("Equal", [doc_turns, "one_f"], "single_turn")
    node("Where", [single, per_doc(turn_prob, "doc_turn_prob"), dialogue_prob], "transcript_bot_origin")

    # Repetitiveness head: a logistic map of the turn's repetition features, then the side's mean
    # of "repeats the conversation or the corpus" per transcript.
    head_w = const("repetition_weights", np.array(repetition_head.weights, np.float32).reshape(-1, 1))
    head_logit = node("Add", [node("MatMul", ["turn_repetition", head_w], "rep_wx"),
                              const("repetition_bias", np.array([repetition_head.bias], np.float32))], "rep_logit")
    turn_rep = node("Sigmoid", [node("Squeeze", [head_logit, const("axis1", np.array([1], np.int64))], "rep_logit1")],
                    "turn_repetitiveness")
    seen_count = node("Sub", [node("Exp", ["turn_seen"], "exp_seen"), "one_f"], "seen_count")
    half = const("corpus_half_count", np.array(repetition_head.corpus_half_count, np.float32))
    corpus_fresh = node("Div", [half, node("Add", [seen_count, half], "seen_plus_half")], "corpus_fresh")
    not_repeated = node("Mul", [node("Sub", ["one_f", turn_rep], "rep_fresh"), corpus_fresh], "fresh")
    side_sum = per_doc(node("Mul", [node("Sub", ["one_f", not_repeated], "repeated"), "turn_side"], "side_rep"),
                       "doc_rep_sum")
    side_cnt = node("Max", [per_doc("turn_side", "doc_side"), const("eps1", np.array(1e-6, np.float32))], "doc_side1")
    node("Div", [side_sum, side_cnt], "transcript_repetitiveness")

    graph = helper.make_graph(
        nodes,
        "echogate_bot_origin",
        inputs=[
            helper.make_tensor_value_info("text_bytes", TensorProto.UINT8, ["N"]),
            helper.make_tensor_value_info("turn_length", TensorProto.INT64, ["R"]),
            helper.make_tensor_value_info("turn_transcript", TensorProto.INT64, ["R"]),
            helper.make_tensor_value_info("turn_weight", TensorProto.FLOAT, ["R"]),
            helper.make_tensor_value_info("turn_seen", TensorProto.FLOAT, ["R"]),
            helper.make_tensor_value_info("transcript_count", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("turn_repetition", TensorProto.FLOAT, ["R", len(TURN_FEATURES)]),
            helper.make_tensor_value_info("turn_side", TensorProto.FLOAT, ["R"]),
        ],
        outputs=[
            helper.make_tensor_value_info("turn_bot_origin", TensorProto.FLOAT, ["R"]),
            helper.make_tensor_value_info("transcript_bot_origin", TensorProto.FLOAT, ["T"]),
            helper.make_tensor_value_info("turn_ngrams", TensorProto.FLOAT, ["R"]),
            helper.make_tensor_value_info("turn_repetitiveness", TensorProto.FLOAT, ["R"]),
            helper.make_tensor_value_info("transcript_repetitiveness", TensorProto.FLOAT, ["T"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="echogate")
    model.ir_version = 8
    onnx.helper.set_model_props(model, {**metadata, **spec.to_metadata(), "seen_full_bytes": str(seen_full_bytes),
                                          "repetition_features": ",".join(TURN_FEATURES)})
    onnx.checker.check_model(model)
    return model
