"""A tiny offline Paraformer for sherpa-onnx: the real model format (an ONNX graph taking
the low-frame-rate fbank features and their lengths, giving token logits and their count,
with sherpa-onnx's metadata and a ``tokens.txt``), but its whole vocabulary is two words:
``loud`` when the features' mean is above 0 (speech), else ``quiet`` (digital silence,
whose log-mel features are very negative). No ASR model for sherpa-onnx ships on the
package registries; this one is built in the test, so a recognizer directory is exercised
through sherpa-onnx for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOKENS = ("<blank>", "<s>", "</s>", "quiet", "loud")
FEATURES = 80 * 7  # 80-bin fbank frames, 7 to a low-frame-rate frame


def build(directory: Path) -> Path:
    """Writes ``model.onnx`` and ``tokens.txt`` into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = len(TOKENS)

    def const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    eos = [-100.0] * vocab
    eos[TOKENS.index("</s>")] = 100.0
    nodes = [
        helper.make_node("ReduceMean", ["speech", "frames_and_features"], ["mean"], keepdims=0),  # (N,)
        helper.make_node("Sub", ["mean", "threshold"], ["above"]),
        helper.make_node("Unsqueeze", ["above", "axis1"], ["above1"]),  # (N, 1)
        helper.make_node("Mul", ["above1", "loud_minus_quiet"], ["word_scores"]),  # quiet: -x, loud: +x
        helper.make_node("Add", ["word_scores", "only_words"], ["first"]),  # (N, vocab)
        helper.make_node("Mul", ["above1", "zeros"], ["batch_zeros"]),
        helper.make_node("Add", ["batch_zeros", "eos"], ["second"]),  # then the end
        helper.make_node("Unsqueeze", ["first", "axis1"], ["first1"]),
        helper.make_node("Unsqueeze", ["second", "axis1"], ["second1"]),
        helper.make_node("Concat", ["first1", "second1"], ["logits"], axis=1),  # (N, 2, vocab)
        helper.make_node("Mul", ["speech_lengths", "int_zero"], ["int_zeros"]),
        helper.make_node("Add", ["int_zeros", "int_two"], ["token_num"]),
    ]
    constants = [
        const("frames_and_features", [1, 2], np.int64),
        const("axis1", [1], np.int64),
        const("threshold", 0.0),
        const("loud_minus_quiet", [[0, 0, 0, -1, 1]]),
        const("only_words", [[-100, -100, -100, 0, 0]]),
        const("zeros", [[0] * vocab]),
        const("eos", [eos]),
        const("int_zero", 0, np.int32),
        const("int_two", 2, np.int32),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-paraformer",
        [
            helper.make_tensor_value_info("speech", TensorProto.FLOAT, ["N", "T", FEATURES]),
            helper.make_tensor_value_info("speech_lengths", TensorProto.INT32, ["N"]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, vocab]),
            helper.make_tensor_value_info("token_num", TensorProto.INT32, ["N"]),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {"vocab_size": str(vocab), "lfr_window_size": "7", "lfr_window_shift": "6",
            "neg_mean": ",".join(["0"] * FEATURES), "inv_stddev": ",".join(["1"] * FEATURES)}  # fmt: skip
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "tokens.txt").write_text("".join(f"{token} {i}\n" for i, token in enumerate(TOKENS)))
    return directory
