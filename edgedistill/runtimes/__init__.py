"""Runtimes that run exported models: ONNX Runtime here (plain files, and causal LMs with their KV cache),
Core ML on macOS, ONNX Runtime on an Android phone (adb), ExecuTorch and LiteRT (their CPU delegates, here).

Each is a plug-in registered in RUNTIMES: it loads an exported Artifact, runs it on the held-out set in the
target's arithmetic (accuracy) and times it. An exporter names the runtime that loads its artifacts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from edgedistill.registry import Registry


def time_calls(call: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Latency percentiles in ms of `call`, warm-up excluded."""
    import numpy as np

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(times)), "repeats": repeats}


def confusion_matrix(y_true, y_pred, num_classes: int) -> list[list[int]]:
    """counts[true][predicted] as plain ints (JSON)."""
    import numpy as np

    counts = np.bincount(y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64),
                         minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


@dataclass
class BenchJob:
    """What the bench stage hands every runtime: the run's context and pipeline state, the bench settings,
    threads and the latency label, and a cache a runtime may keep sessions in for its whole-run figures."""

    ctx: object
    state: object
    threads: int
    kind: str  # latency label: "measured" or "measured-host"
    cache: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return self.ctx.recipe.stages.bench

    @property
    def target(self):
        return self.ctx.target


def held_out_bench(artifact, job: BenchJob, label: str, outputs: Callable, call_one: Callable) -> dict:
    """A classifier file's bench fields: held-out accuracy and confusion from `outputs(x)`, batch-1 latency of
    `call_one(x[:1])` (a closure that runs the loaded file once), labelled `label`."""
    from edgedistill.io import dir_size

    cfg, spec = job.cfg, job.ctx.data.spec
    x, y = job.ctx.data.x_test.cpu().numpy(), job.ctx.data.y_test.cpu().numpy()
    out = outputs(x)
    pred = out.argmax(-1)
    lat = time_calls(call_one(x[:1]), cfg.warmup, cfg.repeats)
    job.ctx.log(f"    {artifact.role:<7} {artifact.kind + ' ' + artifact.precision:<9} acc {float((pred == y).mean()):.4f}  p50 {lat['p50']:.3f} ms "
                f"({job.kind}, {job.threads} thr)  {dir_size(artifact.path):,} B")
    return {"accuracy": float((pred == y).mean()),
            "confusion": confusion_matrix(y, pred, max(int(spec.num_classes), out.shape[-1])),
            "latency_ms": {**lat, "kind": job.kind, "threads": job.threads, "batch": 1, "runtime": label}}


class Runtime:
    """Loads, runs and times one kind of exported artifact."""

    name = ""
    targets: tuple[str, ...] = ()  # the TargetProfile.runtime values this runtime is
    float_precision = "fp32"  # what it computes floating-point layers in on its targets
    unavailable = ""  # why it cannot run on this machine, when available() is False

    def available(self) -> bool:
        return True

    def bench(self, artifact, job: BenchJob) -> dict:
        """The artifact's bench record fields: accuracy, latency_ms and what goes with them."""
        raise NotImplementedError

    def bench_run(self, job: BenchJob) -> dict:
        """Figures over the run's artifacts as a whole, added to the bench record (after every bench())."""
        return {}

    def outputs(self, artifact, x, spec, threads: int = 1):
        """Held-out outputs (logits or probabilities, (N, classes)) of `artifact` on `x` (numpy, as `spec` says)."""
        raise NotImplementedError

    def time_file(self, path, target, warmup: int, repeats: int, **options) -> dict:
        """Batch-1 latency of a file outside a run (the `edgedistill bench` command)."""
        raise NotImplementedError(f"{self.name} times artifacts within a run only")


RUNTIMES: Registry[Runtime] = Registry("runtime", builtins=(
    "edgedistill.runtimes.onnxruntime", "edgedistill.runtimes.onnxruntime_kv", "edgedistill.runtimes.coreml",
    "edgedistill.runtimes.adb", "edgedistill.runtimes.executorch", "edgedistill.runtimes.litert"))


def for_target(target) -> Runtime | None:
    """The runtime a target profile runs (its `runtime` field), when one is registered here."""
    return next((r for r in RUNTIMES if target.runtime in r.targets), None)
