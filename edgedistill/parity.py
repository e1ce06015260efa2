"""Parity rungs: how close an exported file's held-out outputs are to the model (or file) it came from, judged
against the recipe's stages.export tolerances. A file beyond tolerance is refused: renamed *.refused.* so that
nothing loads it by its usual name, and the run stops (exit 3)."""

from __future__ import annotations

import numpy as np

from edgedistill import int8_arithmetic, io
from edgedistill.errors import RefusedError


def compare(reference: np.ndarray, other: np.ndarray, names: tuple[str, str]) -> dict:
    max_abs = float(np.abs(reference - other).max())
    return {"from": names[0], "to": names[1],
            "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
            "max_abs": max_abs, "max_rel": max_abs / max(float(np.abs(reference).max()), 1e-12)}


def failure(rung: dict, max_abs: float | None, min_agreement: float | None, field: str,
            max_rel: float | None = None) -> str | None:
    """What in `rung` breaks a tolerance, naming the recipe key (its --set path), or None."""
    key = f"stages.export.{field}"
    if max_abs is not None and rung["max_abs"] > max_abs:
        return f"differs from {rung['from']} by {rung['max_abs']:.3g} (> {key}_max_abs {max_abs})"
    if max_rel is not None and rung["max_rel"] > max_rel:
        return f"differs from {rung['from']} by {rung['max_rel']:.1%} of its largest logit (> {key}_max_rel {max_rel})"
    if min_agreement is not None and rung["top1_agreement"] < min_agreement:
        return (f"agrees with {rung['from']} on {rung['top1_agreement']:.1%} of held-out inputs "
                f"(< {key}_min_agreement {min_agreement})")
    return None


def check(rung: dict, artifact, max_abs: float | None, min_agreement: float | None, field: str,
          max_rel: float | None = None, out=None, why: str = "") -> None:
    """Refuse `artifact` (a Path under `out`) when `rung` breaks a tolerance."""
    broken = failure(rung, max_abs, min_agreement, field, max_rel)
    if broken is not None:
        refuse(artifact, out, lambda name: f"parity: {name} {broken}{why}")


def check_fp32(rung: dict, artifact, cfg, out=None) -> None:
    """Refuse an fp32 file whose outputs differ from its source's by more than stages.export.fp32_max_abs,
    unless that is within fp32_max_rel of the largest logit: float reassociation grows with the logits' size."""
    if rung["max_rel"] > cfg.fp32_max_rel:
        check(rung, artifact, cfg.fp32_max_abs, None, "fp32", out=out)


def refuse(artifact, out, message) -> None:
    """Rename `artifact` *.refused.* and stop the run with `message(its name)`, told where the file was kept."""
    refused = io.set_aside(artifact)
    show = (lambda p: str(p.relative_to(out))) if out is not None else (lambda p: p.name)  # noqa: E731
    raise RefusedError(f"{message(show(artifact))}; not trusted, kept as {show(refused)}")


def int8_rung(ctx, reference: np.ndarray, path, names: tuple[str, str], tolerances: tuple, file_logits,
              artifact) -> dict:
    """Compare an int8 file with its reference, judged in the target's int8 arithmetic (the runtime's rule,
    runtimes.onnxruntime.int8_execution): with this CPU's fused kernels when they compute as the target's do,
    else with the file's reference semantics, the host kernels' result kept beside it as information.
    `file_logits(path, reference=False)` runs the file. Refuses (renaming `artifact`) when the judged result
    breaks `tolerances` (min_agreement, max_rel)."""
    from edgedistill.runtimes.onnxruntime import REFERENCE, int8_execution

    min_agreement, max_rel = tolerances
    target = ctx.target
    arithmetic = int8_execution(target)
    if arithmetic != REFERENCE:
        rung = {**compare(reference, file_logits(path), names), "arithmetic": arithmetic}
        why = ""
        if int8_arithmetic.host_arithmetic() == int8_arithmetic.PAIR_SATURATING:
            findings = int8_arithmetic.saturation_findings(_load_onnx(path))
            if findings and failure(rung, None, min_agreement, "int8", max_rel):
                why = (f"; {len(findings)} of its layers hold 8-bit weight pairs that this CPU's non-VNNI kernels "
                       "saturate (int8_arithmetic: 7-bit weights avoid it)")
        check(rung, artifact, None, min_agreement, "int8", max_rel, ctx.out, why)
        return rung
    rung = {**compare(reference, file_logits(path, reference=True), names), "arithmetic": arithmetic}
    host = compare(reference, file_logits(path), names)
    rung["host_kernels"] = {k: host[k] for k in ("top1_agreement", "max_abs", "max_rel")}
    rung["host_arithmetic"] = int8_arithmetic.host_arithmetic()
    check(rung, artifact, None, min_agreement, "int8", max_rel, ctx.out,
          f" in {target.name}'s arithmetic (reference execution; this CPU's own kernels: "
          f"{host['top1_agreement']:.1%} agreement, {host['max_rel']:.1%} of the largest logit)")
    rel = artifact.relative_to(ctx.out)
    if host_failure := failure(host, None, min_agreement, "int8", max_rel):
        ctx.log(f"    warning: {rel} run with this CPU's own int8 kernels "
                f"{host_failure}, because {int8_arithmetic.host_difference(target)}; "
                f"judged by reference execution instead ({rung['top1_agreement']:.1%} agreement, "
                f"{rung['max_rel']:.1%} of the largest logit)")
    return rung


def _load_onnx(path):
    import onnx

    return onnx.load(str(path))
