"""ExecuTorch's runtime on this machine (its Python bindings, XNNPACK delegate): held-out outputs for the parity
ladder and accuracy, and batch-1 latency. Programs take batch 1, so a held-out set runs example by example.

The thread pool is shared by every loaded program and must be sized before a program loads: resizing it under
a loaded XNNPACK program can abort the process, so a new thread count drops the loaded programs first."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from edgedistill.runtimes import RUNTIMES, Runtime, held_out_bench

UNAVAILABLE = "ExecuTorch is not installed; bash scripts/setup.sh installs it (see pyproject.toml's executorch extra)"
COREML_UNAVAILABLE = ("the Core ML delegate runs on Apple devices only (these bindings lack it); the program was "
                      "lowered and its operators read here, not run")
_loaded: dict = {}  # (path, mtime, threads) -> (program, method): the program must outlive its method


def method(path: Path, threads: int):
    """The file's forward method, loaded with `threads` threads."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime as ETRuntime

    from edgedistill.mobile_graphs import quiet_native

    key = (str(path), Path(path).stat().st_mtime_ns, threads)
    if key not in _loaded:
        with quiet_native():
            if portable_lib._threadpool_get_thread_count() != threads:  # noqa: SLF001
                _loaded.clear()
                gc.collect()
                portable_lib._unsafe_reset_threadpool(threads)  # noqa: SLF001
            program = ETRuntime.get().load_program(Path(path))
            _loaded[key] = program, program.load_method("forward")
    return _loaded[key][1]


def outputs(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    import torch

    forward = method(path, threads)
    rows = [forward.execute([torch.from_numpy(np.ascontiguousarray(x[i : i + 1], dtype=np.float32))])[0]
            for i in range(len(x))]
    return torch.cat(rows).float().numpy()


def runs_here(artifact) -> bool:
    return artifact.kind != "pte-coreml"  # the pip bindings have no Core ML delegate


@RUNTIMES.register("executorch")
class ExecuTorch(Runtime):
    name, label, targets, unavailable = "executorch", "executorch-xnnpack", ("executorch",), UNAVAILABLE
    coreml_unavailable = COREML_UNAVAILABLE

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("executorch") is not None

    def outputs(self, artifact, x, spec, threads=1):
        return outputs(artifact.file, x, threads)

    def bench(self, artifact, job):
        if not runs_here(artifact):
            return {"latency_note": COREML_UNAVAILABLE}
        import torch

        def call_one(x1):
            forward, inputs = method(artifact.file, job.threads), [torch.from_numpy(np.ascontiguousarray(x1))]
            return lambda: forward.execute(inputs)

        return held_out_bench(artifact, job, self.label, lambda x: self.outputs(artifact, x, None, job.threads),
                              call_one)
