"""ONNX Runtime on this machine: sessions with pinned threads, batched inference, latency, kernel lists."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def session(path: Path, threads: int = 1, optimized_path: Path | None = None):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # e.g. its warning on saving an optimized graph, which we do on purpose
    opts = ort.SessionOptions()
    # Pinned threads: an unpinned session spins as many threads as cores and disturbs everything else.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def feed(sess, x: np.ndarray, pad_id: int = 0) -> dict:
    """The session's inputs for a batch: the one input as is (pixels, or token ids), or for a Hugging Face
    graph (input_ids, attention_mask[, token_type_ids]) the mask and segment ids derived from the ids."""
    inputs = sess.get_inputs()
    if len(inputs) == 1:
        return {inputs[0].name: np.ascontiguousarray(x, dtype=DTYPES.get(inputs[0].type, np.float32))}
    ids = np.ascontiguousarray(x, dtype=np.int64)
    derived = {"input_ids": ids, "attention_mask": (ids != pad_id).astype(np.int64),
               "token_type_ids": np.zeros_like(ids)}
    unknown = [i.name for i in inputs if i.name not in derived]
    if unknown:
        from edgedistill.errors import UserError

        raise UserError(f"model input '{unknown[0]}': only token-id inputs (input_ids, attention_mask, "
                        "token_type_ids) can be fed; export the model with those")
    return {i.name: derived[i.name] for i in inputs}


def logits(sess, x: np.ndarray, batch_size: int = 256, pad_id: int = 0) -> np.ndarray:
    return np.concatenate([sess.run(None, feed(sess, x[i : i + batch_size], pad_id))[0]
                           for i in range(0, len(x), batch_size)])


def latency_ms(sess, example: np.ndarray, warmup: int, repeats: int, pad_id: int = 0) -> dict:
    """Batch-1 latency percentiles in ms, warm-up excluded."""
    from edgedistill.runtimes import time_calls

    inputs = feed(sess, example, pad_id)
    return time_calls(lambda: sess.run(None, inputs), warmup, repeats)


def optimized_op_types(path: Path) -> list[str]:
    """Operator types in the graph ONNX Runtime actually executes after its optimizations (fusions
    such as DequantizeLinear-Conv-QuantizeLinear -> QLinearConv happen here, not in the file)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(path, 1, optimized_path=out)
        model = onnx.load(str(out))
    return sorted({n.op_type for n in model.graph.node})


INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd",
                   "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearMul", "DynamicQuantizeMatMul",
                   "MatMulIntegerToFloat", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu"}


def host_threads(wanted: int) -> int:
    return max(1, min(wanted, os.cpu_count() or 1))
