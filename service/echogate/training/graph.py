"""Build the bot-origin ONNX graph: raw UTF-8 bytes in, calibrated probabilities out.

Featurisation runs inside the graph (hashed byte n-grams, see `echogate.features`), so a
client in any language that can pack bytes can run the same file. Inputs:

- ``text_bytes``      uint8 [N]   normalised UTF-8 of all turns of the batch, concatenated
- ``byte_turn``       int64 [N]   index of the turn each byte belongs to (non-decreasing)
- ``turn_transcript`` int64 [R]   index of the transcript each turn belongs to
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
A document's raw score is  sum(weights of its n-grams) / sqrt(n-gram count) + intercept,
then Platt-calibrated (separately for turns and transcripts). Working on one flat stream
means no padding: cost is linear in the bytes of the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from echogate.features import (BASE, FUNCTION_SALT_OFFSET, FUNCTION_WORD_TABLE, LETTER_CODES, SALT, SHAPE_CLASSES,
                               SHAPE_SALT_OFFSET, WORD_HASH_LETTERS, WORD_POWERS, WORD_TABLE_SIZE, HashSpec)
from echogate.repetition import TURN_FEATURES
from echogate.training.repetition import RepetitionHead

OPSET = 17


@dataclass(frozen=True)
class Calibration:
    """logit = scale * raw + offset + seen_weight * seen: Platt scaling plus the corpus signal."""

    scale: float
    offset: float
    seen_weight: float = 0.0


def function_word_stream(node, const, x: str, shape: str, size: str) -> str:
    """ONNX ops for echogate.features.function_word_stream: function words' bytes kept,
    every other byte its writing-style class. Words are numbered by a cumulative sum of
    their first letters (a letter after a non-letter or at a turn's first byte); slot 0
    stands before the first word, so a batch without letters needs no special case."""
    codes = node("Gather", [const("letter_codes", LETTER_CODES), x], "f_codes", axis=0)
    letter = node("Greater", [codes, "zero_i"], "f_letter")
    # the byte before each byte (none before the first): a letter of the same turn?
    prev_letter = node("Slice", [node("Concat", [const("f_false", np.array([False])), letter], "f_letter_pad", axis=0),
                                 "zero_i", size], "f_prev_letter")
    prev_turn = node("Slice", [node("Concat", [const("f_minus1", np.array([-1], np.int64)), "byte_turn"],
                                    "f_turn_pad", axis=0), "zero_i", size], "f_prev_turn")
    continues = node("And", [prev_letter, node("Equal", [prev_turn, "byte_turn"], "f_same_turn")], "f_continues")
    first = node("And", [letter, node("Not", [continues], "f_breaks")], "f_first")
    word = node("CumSum", [node("Cast", [first], "f_first_i", to=TensorProto.INT64), "axis0"], "f_word")
    word_starts = node("Concat", ["zero_i", node("Reshape", [node("NonZero", [first], "f_starts2"),
                                                              const("f_flat", np.array([-1], np.int64))],
                                                 "f_starts1")], "f_word_starts", axis=0)
    ones = node("ConstantOfShape", [size], "f_ones", value=helper.make_tensor("o", TensorProto.INT64, [1], [1]))
    position = node("Sub", [node("CumSum", [ones, "axis0"], "f_index", exclusive=1),
                            node("Gather", [word_starts, word], "f_word_start", axis=0)], "f_position")
    power = node("Gather", [const("word_powers", WORD_POWERS),
                            node("Min", [position, const("f_last", np.array(WORD_HASH_LETTERS, np.int64))],
                                 "f_position_c")], "f_power", axis=0)
    terms = node("Mul", [codes, power], "f_terms")  # 0 for every byte that is not a letter
    sums = node("ScatterElements", [node("ConstantOfShape", [node("Shape", [word_starts], "f_n_words")], "f_zeros",
                                         value=helper.make_tensor("z", TensorProto.INT64, [1], [0])), word, terms],
                "f_word_sum", axis=0, reduction="add")
    hashes = node("Mod", [sums, const("word_table_size", np.array(WORD_TABLE_SIZE, np.int64))], "f_word_hash")
    is_function = node("Gather", [const("function_words", FUNCTION_WORD_TABLE), hashes], "f_is_function", axis=0)
    keep = node("And", [letter, node("Gather", [is_function, word], "f_keep_word", axis=0)], "f_keep")
    return node("Where", [keep, x, shape], "f_stream")


def build_graph(
    spec: HashSpec,
    weights: np.ndarray,
    intercept: float,
    turn_calibration: Calibration,
    transcript_calibration: Calibration,
    repetition_head: RepetitionHead,
    metadata: dict[str, str],
) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "ngram_weights"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_i"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one_f"),
        numpy_helper.from_array(np.array(intercept, np.float32), "intercept"),
        numpy_helper.from_array(np.array(spec.table_size, np.int64), "table_size"),
    ]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = node("Cast", ["text_bytes"], "x", to=TensorProto.INT64)
    size = node("Shape", [x], "n_bytes")
    zeros_turns = node("ConstantOfShape", [node("Shape", ["turn_transcript"], "n_turns")], "zeros_turns",
                       value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    zeros_docs = node("ConstantOfShape", ["transcript_count"], "zeros_docs",
                      value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))

    # Turn lengths and offsets in the flat stream. An n-gram of turn r starting inside it is
    # valid iff it ends inside it, so turn r's order-n n-grams are exactly positions
    # [start_r, start_r + max(len_r - n + 1, 0)) of that order's hash array: per-turn sums are
    # differences of a prefix sum, with no scatter over the n-grams and no boundary mask.
    ones = node("ConstantOfShape", [node("Shape", ["byte_turn"], "n_bytes_bt")], "ones_bytes",
                value=helper.make_tensor("o", TensorProto.FLOAT, [1], [1.0]))
    length_f = node("ScatterElements", [zeros_turns, "byte_turn", ones], "turn_length_f", axis=0, reduction="add")
    length = node("Cast", [length_f], "turn_length", to=TensorProto.INT64)
    starts = node("CumSum", [length, const("axis0", np.array(0, np.int64))], "turn_start", exclusive=1)
    zero_d = const("zero_d", np.array([0.0], np.float64))

    streams = [(x, spec.orders, 0, "o")]
    shape = None
    if spec.shape_orders or spec.function_orders:
        shape = node("Cast", [node("Gather", [const("shape_classes", SHAPE_CLASSES), x], "shape_u8", axis=0)],
                     "shape", to=TensorProto.INT64)
    if spec.shape_orders:
        streams.append((shape, spec.shape_orders, SHAPE_SALT_OFFSET, "s"))
    if spec.function_orders:
        streams.append((function_word_stream(node, const, x, shape, size), spec.function_orders,
                        FUNCTION_SALT_OFFSET, "f"))
    sums, counts = [], []
    for data, orders, salt_offset, tag in streams:
        # Polynomial hashes built incrementally: g_n[i] = g_(n-1)[i] + data[i+n-1] * BASE**(n-1),
        # so each order adds one Slice-Mul-Add instead of recomputing n terms.
        g, g_order = None, 0
        for n in sorted(orders):
            p = f"{tag}{n}_"
            nm1 = const(p + "nm1", np.array([n - 1], np.int64))
            m = node("Max", [node("Sub", [size, nm1], p + "m_raw"), "zero_i"], p + "m")
            if g is not None:
                g = node("Slice", [g, "zero_i", m], p + "g_prev")
            for k in range(g_order, n):
                start = const(p + f"s{k}", np.array([k], np.int64))
                part = node("Slice", [data, start, node("Add", [m, start], p + f"e{k}")], p + f"x{k}")
                if k:
                    part = node("Mul", [part, const(p + f"b{k}", np.array(BASE**k, np.int64))], p + f"xb{k}")
                g = part if g is None else node("Add", [g, part], p + f"g{k}")
            g_order = n
            salt = const(p + "salt", np.array((n + salt_offset) * SALT, np.int64))
            h = node("Mod", [node("Add", [g, salt], p + "gs"), "table_size"], p + "h")
            w = node("Cast", [node("Gather", ["ngram_weights", h], p + "w", axis=0)], p + "w64", to=TensorProto.DOUBLE)
            prefix = node("Concat", [zero_d, node("CumSum", [w, "axis0"], p + "cs")], p + "prefix", axis=0)
            count = node("Max", [node("Sub", [length, nm1], p + "len_m"), "zero_i"], p + "count")
            lo = node("Min", [starts, m], p + "lo")
            hi = node("Min", [node("Add", [starts, count], p + "end"), m], p + "hi")
            sums.append(node("Sub", [node("Gather", [prefix, hi], p + "p_hi", axis=0),
                                     node("Gather", [prefix, lo], p + "p_lo", axis=0)], p + "sum"))
            counts.append(node("Cast", [count], p + "count_f", to=TensorProto.FLOAT))
    turn_sum = node("Cast", [node("Sum", sums, "turn_sum64")], "turn_sum", to=TensorProto.FLOAT)
    turn_cnt = node("Sum", counts, "turn_ngrams")

    def calibrated(total: str, count: str, seen: str, cal: Calibration, out: str) -> str:
        norm = node("Sqrt", [node("Max", [count, "one_f"], out + "_cnt1")], out + "_norm")
        raw = node("Add", [node("Div", [total, norm], out + "_mean"), "intercept"], out + "_raw")
        a = const(out + "_a", np.array(cal.scale, np.float32))
        b = const(out + "_b", np.array(cal.offset, np.float32))
        beta = const(out + "_seen_w", np.array(cal.seen_weight, np.float32))
        logit = node("Add", [node("Add", [node("Mul", [raw, a], out + "_ar"), b], out + "_arb"),
                             node("Mul", [seen, beta], out + "_seen")], out + "_logit")
        return node("Sigmoid", [logit], out)

    turn_prob = calibrated(turn_sum, turn_cnt, "turn_seen", turn_calibration, "turn_bot_origin")

    def per_doc(values: str, name: str) -> str:
        return node("ScatterElements", [zeros_docs, "turn_transcript", values], name, axis=0, reduction="add")

    doc_sum = per_doc(node("Mul", [turn_sum, "turn_weight"], "ws"), "doc_sum")
    doc_cnt = per_doc(node("Mul", [turn_cnt, "turn_weight"], "wc"), "doc_cnt")
    # the transcript's corpus signal: role-weighted mean of its turns' seen-before values
    doc_seen = node("Div", [per_doc(node("Mul", ["turn_seen", "turn_weight"], "wseen"), "doc_seen_sum"),
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
            helper.make_tensor_value_info("byte_turn", TensorProto.INT64, ["N"]),
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
    onnx.helper.set_model_props(model, {**metadata, **spec.to_metadata(),
                                          "repetition_features": ",".join(TURN_FEATURES)})
    onnx.checker.check_model(model)
    return model
