"""Latency of a torch model on this machine, the way the artifacts run: an fp32 ONNX copy in ONNX Runtime,
batch 1, pinned threads, warm-up excluded. Labelled "measured" when this machine can stand in for the
target and "measured-host" when it cannot (then the figure only ranks models against each other)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from torch import nn

from edgedistill.exporters.onnx import export_onnx, weight_bytes
from edgedistill.models import ModelSpec
from edgedistill.runtimes import onnxruntime as ortr


def label(target) -> str:
    return "measured" if target.runs_on_host() else "measured-host"


def measure(module: nn.Module, spec: ModelSpec, target, warmup: int = 20, repeats: int = 200) -> dict:
    """{"p50", "p90", "p99", "kind", "threads", "onnx_weight_bytes"} for an fp32 ONNX export of `module`."""
    cpu_copy = copy.deepcopy(module).cpu().eval()
    threads = ortr.host_threads(target.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(cpu_copy, spec, path, 18)
        sess = ortr.session(path, threads)
        lat = ortr.latency_ms(sess, spec.example_input(1).numpy(), warmup, repeats)
        return {**lat, "kind": label(target), "threads": threads, "onnx_weight_bytes": weight_bytes(path)}


def for_file(path: Path, target, warmup: int = 20, repeats: int = 200) -> dict:
    """Latency of an exported model for `target`: measured with ONNX Runtime when this machine can stand in
    for the target, otherwise estimated from the graph (edgedistill.estimate), and labelled accordingly."""
    import numpy as np

    from edgedistill.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file; pass an .onnx or .ort file")
    if target.runs_on_host():
        try:
            sess = ortr.session(path, ortr.host_threads(target.threads))
        except Exception as e:  # onnxruntime's own errors: a file it cannot load
            raise UserError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:120]})") from None
        first = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in first.shape]
        example = (np.ones(shape, dtype=np.int64) if first.type.startswith("tensor(int") else  # token ids
                   np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        lat = ortr.latency_ms(sess, example, warmup, repeats)
        return {**lat, "kind": "measured", "threads": ortr.host_threads(target.threads), "batch": 1,
                "runtime": "onnxruntime-cpu", "target": target.name}
    if path.suffix != ".onnx":
        raise UserError(f"{path}: {target.name} cannot be timed on this machine and estimates read the graph "
                        "of an .onnx file; pass the .onnx the artifact was made from")
    from edgedistill.deployability import validate_onnx
    from edgedistill.estimate import estimate

    try:
        validate_onnx(path)  # an estimate reads the graph as given: refuse one no runtime would load
        return {**estimate(path, target), "batch": 1, "target": target.name}
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None
