"""Core ML on macOS: predictions (for the parity ladder) and latency per compute unit. Core ML runs only on
Apple platforms; elsewhere `available()` is False and callers record UNAVAILABLE instead of a figure.

The inputs are built the way an app passes them: pixels as an 8-bit image (the package scales by 1/255 and
normalizes itself), or int32 token ids."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgedistill.runtimes import RUNTIMES, Runtime, confusion_matrix

UNAVAILABLE = "Core ML runs only on Apple platforms; on this machine the package's spec is checked, not run"
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


def available() -> bool:
    return platform.system() == "Darwin"


def features(x: np.ndarray, spec, input_name: str) -> list[dict]:
    """One input dict per example. Images: the normalized tensors turned back into the 8-bit pixels a camera
    gives (grayscale "L" or "RGB" PIL images); text: int32 token ids of shape (1, L)."""
    if spec.is_text:
        return [{input_name: row[None].astype(np.int32)} for row in x]
    from PIL import Image

    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    pixels = np.clip(np.rint((x * std + mean) * 255), 0, 255).astype(np.uint8)
    if pixels.shape[1] == 1:
        return [{input_name: Image.fromarray(p[0], mode="L")} for p in pixels]
    return [{input_name: Image.fromarray(p.transpose(1, 2, 0), mode="RGB")} for p in pixels]


def _load(path: Path, compute_units: str):
    import coremltools as ct

    return ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))


def probabilities(path: Path, x: np.ndarray, spec, input_name: str, compute_units: str = "ALL") -> np.ndarray:
    """Class probabilities (N, classes) in the order of spec.labels."""
    model = _load(path, compute_units)
    rows = []
    for feed in features(x, spec, input_name):
        probs = model.predict(feed)["classLabel_probs"]
        rows.append([probs[label] for label in spec.labels])
    return np.asarray(rows, dtype=np.float32)


def latency_ms(path: Path, feed: dict, compute_units: str, warmup: int, repeats: int) -> dict:
    """Batch-1 predict latency on this Mac for one compute-unit setting, warm-up excluded."""
    from edgedistill.runtimes import time_calls

    model = _load(path, compute_units)
    return {**time_calls(lambda: model.predict(feed), warmup, repeats), "compute_units": compute_units,
            "runtime": "coreml"}


@RUNTIMES.register("coreml")
class CoreML(Runtime):
    """Core ML predict on this Mac: accuracy, and latency per compute unit (the Mac's, so labelled like any
    host measurement)."""

    name, targets, float_precision, unavailable = "coreml", ("coreml",), "fp16", UNAVAILABLE

    def available(self) -> bool:
        return available()

    def outputs(self, artifact, x, spec, threads=1):
        return probabilities(artifact.file, x, spec, artifact.fields["coreml"]["input"]["name"])

    def bench(self, artifact, job):
        cfg, spec = job.cfg, job.ctx.data.spec
        x, y = job.ctx.data.x_test.cpu().numpy(), job.ctx.data.y_test.cpu().numpy()
        pred = self.outputs(artifact, x, spec).argmax(-1)
        feed = features(x[:1], spec, artifact.fields["coreml"]["input"]["name"])[0]
        per_unit = {cu: latency_ms(artifact.file, feed, cu, cfg.warmup, cfg.repeats) for cu in COMPUTE_UNITS}
        return {"accuracy": float((pred == y).mean()), "confusion": confusion_matrix(y, pred, spec.num_classes),
                "latency_ms": {**per_unit["ALL"], "kind": job.kind, "threads": None, "batch": 1},
                "latency_by_compute_unit": {cu: lat["p50"] for cu, lat in per_unit.items()}}
