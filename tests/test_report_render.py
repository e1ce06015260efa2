"""The report renderers: every stage and artifact shows up, the HTML is self-contained, sparse reports render."""

from __future__ import annotations

import copy
import re

import pytest

from edgedistill.report.render import per_class_table, render_html, render_markdown


def _latency(p50: float, p90: float, kind: str | None = "measured-host") -> dict:
    return {"p50": p50, "p90": p90, "p99": p90 * 1.2, "kind": kind, "threads": 2, "batch": 1}


def _confusion(errors: dict[tuple[int, int], int], n: int = 10, per_class: int = 36) -> list[list[int]]:
    """n classes of per_class examples each; errors maps (true, predicted) to a count."""
    m = [[per_class if i == j else 0 for j in range(n)] for i in range(n)]
    for (i, j), count in errors.items():
        m[i][j] += count
        m[i][i] -= count
    return m


@pytest.fixture
def report() -> dict:
    history = [{"epoch": 1, "loss": 2.0, "task_loss": 1.5, "kd_loss": 2.1, "test_accuracy": 0.7},
               {"epoch": 2, "loss": 0.5, "task_loss": 0.3, "kd_loss": 0.5, "test_accuracy": 0.96}]
    return {
        "schema_version": 1,
        "target": "pixel-8",
        "target_profile": {"name": "pixel-8", "description": "Pixel 8 <ARM CPU> & int8"},
        "summary": "pixel-8: int8 student is 27.1x smaller than the teacher, 2.4x faster (measured-host)",
        "headline": {"artifact": "export/student.int8.onnx", "size_ratio": 27.1, "speedup": 2.4,
                     "latency_kind": "measured-host", "accuracy_delta_points": -0.6},
        "stages": [
            {"name": "teacher", "accuracy": 0.9833, "params": 94218, "macs": 613898, "wall_s": 30.1,
             "history": [{"epoch": 1, "loss": 1.2, "task_loss": 1.2, "test_accuracy": 0.8}]},
            {"name": "distill", "accuracy": 0.9806, "params": 24058, "macs": 162954, "wall_s": 40.0,
             "history": history},
            {"name": "qat", "accuracy": 0.9778, "params": 12000, "macs": 80000, "wall_s": 25.0},
        ],
        "artifacts": [
            {"role": "teacher", "kind": "onnx-fp32", "path": "export/teacher.fp32.onnx", "size_bytes": 380000,
             "accuracy": 0.9833, "latency_ms": _latency(0.21, 0.25),
             "confusion": _confusion({(8, 1): 2, (9, 3): 1, (9, 5): 1, (4, 9): 1, (2, 1): 1})},
            {"role": "student", "kind": "onnx-int8", "path": "export/student.int8.onnx", "size_bytes": 14000,
             "accuracy": 0.9778, "latency_ms": _latency(0.09, 0.1),
             "confusion": _confusion({(8, 1): 3, (9, 3): 1, (9, 5): 1, (4, 9): 1, (2, 1): 1, (7, 2): 1})},
            {"role": "student", "kind": "ort", "path": "export/ort/student.int8.ort", "size_bytes": 16000,
             "accuracy": 0.9778, "latency_ms": _latency(0.09, 0.1, "estimated"),
             "confusion": _confusion({(8, 1): 3, (9, 3): 1, (9, 5): 1, (4, 9): 1, (2, 1): 1, (7, 2): 1})},
            {"role": "student", "kind": "coreml", "path": "export/student.mlpackage", "size_bytes": 40000,
             "accuracy": None, "latency_ms": None, "latency_note": "runs only on Apple platforms"},
        ],
        "stage_wall_s": {"teacher": 30.1, "distill": 40.0, "qat": 25.0, "export": 8.5, "bench": 0.4},
        "parity": [{"from": "student int8 (onnx)", "to": "student int8 (ort)", "top1_agreement": 1.0, "max_abs": 0.0}],
        "usage": {"inputs": [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
                  "outputs": [{"name": "logits", "shape": ["batch", 10]}], "labels": [f"d{i}" for i in range(10)],
                  "mean": [0.3], "std": [0.4], "coreml_input": "image",
                  "coreml_outputs": ["classLabel", "classLabel_probs"]},
        "environment": {"world_size": 1, "device": "cpu", "gpu": None, "cpu": "AMD EPYC", "cpu_count": 2,
                        "platform": "Linux-x86_64", "git": "abc1234",
                        "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "onnxruntime": "1.31.1"}},
        "created": "2026-11-22T12:34:56Z",
    }


MINIMAL = {"target": "bare-board", "stages": [], "artifacts": []}


def _section(md: str, title: str) -> list[str]:
    """The lines of one '## title' section."""
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()


def test_markdown_has_summary_and_a_row_per_stage_and_artifact(report):
    md = render_markdown(report)
    assert md.startswith("# edgedistill report: pixel-8")
    assert report["summary"] in md
    stages, artifacts = _section(md, "Stages"), _section(md, "Artifacts")
    for stage in report["stages"]:
        assert sum(line.startswith(f"| {stage['name']} |") for line in stages) == 1
    for artifact in report["artifacts"]:
        assert sum(f"`{artifact['path']}`" in line for line in artifacts if line.startswith("|")) == 1
    assert "| teacher | 98.33 | +0.00 | 94,218 | 613,898 | 30.1 |" in md
    assert "| qat | 97.78 | -0.55 | 12,000 | 80,000 | 25.0 |" in md
    assert "0.090 / 0.100 ms (measured-host)" in md
    assert "0.090 / 0.100 ms (estimated)" in md
    assert "| 380.0 |" in md  # size in KB
    assert "runs only on Apple platforms" in md
    assert "| student int8 (onnx) | student int8 (ort) | 100.00 | 0 |" in md
    for provenance in ("2.13.0+cpu", "AMD EPYC (2 cores)", "abc1234", "| world size | 1 |", "| gpu | n/a |"):
        assert provenance in md


def test_markdown_tables_keep_their_column_count(report):
    report["stages"][0]["name"] = "a|b"  # a pipe in a value must not add a column
    for line in render_markdown(report).splitlines():
        if line.startswith("| stage |") or line.startswith("| a"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 7


def test_html_is_self_contained_with_plots(report):
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 2
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "pixel-8" in page
    for artifact in report["artifacts"]:
        assert artifact["path"] in page
    for stage in report["stages"]:
        assert f"<td>{stage['name']}</td>" in page
    assert report["summary"] in page


def test_html_escapes_text_and_has_app_snippets(report):
    page = render_html(report)
    assert "Pixel 8 &lt;ARM CPU&gt; &amp; int8" in page
    assert "<ARM CPU>" not in page
    assert "MLModel(contentsOf:" in page and "&quot;image&quot;" in page and "classLabel_probs" in page
    assert "OrtEnvironment.getEnvironment()" in page and "OnnxTensor.createTensor" in page
    assert "longArrayOf(1, 1, 8, 8)" in page and "mapOf(&quot;x&quot; to tensor)" in page
    assert "student.int8.ort" in page


def test_html_ids_are_unique_and_output_is_deterministic(report):
    page = render_html(report)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert render_html(copy.deepcopy(report)) == page


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_minimal_report_renders(render):
    out = render(dict(MINIMAL))
    assert "bare-board" in out
    assert "n/a" in out


def test_minimal_html_has_no_plots_and_says_why():
    page = render_html(dict(MINIMAL))
    assert "<svg" not in page
    assert "No training history was recorded." in page
    assert "No Core ML, .ort, .pte or .tflite artifact" in page


@pytest.mark.parametrize("render", [render_markdown, render_html])
def test_nulls_and_malformed_values_do_not_crash(render, report):
    for stage in report["stages"]:
        stage.update(accuracy=None, params="many", macs=None, wall_s=float("nan"))
    report["stages"][1]["history"] = [{"epoch": 1}, {"loss": None}, "junk"]
    report["artifacts"][0].update(size_bytes=None, latency_ms={"p50": 0.2, "p90": None, "kind": None})
    for key in ("summary", "headline", "parity", "usage", "environment", "target_profile", "created"):
        report[key] = None
    out = render(report)
    assert "n/a" in out
    assert "0.200 / n/a ms" in out


# ---------------------------------------------------------------- per-class accuracy, confusion matrices, stage times

def test_per_class_table_compares_teacher_with_the_headline_artifact(report):
    rows = _section(render_markdown(report), "Per-class accuracy")
    assert rows[1] == ("| class | examples | teacher onnx-fp32 (%) | student onnx-int8 (%) | vs teacher (points) "
                       "| student mostly mistakes it for |")
    assert "| d8 | 36 | 94.4 | 91.7 | -2.8 | d1 (3 of 36) |" in rows
    assert "| d0 | 36 | 100.0 | 100.0 | +0.0 | none |" in rows
    assert sum(line.startswith("| d") for line in rows) == 10
    assert "- Student: export/student.int8.onnx, the artifact the headline ships." in rows
    assert "- Held-out set: 360 examples; accuracy per true class (its recall)." in rows


def test_html_has_confusion_plot_in_the_per_class_section(report):
    page = render_html(report)
    section = page.split("<h2>Per-class accuracy</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.count("<svg") == 1 and section.count("<table>") == 1
    assert "student onnx-int8 (headline): 97.8% of 360" in section  # svg.fonttype none: text stays text
    assert "teacher onnx-fp32: 98.3% of 360" in section
    assert ">d9<" in section  # class labels from usage.labels on the axes
    assert page.index("Per-class accuracy") < page.index("<h2>Plots</h2>")


def test_core_ml_headline_falls_back_to_the_int8_onnx(report):
    report["headline"]["artifact"] = "export/student.mlpackage"
    md = render_markdown(report)
    assert "| student onnx-int8 (%) |" in md
    assert ("- Student: export/student.int8.onnx, the headline's export/student.mlpackage is not run on this "
            "machine.") in md
    assert "student onnx-int8: 97.8% of 360" in render_html(report)  # no "(headline)": it is the ONNX twin


def test_without_int8_the_student_fp32_onnx_is_compared(report):
    report["artifacts"][1:3] = []  # no int8 ONNX, no .ort: only Core ML, which has no confusion matrix
    report["artifacts"].insert(1, {"role": "student", "kind": "onnx-fp32", "path": "export/student.fp32.onnx",
                                   "size_bytes": 50000, "accuracy": 0.98, "confusion": _confusion({(8, 1): 1})})
    report["headline"]["artifact"] = "export/student.mlpackage"
    assert "| student onnx-fp32 (%) |" in render_markdown(report)


@pytest.mark.parametrize("confusion", [None, [], [[1, 2]], [[1, "x"], [0, 1]], "junk", [[1, -1], [0, 1]]])
def test_reports_without_usable_confusion_matrices_have_no_per_class_section(report, confusion):
    for a in report["artifacts"]:
        a.pop("confusion", None)
        if confusion is not None:
            a["confusion"] = confusion
    assert "Per-class accuracy" not in render_markdown(report)
    assert per_class_table(report) is None  # the HTML section is built from the same table


def test_html_without_confusion_matrices_keeps_the_other_plots(report):
    for a in report["artifacts"]:
        a.pop("confusion", None)
    page = render_html(report)
    assert "Per-class accuracy" not in page
    assert page.count("<svg") == 2


def test_only_the_teacher_matrix_still_renders(report):
    for a in report["artifacts"][1:]:
        a.pop("confusion", None)
    section = _section(render_markdown(report), "Per-class accuracy")
    assert "| d8 | 36 | 94.4 | n/a | n/a | n/a |" in section
    assert render_html(report).split("<h2>Per-class accuracy</h2>", 1)[1].split("<h2>", 1)[0].count("<svg") == 1


def test_time_per_stage_line(report):
    md = render_markdown(report)
    assert ("| time per stage | teacher 30.1 s, distill 40.0 s, qat 25.0 s, export 8.5 s, bench 0.4 s "
            "(total 104.0 s) |") in md
    del report["stage_wall_s"]  # a report.json from before the field: the model stages' own wall_s
    assert "| time per stage | teacher 30.1 s, distill 40.0 s, qat 25.0 s (total 95.1 s, model stages only) |" \
        in render_markdown(report)


def test_pruning_steps_table_with_flags():
    from edgedistill.report.render import render_html, render_markdown

    lat = {"p50": 0.02, "p90": 0.03, "kind": "measured"}
    report = {"target": "x86-avx2", "artifacts": [], "stages": [
        {"name": "teacher", "accuracy": 0.98, "params": 10, "macs": 100},
        {"name": "prune", "accuracy": 0.97, "params": 5, "macs": 50, "steps": [
            {"step": 0, "channels": [16, 32], "macs": 100, "params": 10, "accuracy": 0.98, "onnx_weight_bytes": 4000, "latency_ms": lat},
            {"step": 1, "channels": [8, 16], "macs": 50, "params": 5, "accuracy": 0.96, "onnx_weight_bytes": 2000,
             "latency_ms": lat, "flag": "pruned but not faster"}],
         "after_recovery": {"channels": [8, 16], "macs": 50, "params": 5, "accuracy": 0.97, "latency_ms": lat}}]}
    md = render_markdown(report)
    assert "## Pruning steps" in md and "| 1 | 8, 16 | 50 |" in md and "pruned but not faster" in md
    assert "after recovery" in md
    report["stages"][1]["steps"][0]["channels"] = [16] * 19 + [32] * 19 + [64, 48]  # runs of equal widths fold
    assert "| 0 | 16×19, 32×19, 64, 48 |" in render_markdown(report)
    report["stages"][1]["steps"][1]["removed_blocks"] = ["layer1.0", "layer2.3"]  # depth pruning says how deep
    assert "| 1 | 8, 16 (2 blocks removed) | 50 |" in render_markdown(report)
    html = render_html(report)
    assert "Pruning steps" in html and "pruned but not faster" in html


TARGET = {"name": "x86-avx2", "precision": "int8", "runtime": "onnxruntime"}


def test_notes_say_when_host_timings_undercount_pruning():
    from edgedistill.report import _notes

    prune = {"name": "prune", "flags": [1], "round_to": 8, "host_conv_block": 16}
    notes = _notes([], [prune], TARGET, None, [])
    assert any("removed MACs without" in n for n in notes)
    assert any("rounded to 8" in n and "blocks of 16 channels" in n and "stages.prune.round_to=16" in n for n in notes)
    del prune["host_conv_block"]
    assert not any("blocks of" in n for n in _notes([], [prune], TARGET, None, []))


def test_notes_say_plainly_when_int8_is_not_faster(tmp_path):
    from edgedistill.report import _notes

    lat = lambda p50: {"p50": p50, "p90": p50, "kind": "measured"}  # noqa: E731
    artifacts = [{"role": "student", "kind": "onnx-fp32", "latency_ms": lat(0.010)},
                 {"role": "student", "kind": "onnx-int8", "latency_ms": lat(0.012)}]
    notes = _notes(artifacts, [{"name": "prune", "flags": [2]}], TARGET, None, [])
    assert notes[0].startswith("int8 is not faster than fp32 on this CPU, which stands in for x86-avx2: "
                               "p50 0.012 ms vs 0.010 ms")
    assert "pruning steps 2 removed MACs" in notes[1]
    artifacts[1]["latency_ms"] = lat(0.005)
    assert _notes(artifacts, [], TARGET, None, []) == []
    from edgedistill.report.render import render_html, render_markdown

    report = {"target": "t", "stages": [], "artifacts": [], "notes": notes}
    assert "- int8 is not faster" in render_markdown(report) and "int8 is not faster" in render_html(report)
