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
NOT_FASTER = 0.97  # an int8 p50 above 97% of fp32's is "not faster" (timing noise on a shared machine)


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


def run_status(run_dir: Path, finishing: bool = False) -> dict:
    """What happened to the run: {"state": "finished" | "refused" | "unfinished", "message", ...}. Refused: a
    stage left NN-stage/refused.json (the run stopped with exit 3). Finished: the last run over this directory
    got to its end (`finishing`: the report stage is that end). Otherwise it was interrupted or failed."""
    finished = sorted(d.parent.name.split("-", 1)[1] for d in run_dir.glob("[0-9][0-9]-*/done.json"))
    for refused in sorted(run_dir.glob("[0-9][0-9]-*/refused.json")):
        record = json.loads(refused.read_text())
        return {"state": "refused", "stage": record["stage"], "exit_code": record.get("exit_code", 3),
                "message": f"the {record['stage']} stage refused its result: {record['message']}. Nothing after it "
                           "ran; fix the cause (or change the named setting with --set) and rerun the same command to "
                           "resume from there"}
    if finishing or _last_run_completed(run_dir):
        return {"state": "finished", "message": "every stage finished"}
    stages = [d.name.split("-", 1)[1] for d in sorted(run_dir.glob("[0-9][0-9]-*")) if d.is_dir()]
    last = next((n for n in reversed(stages) if n in finished), None)
    return {"state": "unfinished", "stages_finished": [n for n in stages if n in finished],
            "message": (f"the run stopped after the {last} stage" if last else "the run stopped before any stage "
                        "finished") + " (interrupted or failed); the figures below are partial. Rerun the same "
                        "`edgedistill compress` command to resume"}


def _last_run_completed(run_dir: Path) -> bool:
    """events.jsonl: the last run_start is followed by a run_done."""
    path = run_dir / "events.jsonl"
    if not path.exists():
        return False
    completed = False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line).get("event")
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        completed = {"run_start": False, "run_done": True}.get(event, completed)
    return completed


def _int8_does_not_pay(artifacts: list[dict]) -> str | None:
    """The precision plan's verdict when it kept every block in fp32."""
    plan = next((a.get("precision_plan") for a in artifacts if a["kind"] == "onnx-int8"), None) or {}
    return plan.get("verdict") if plan and not plan.get("int8") else None


def _int8_slower_on_target(artifacts: list[dict]) -> bool:
    """int8 measured no faster than fp32 on a CPU that stands in for the target (the int8 note's case)."""
    by_kind = {a["kind"]: a.get("latency_ms") for a in artifacts if a["role"] == "student"}
    fp32, int8 = by_kind.get("onnx-fp32"), by_kind.get("onnx-int8")
    return bool(fp32 and int8 and int8["kind"] == "measured" and int8["p50"] >= NOT_FASTER * fp32["p50"])


def _times(ratio: float, where: str) -> str:
    """'2.1x faster (measured)'; a ratio under 1 is said the other way round: '1.4x slower (measured)'."""
    return f"{ratio:.1f}x faster {where}" if ratio >= 1 else f"{1 / ratio:.1f}x slower {where}"


def _headline(target: dict, artifacts: list[dict]) -> tuple[dict | None, str]:
    """Compare the artifact this target would ship with the teacher's fp32 ONNX: the int8 one, unless int8 does
    not pay (the precision plan said so, or it measured no faster on the target's own kind of CPU)."""
    teacher = next((a for a in artifacts if a["role"] == "teacher" and a["kind"] == "onnx-fp32"), None)
    int8 = (target["precision"] in ("int8", "w8a8") and not _int8_does_not_pay(artifacts)
            and not _int8_slower_on_target(artifacts))
    from edgedistill.exporters import ONNX_FILE, own_format

    own = own_format(target["runtime"])
    onnx_kind = "onnx-int8" if int8 else "onnx-fp32"
    students = [a for a in artifacts if a["role"] == "student"]
    shipped = next((a for a in students if a["kind"] == (own.kinds[0] if own else onnx_kind)
                    and a.get("for_target", True)), None)
    if shipped is None:  # its format was not written: the ONNX file stands in
        shipped = next((a for a in students if a["kind"] == onnx_kind), None)
    # A file converted from the ONNX one (.ort) is compared by its ONNX twin's accuracy and latency, and so is one
    # this machine cannot run (Core ML off macOS); its own size is kept. A .pte or .tflite runs here in its own
    # runtime: its own figures.
    twin = next((a for a in students if a["kind"] == onnx_kind), shipped)
    measured = shipped if (own and ONNX_FILE not in own.needs and shipped and shipped.get("latency_ms")) else twin
    if not (teacher and shipped and measured):
        return None, f"{target['name']}: no student artifact to compare with the teacher"
    head = {"artifact": shipped["path"], "size_ratio": teacher["size_bytes"] / max(shipped["size_bytes"], 1)}
    parts = [f"{target['name']}: {shipped['kind']} student is {head['size_ratio']:.1f}x smaller than the teacher"]
    tl, sl = teacher.get("latency_ms"), measured.get("latency_ms")
    if tl and sl:
        head["speedup"] = tl["p50"] / max(sl["p50"], 1e-9)
        head["latency_kind"] = sl["kind"]
        parts.append(_times(head["speedup"], f"({sl['kind']})"))
    te, se = teacher.get("latency_estimated_ms"), shipped.get("latency_estimated_ms")
    if te and se:  # the target itself is out of reach: its roofline estimate, labelled as such
        head["target_speedup"] = te["p50"] / max(se["p50"], 1e-9)
        parts.append(_times(head["target_speedup"], f"on {target['name']} (estimated)"))
    if teacher.get("accuracy") is not None and measured.get("accuracy") is not None:
        head["accuracy_delta_points"] = 100 * (measured["accuracy"] - teacher["accuracy"])
        parts.append(f"{head['accuracy_delta_points']:+.1f} points vs teacher")
    return head, ", ".join(parts)


def _notes(artifacts: list[dict], stages: list[dict], target: dict, head: dict | None,
           failed_formats: list[dict]) -> list[str]:
    """Plain statements a reader must not miss: int8 that is not faster, pruning that did not pay off, export
    formats that failed."""
    notes = [f"{f['format']} export failed, the run went on without it ({target['name']} ships "
             f"{f['required']}): {f['reason']}" for f in failed_formats]
    by_kind = {a["kind"]: a for a in artifacts if a["role"] == "student"}
    fp32, int8 = by_kind.get("onnx-fp32", {}).get("latency_ms"), by_kind.get("onnx-int8", {}).get("latency_ms")
    if fp32 and int8 and int8["p50"] >= NOT_FASTER * fp32["p50"]:
        timing = f"p50 {int8['p50']:.3f} ms vs {fp32['p50']:.3f} ms ({int8['kind']})"
        if int8["kind"] == "measured":
            shipped = f" The headline artifact is {head['artifact']}." if head else ""
            notes.append(f"int8 is not faster than fp32 on this CPU, which stands in for {target['name']}: {timing}. "
                         f"At this size quantize/dequantize overhead outweighs the integer kernels; the int8 artifact "
                         f"buys size only.{shipped}")
        else:
            notes.append(f"int8 is not faster than fp32 on this host, which does not stand in for {target['name']}: "
                         f"{timing}. Host timings rank files only; {target['name']}'s own int8 kernels decide (see "
                         "its estimate).")
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


def build(run_dir: Path, finishing: bool = False) -> dict:
    """report.json's content. `finishing`: built by the pipeline's last stage (the run got to its end)."""
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
                          **{k: measured[k] for k in ("on_device_ms", "latency_by_compute_unit") if k in measured},
                          **({"accuracy_arithmetic": measured["arithmetic"]} if "arithmetic" in measured else {}),
                          **({"accuracy_of": measured["accuracy_of"]} if "accuracy_of" in measured else {})})
        if (per_class := per_class_accuracy(measured.get("confusion"))) is not None:
            artifacts[-1].update(confusion=measured["confusion"], per_class_accuracy=per_class)
    head, summary = _headline(target, artifacts)
    status = run_status(run_dir, finishing)
    if status["state"] != "finished":
        summary = f"{status['state'].upper()}: {status['message']}"
    failed = export.get("failed_formats", [])
    env_path = run_dir / "environment.json"
    return {
        "schema_version": 1,
        "target": target["name"],
        "target_profile": target,
        "status": status,
        "summary": summary,
        "headline": head,
        "recipe": recipe,
        "stages": stages,
        "artifacts": artifacts,
        "failed_formats": failed,
        "notes": _notes(artifacts, stages, target, head, failed) + _lm_notes(results),
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


def regenerate(run_dir: Path) -> dict:
    """Rebuild report.json/.md/.html from a run directory; returns the report."""
    if not Path(run_dir).is_dir():
        raise UserError(f"{run_dir}: no such run directory; pass the --out of a compress run")
    report = build(run_dir)
    write(Path(run_dir), report)
    return report
