"""ONNX Runtime Mobile: the .ort format an Android app loads, and the operator list for a reduced build."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

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
