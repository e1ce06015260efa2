"""Target device profiles: data in targets/*.yaml that stages read (precision, threads, channel multiple...)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgedistill.errors import UserError
from edgedistill.host import host_arch, host_cpu_flags
from edgedistill.schema import Strict, read_yaml, validate

# The profiles ship inside the package (the top-level targets/ links here); EDGEDISTILL_TARGETS points elsewhere.
TARGETS_DIR = Path(os.environ.get("EDGEDISTILL_TARGETS", Path(__file__).resolve().parent / "profiles"))


class CoreMLSettings(Strict):
    minimum_deployment_target: Literal["iOS15", "iOS16", "iOS17", "iOS18"] = "iOS17"
    compute_units: Literal["ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"] = "ALL"


# The runtimes an app on each platform can load: ExecuTorch ships for Android and iOS, LiteRT for Android (and
# Linux boards), Core ML for Apple platforms only.
RUNTIMES_BY_OS = {"android": ("ort-mobile", "executorch", "litert"), "ios": ("coreml", "executorch"),
                  "linux": ("onnxruntime", "ort-mobile", "executorch", "litert")}
DEFAULT_OS = {"coreml": "ios", "ort-mobile": "android", "onnxruntime": "linux"}


class TargetProfile(Strict):
    name: str
    description: str = ""
    runtime: Literal["coreml", "ort-mobile", "onnxruntime", "executorch", "litert"]
    os: Literal["android", "ios", "linux"] | None = Field(
        None, description="the platform the app runs on; default from the runtime (coreml: ios, ort-mobile: "
                          "android, onnxruntime: linux); required for executorch and litert, which ship for several")
    compute_unit: Literal["cpu", "gpu", "ane"] = "cpu"
    arch: Literal["arm64", "x86_64"]
    isa: list[str] = Field(default_factory=list, description="CPU features the runtime's kernels need")
    precision: Literal["int8", "w8a8", "fp16", "fp32"]
    threads: int = Field(1, ge=1)
    channel_multiple: int = Field(1, ge=1)
    peak_int8_gops: float | None = Field(None, gt=0)
    peak_fp16_gflops: float | None = Field(None, gt=0)
    peak_fp32_gflops: float | None = Field(None, gt=0)
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    latency_budget_ms: float | None = Field(None, gt=0)
    size_budget_mb: float | None = Field(None, gt=0)
    coreml: CoreMLSettings | None = None
    int8_arithmetic: Literal["exact", "pair-saturating"] | None = Field(
        None, description="how the runtime's int8 kernels add up u8*s8 products: 'exact' (int32: VNNI, ARM dot "
                          "product) or 'pair-saturating' (int16 pairs: x86 without VNNI); default: from arch and isa")

    @model_validator(mode="before")
    @classmethod
    def _default_os(cls, data):
        if isinstance(data, dict) and data.get("os") is None and data.get("runtime") in DEFAULT_OS:
            data = {**data, "os": DEFAULT_OS[data["runtime"]]}
        return data

    @model_validator(mode="after")
    def _runtime_fits_os(self):
        if self.os is None:
            raise ValueError(f"os: runtime {self.runtime} ships for several platforms; name the profile's os "
                             f"({', '.join(o for o, r in RUNTIMES_BY_OS.items() if self.runtime in r)})")
        if self.runtime not in RUNTIMES_BY_OS[self.os]:
            raise ValueError(f"runtime: {self.runtime} does not run on {self.os}; use one of "
                             f"{', '.join(RUNTIMES_BY_OS[self.os])}")
        return self

    def runs_on_host(self) -> bool:
        """True when this machine can stand in for the target (same ISA family and CPU features), so
        latency measured here is the target's; otherwise host timings are only relative figures."""
        return self.runtime != "coreml" and host_arch() == self.arch and set(self.isa) <= host_cpu_flags()

    @property
    def arithmetic(self) -> str:
        """The int8 arithmetic of the files made for this target (edgedistill.int8_arithmetic). Core ML
        runs its own kernels (the Neural Engine's or the CPU's), which accumulate exactly."""
        from edgedistill.int8_arithmetic import EXACT, arithmetic_of

        if self.int8_arithmetic is not None:
            return self.int8_arithmetic
        return EXACT if self.runtime == "coreml" else arithmetic_of(self.arch, self.isa)

    @property
    def int8_weight_range(self) -> tuple[int, int]:
        """(qmin, qmax) of int8 weights in files for this target: 7-bit where its kernels saturate pairs."""
        from edgedistill.int8_arithmetic import WEIGHT_RANGE

        return WEIGHT_RANGE[self.arithmetic]


def host_conv_block() -> int | None:
    """Channels per block of ONNX Runtime's blocked convolution layout (NCHWc) on this CPU: 16 with AVX-512,
    8 with AVX2, None where it does not use that layout. A conv whose width is not a multiple of the block is
    padded up to the next one, so it runs as slowly as the wider layer would."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = host_cpu_flags()
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else None


def available() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(ref: str | Path) -> TargetProfile:
    """A profile by name (targets/<name>.yaml) or by path to a YAML file."""
    path = Path(ref)
    if not path.is_file():
        path = TARGETS_DIR / f"{ref}.yaml"
        if not path.is_file():
            import difflib

            close = difflib.get_close_matches(str(ref), available(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(
                f"--target {ref}: unknown target; {hint}known: {', '.join(available())} (or a path to a profile YAML)"
            )
    return validate(TargetProfile, read_yaml(path), f"target {path.name}")
