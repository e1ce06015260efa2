"""ONNX Runtime Mobile: the .ort format an Android app loads, and the operator list for a reduced build."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from edgedistill.exporters import CLASSIFICATION, EXPORTERS, ONNX_FILE, Artifact, Exporter, onnx_twin
from edgedistill.io import atomic_path


def to_ort(onnx_path: Path, out_dir: Path, arch: str) -> tuple[Path, Path]:
    """Convert to `<stem>.ort` plus `required_operators.config` in out_dir (written together, atomically).

    The 'Fixed' optimization style bakes in the fusions (QLinearConv...) for the platform:
    target_platform 'arm' for phones and the Pi, 'amd64' for x86."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # The converter prints progress and sets its loggers to INFO when imported: keep both for errors only.
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    printed = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / f"{onnx_path.stem}.onnx"
        src.parent.mkdir()
        shutil.copy(onnx_path, src)
        converted = Path(tmp) / "out"
        with contextlib.redirect_stdout(printed):
            convert_onnx_models_to_ort(
                src, output_dir=converted, optimization_styles=[OptimizationStyle.Fixed],
                target_platform="arm" if arch == "arm64" else "amd64",
            )
        ort_file = converted / f"{onnx_path.stem}.ort"
        config = converted / f"{onnx_path.stem}.required_operators.config"
        if not ort_file.exists() or not config.exists():
            from edgedistill.errors import RefusedError

            detail = next((line for line in printed.getvalue().splitlines() if "Error" in line), "no .ort written")
            raise RefusedError(f"export {ort_file.name}: the ONNX Runtime converter failed: {detail}")
        with atomic_path(out_dir) as staged:
            staged.mkdir()
            shutil.copy(ort_file, staged / ort_file.name)
            shutil.copy(config, staged / "required_operators.config")
    return out_dir / ort_file.name, out_dir / "required_operators.config"



@EXPORTERS.register("ort")
class OrtMobile(Exporter):
    """The student's .ort, from its int8 .onnx when the target ships int8, else from its fp32 one."""

    name = "ort"
    format, kinds, suffix, runtime, device_runtime = "ort", ("ort",), ".ort", "onnxruntime", "adb"
    tasks, needs = CLASSIFICATION, (ONNX_FILE,)
    ships_to, checked_on = ("ort-mobile",), ("onnxruntime", "ort-mobile")

    def source_among(self, role, precision, earlier):
        return onnx_twin(role, precision, earlier)

    def export(self, job):
        from edgedistill import parity
        from edgedistill.runtimes.onnxruntime import HOST_KERNELS

        cfg, int8 = job.cfg, job.ships_int8
        precision = "int8" if int8 else "fp32"
        source = onnx_twin("student", precision, job.artifacts)
        path, config = to_ort(source.path, job.stage_dir / "ort", job.target.arch)
        # the conversion is checked on this CPU's kernels on both sides (an .ort holds fused kernels only)
        rung = parity.compare(job.file_logits(source.path), job.file_logits(path),
                              (f"student {precision} (onnx)", "student (ort)"))
        if int8:
            rung["arithmetic"] = HOST_KERNELS
            parity.check(rung, path, None, cfg.int8_min_agreement, "int8", cfg.int8_max_rel, job.out)
        else:
            parity.check_fp32(rung, path, cfg, job.out)
        yield Artifact("student", "ort", precision, path, self.name, self.runtime, source=source, parity=[rung],
                       fields={"parity_max_abs": rung["max_abs"], "required_operators": job.rel(config),
                               "target_platform": job.target.arch})
