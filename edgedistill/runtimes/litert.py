"""The LiteRT interpreter on this machine, with its default XNNPACK delegate: held-out outputs for the parity
ladder and accuracy, and batch-1 latency. An int8 file takes and returns int8 tensors: inputs are quantized and
outputs dequantized with the file's own scales and zero points, as an app does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.runtimes import RUNTIMES, Runtime, held_out_bench

_loaded: dict = {}  # (path, mtime, threads) -> interpreter


def interpreter(path: Path, threads: int):
    from edgedistill.mobile_graphs import interpreter as load

    key = (str(path), Path(path).stat().st_mtime_ns, threads)
    if key not in _loaded:
        _loaded[key] = load(path, threads)
    return _loaded[key]


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:
        return np.ascontiguousarray(x, dtype=detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale) if scale else q.astype(np.float32)


def runner(path: Path, threads: int):
    """run(x1) -> float outputs for one batch-1 example."""
    it = interpreter(path, threads)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()

    def run(x1: np.ndarray) -> np.ndarray:
        it.set_tensor(inp["index"], quantize(x1, inp))
        it.invoke()
        return dequantize(it.get_tensor(out["index"]), out)

    return run


def outputs(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    run = runner(path, threads)
    return np.concatenate([run(x[i : i + 1]) for i in range(len(x))])


@RUNTIMES.register("litert")
class LiteRT(Runtime):
    name, label, targets = "litert", "litert-xnnpack", ("litert",)

    @property
    def unavailable(self) -> str:
        from edgedistill.exporters.litert import UNAVAILABLE

        return UNAVAILABLE

    def available(self) -> bool:
        from edgedistill.exporters.litert import available

        return available()

    def outputs(self, artifact, x, spec, threads=1):
        return outputs(artifact.file, x, threads)

    def bench(self, artifact, job):
        def call_one(x1):  # the input quantized once: the interpreter's own time, as ONNX Runtime's is timed
            it = interpreter(artifact.file, job.threads)
            (inp,), (out,) = it.get_input_details(), it.get_output_details()
            q = quantize(x1, inp)
            return lambda: (it.set_tensor(inp["index"], q), it.invoke(), it.get_tensor(out["index"]))

        return held_out_bench(artifact, job, self.label, lambda x: self.outputs(artifact, x, None, job.threads),
                              call_one)
