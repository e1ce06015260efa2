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
    """Latency of an exported model for `target`, measured or estimated (runtimes.onnxruntime.for_target)."""
    return ortr.for_target(path, target, warmup, repeats)
