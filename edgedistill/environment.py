"""Where a result came from: versions, hardware, the project's git hash."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "onnx", "onnxruntime", "torchao", "torch-pruning", "coremltools", "numpy", "scikit-learn",
            "pydantic", "edgedistill")
OPTIONAL = ("executorch", "litert-torch", "ai-edge-litert")  # listed when installed (their extras)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def collect(device: str) -> dict:
    import torch

    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    for name in OPTIONAL:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    from edgedistill.targets import host_cpu_flags

    flags = sorted(f for f in host_cpu_flags() if f.startswith(("avx", "fma", "amx", "neon", "asimd", "sve", "dotprod")))
    return {
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": flags,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "git": _git_hash(),
        "versions": versions,
    }
