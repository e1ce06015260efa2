"""This machine's CPU: its architecture and feature flags (what decides which kernels ONNX Runtime runs)."""

from __future__ import annotations

import platform
from pathlib import Path


def host_arch() -> str | None:
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())


def host_cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                return flags | ({"neon"} if "asimd" in flags else set()) | ({"dotprod"} if "asimddp" in flags else set())
    except OSError:
        pass
    return set()
