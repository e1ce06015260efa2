"""The run's report: report.json (the stable contract), report.md and report.html, built only from what the
run recorded on disk, so `edgedistill report RUN_DIR` regenerates the same files at any time."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import yaml

from edgedistill import io
from edgedistill.errors import UserError

MODEL_STAGES = ("teacher", "student", "distill", "prune", "precision", "qat")


def _results(run_dir: Path) -> dict[str, dict]:
    """Each finished stage's result.json, by stage name."""
    out = {}
    for done in sorted(run_dir.glob("[0-9][0-9]-*/done.json")):
        name = done.parent.name.split("-", 1)[1]
        out[name] = json.loads((done.parent / "result.json").read_text())
    return out


def per_class_accuracy(confusion) -> list[float | None] | None:
    """Recall of each true class (the diagonal over the row sums; None for a class with no examples), or None
    when the confusion matrix is missing or not a square matrix of counts."""
    if not isinstance(confusion, list) or not confusion or not all(
            isinstance(row, list) and len(row) == len(confusion) and all(type(v) is int for v in row)
            for row in confusion):
        return None
    out = []
    for i, row in enumerate(confusion):
        total = sum(row)
        out.append(row[i] / total if total else None)
    return out


def _stage_wall_s(results: dict[str, dict]) -> dict[str, float]:
    """Wall time of every finished stage in pipeline order. The report stage's own time is left out: it is
    only known after report.json is written, and `edgedistill report` must rebuild the same file."""
    return {name: r["wall_s"] for name, r in results.items()
            if name != "report" and isinstance(r.get("wall_s"), (int, float))}


def _int8_does_not_pay(artifacts: list[dict]) -> str | None:
    """The precision plan's verdict when it kept every block in fp32."""
    plan = next((a.get("precision_plan") for a in artifacts if a["kind"] == "onnx-int8"), None) or {}
    return plan.get("verdict") if plan and not plan.get("int8") else None


def _headline(target: dict, artifacts: list[dict]) -> tuple[dict | None, str]:
    """Compare the artifact this target would ship with the teacher's fp32 ONNX."""
    teacher = next((a for a in artifacts if a["role"] == "teacher" and a["kind"] == "onnx-fp32"), None)
    int8 = target["precision"] in ("int8", "w8a8") and not _int8_does_not_pay(artifacts)
    wanted = ("ort" if target["runtime"] == "ort-mobile" else "coreml" if target["runtime"] == "coreml" else
              "onnx-int8" if int8 else "onnx-fp32")
    students = [a for a in artifacts if a["role"] == "student"]
    shipped = next((a for a in students if a["kind"] == wanted and a.get("for_target", True)), None)
    # Core ML cannot be run here: compare its ONNX twin's accuracy and latency, keep its own size.
    measured = next((a for a in students if a["kind"] == ("onnx-int8" if int8 else "onnx-fp32")), shipped)
    if not (teacher and shipped and measured):
        return None, f"{target['name']}: no student artifact to compare with the teacher"
    head = {"artifact": shipped["path"], "size_ratio": teacher["size_bytes"] / max(shipped["size_bytes"], 1)}
    parts = [f"{target['name']}: {shipped['kind']} student is {head['size_ratio']:.1f}x smaller than the teacher"]
    tl, sl = teacher.get("latency_ms"), measured.get("latency_ms")
    if tl and sl:
        head["speedup"] = tl["p50"] / max(sl["p50"], 1e-9)
        head["latency_kind"] = sl["kind"]
        parts.append(f"{head['speedup']:.1f}x faster ({sl['kind']})")
    te, se = teacher.get("latency_estimated_ms"), shipped.get("latency_estimated_ms")
    if te and se:  # the target itself is out of reach: its roofline estimate, labelled as such
        head["target_speedup"] = te["p50"] / max(se["p50"], 1e-9)
        parts.append(f"{head['target_speedup']:.1f}x faster on {target['name']} (estimated)")
    if teacher.get("accuracy") is not None and measured.get("accuracy") is not None:
        head["accuracy_delta_points"] = 100 * (measured["accuracy"] - teacher["accuracy"])
        parts.append(f"{head['accuracy_delta_points']:+.1f} points vs teacher")
    return head, ", ".join(parts)


def _notes(artifacts: list[dict], stages: list[dict]) -> list[str]:
    """Plain statements a reader must not miss: int8 that is not faster, pruning that did not pay off."""
    notes = []
    by_kind = {a["kind"]: a for a in artifacts if a["role"] == "student"}
    fp32, int8 = by_kind.get("onnx-fp32", {}).get("latency_ms"), by_kind.get("onnx-int8", {}).get("latency_ms")
    if fp32 and int8 and int8["p50"] >= 0.97 * fp32["p50"]:
        notes.append(f"int8 is not faster than fp32 here: p50 {int8['p50']:.3f} ms vs {fp32['p50']:.3f} ms "
                     f"({int8['kind']}). At this size quantize/dequantize overhead outweighs the integer kernels; "
                     "the int8 artifact buys size, the fp32 one is as fast or faster.")
    if verdict := _int8_does_not_pay(artifacts):
        notes.append(f"precision plan: {verdict}. The recommended artifact is student.fp32.onnx; the all-int8 "
                     "file is kept for its size.")
    distill = next((s for s in stages if s["name"] == "distill"), {})
    if kept := distill.get("transfer_set"):
        classes = kept["class_share"]
        notes.append(f"data-free: the student never saw training data. It learned on images a generator made for the "
                     f"teacher; the later stages used {kept['images']:,} of them, labelled by the teacher (classes "
                     f"{100 * min(classes):.1f}-{100 * max(classes):.1f}% each, teacher confidence "
                     f"{kept['teacher_confidence']:.2f}). Held-out accuracy is on the real test split.")
    prune = next((s for s in stages if s["name"] == "prune"), {})
    if prune.get("flags"):
        notes.append(f"pruning steps {', '.join(map(str, prune['flags']))} removed MACs without making the exported "
                     "model measurably faster (see Pruning steps).")
    if block := prune.get("host_conv_block"):
        notes.append(f"pruning: widths were rounded to {prune.get('round_to')}, but the latency was measured on a CPU "
                     f"where ONNX Runtime runs convolutions in blocks of {block} channels and pads other widths up to "
                     f"the next block, so these timings undercount what the cuts save on the target. To prune for "
                     f"this machine itself, set stages.prune.round_to={block} (or use a target whose "
                     f"channel_multiple is {block}).")
    return notes


def _lm_notes(results: dict[str, dict]) -> list[str]:
    """A language model's figures read differently: say how, and what speculative decoding measured."""
    distill, bench = results.get("distill", {}), results.get("bench", {})
    if "sequence_kd" not in distill:
        return []
    seq, start = distill["sequence_kd"], results.get("student", {}).get("generation_agreement")
    before = f" ({100 * start:.1f}% before distillation)" if start is not None else ""
    notes = [f"causal language model: accuracy is held-out next-token top-1 (teacher perplexity "
             f"{results['teacher']['perplexity']:.1f}, student {distill['perplexity']:.1f}); latency is per generated "
             f"token with the KV cache, batch 1. The student learned {seq['sequences']:,} {seq['decoding']} teacher "
             f"continuations (sequence-level KD) and decodes {100 * distill['generation_agreement']:.1f}% of held-out "
             f"greedy tokens as the teacher does{before}."]
    runs = [(spec, where) for spec, where in ((bench.get("speculative"), "torch eager"),
                                              (bench.get("speculative_onnx"), "ONNX Runtime on the exported files"))
            if spec]
    if runs:
        first = runs[0][0]
        notes.append(f"speculative decoding, the student drafting {first['k']} tokens per teacher pass "
                     f"({first['prompts']} held-out prompts, this CPU, {first['threads']} threads): "
                     + "; ".join(f"{where}: {100 * s['acceptance_rate']:.0f}% of drafted tokens accepted, "
                                 f"{s['tokens_per_target_call']:.2f} tokens per teacher pass, {s['speedup']:.2f}x the "
                                 f"teacher alone's speed" for s, where in runs)
                     + ". Outputs " + ("identical" if all(s["identical"] for s, _ in runs) else "NOT identical")
                     + " to the teacher's greedy decoding.")
    return notes


def build(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    recipe_path, target_path = run_dir / "recipe.resolved.yaml", run_dir / "target.resolved.yaml"
    if not recipe_path.exists() or not target_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no recipe.resolved.yaml); pass the --out of a compress run")
    recipe = yaml.safe_load(recipe_path.read_text())
    target = yaml.safe_load(target_path.read_text())
    results = _results(run_dir)
    stages = [results[n] for n in MODEL_STAGES if n in results]
    export = results.get("export", {})
    bench = {b["path"]: b for b in results.get("bench", {}).get("artifacts", [])}
    artifacts = []
    for art in export.get("artifacts", []):
        measured = bench.get(art["path"], {})
        artifacts.append({**art, "accuracy": measured.get("accuracy"), "latency_ms": measured.get("latency_ms"),
                          **({"latency_note": measured["latency_note"]} if "latency_note" in measured else {}),
                          **({"latency_estimated_ms": measured["estimate"]} if "estimate" in measured else {}),
                          **{k: measured[k] for k in ("on_device_ms", "latency_by_compute_unit") if k in measured}})
        if (per_class := per_class_accuracy(measured.get("confusion"))) is not None:
            artifacts[-1].update(confusion=measured["confusion"], per_class_accuracy=per_class)
    head, summary = _headline(target, artifacts)
    env_path = run_dir / "environment.json"
    return {
        "schema_version": 1,
        "target": target["name"],
        "target_profile": target,
        "summary": summary,
        "headline": head,
        "recipe": recipe,
        "stages": stages,
        "artifacts": artifacts,
        "notes": _notes(artifacts, stages) + _lm_notes(results),
        "parity": export.get("parity", []),
        "stage_wall_s": _stage_wall_s(results),
        "usage": export.get("usage"),
        "preflight": json.loads((run_dir / "preflight.json").read_text()) if (run_dir / "preflight.json").exists() else None,
        "environment": json.loads(env_path.read_text()) if env_path.exists() else {},
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write(run_dir: Path, report: dict) -> None:
    from edgedistill.report.render import render_html, render_markdown

    io.write_json(run_dir / "report.json", report)
    io.write_text(run_dir / "report.md", render_markdown(report))
    io.write_text(run_dir / "report.html", render_html(report))


def regenerate(run_dir: Path) -> str:
    """Rebuild report.json/.md/.html from a run directory; returns the summary line."""
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass the --out of a compress run")
    report = build(run_dir)
    write(Path(run_dir), report)
    return report["summary"]
