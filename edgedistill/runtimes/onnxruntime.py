"""ONNX Runtime on this machine: sessions with pinned threads, batched inference, latency, kernel lists."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def session(path: Path, threads: int = 1, optimized_path: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Pinned threads: an unpinned session spins as many threads as cores and disturbs everything else.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def logits(sess, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def latency_ms(sess, example: np.ndarray, warmup: int, repeats: int) -> dict:
    """Batch-1 latency percentiles in ms, warm-up excluded."""
    name = sess.get_inputs()[0].name
    feed = {name: np.ascontiguousarray(example, dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(times)), "repeats": repeats}


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
