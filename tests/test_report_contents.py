"""What a real (shortened) run puts in its reports: confusion matrices, per-class accuracy, stage times, and a
report that `edgedistill report` rebuilds to the same report.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgedistill import pipeline
from edgedistill.cli import app
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

HELD_OUT = 360  # 20% of scikit-learn's 1,797 digits, stratified
SHORT = ["stages.teacher.epochs=2", "stages.distill.epochs=2", "stages.prune.epochs=1", "stages.qat.enabled=false",
         "stages.export.formats=[onnx]", "stages.bench.warmup=1", "stages.bench.repeats=5"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report-contents")
    pipeline.run(load_recipe("digits", SHORT), load_target("x86-avx2"), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def report(run_dir) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def _runnable(report: dict) -> list[dict]:
    return [a for a in report["artifacts"] if a["kind"] in ("onnx-fp32", "onnx-int8", "ort")]


@pytest.mark.slow
def test_bench_records_a_confusion_matrix_per_runnable_artifact(run_dir):
    bench = json.loads((run_dir / "08-bench" / "result.json").read_text())
    measured = [b for b in bench["artifacts"] if b["accuracy"] is not None]
    assert len(measured) >= 2  # the teacher's and the student's fp32 ONNX at least
    for b in measured:
        m = b["confusion"]
        assert len(m) == 10 and all(len(row) == 10 for row in m)
        assert all(type(v) is int and v >= 0 for row in m for v in row)
        assert sum(map(sum, m)) == HELD_OUT
        assert sum(m[i][i] for i in range(10)) == round(b["accuracy"] * HELD_OUT)


@pytest.mark.slow
def test_report_json_carries_confusion_and_per_class_accuracy(report):
    artifacts = _runnable(report)
    assert {(a["role"], a["kind"]) for a in artifacts} >= {("teacher", "onnx-fp32"), ("student", "onnx-fp32")}
    for a in artifacts:
        m, per_class = a["confusion"], a["per_class_accuracy"]
        assert sum(map(sum, m)) == HELD_OUT
        assert len(per_class) == 10
        for i, acc in enumerate(per_class):
            assert acc == pytest.approx(m[i][i] / sum(m[i]))
        # Per-class accuracies weighted by class size give the overall accuracy.
        assert sum(acc * sum(m[i]) for i, acc in enumerate(per_class)) == pytest.approx(a["accuracy"] * HELD_OUT)


@pytest.mark.slow
def test_report_json_has_every_stage_wall_time(report):
    times = report["stage_wall_s"]
    assert list(times) == ["teacher", "student", "distill", "prune", "export", "bench"]  # qat is disabled
    assert all(isinstance(t, float) and t >= 0 for t in times.values())
    assert times["teacher"] == next(s["wall_s"] for s in report["stages"] if s["name"] == "teacher")


@pytest.mark.slow
def test_html_has_confusion_plot_and_per_class_table(run_dir, report):
    page = (run_dir / "report.html").read_text()
    section = page.split("<h2>Per-class accuracy</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<table>" in section and "student mostly mistakes it for" in section
    assert len(re.findall(r"<tr><td>\d</td>", section)) == 10  # a row per digit
    assert "<svg" in section and 'aria-label="Held-out confusion matrices' in section
    shipped = next(a for a in report["artifacts"] if a["path"] == report["headline"]["artifact"])
    assert f"{shipped['role']} {shipped['kind']} (headline)" in section  # the matrix of what the target ships
    assert "time per stage" in page and "bench " in page


@pytest.mark.slow
def test_markdown_has_per_class_table(run_dir):
    md = (run_dir / "report.md").read_text()
    rows = md.split("## Per-class accuracy\n", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"^\| \d \| 3\d \|", rows, re.M)) == 10  # class, examples (35..37 per digit)
    assert "| time per stage | teacher " in md


@pytest.mark.slow
def test_report_command_regenerates_the_same_report_json(run_dir, report):
    before = {k: v for k, v in report.items() if k != "created"}
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "report.json").read_text())
    assert {k: v for k, v in after.items() if k != "created"} == before


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Chromium is not installed here (.ci/run installs Debian's chromium for this check)")
def test_report_renders_in_headless_chromium_with_no_network_and_no_console_message(run_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_report.py"
    done = subprocess.run([sys.executable, str(script), str(run_dir), "--screenshot", str(tmp_path / "page.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "FAIL" not in done.stdout and (tmp_path / "page.png").stat().st_size > 10_000


def _artifacts(teacher_ms: float, fp32_ms: float, int8_ms: float, kind: str) -> list[dict]:
    def art(role, k, path, ms):
        return {"role": role, "kind": k, "path": path, "size_bytes": 1000 if role == "teacher" else 100,
                "accuracy": 0.9, "latency_ms": {"p50": ms, "kind": kind}}

    return [art("teacher", "onnx-fp32", "t.onnx", teacher_ms), art("student", "onnx-fp32", "s.fp32.onnx", fp32_ms),
            art("student", "onnx-int8", "s.int8.onnx", int8_ms)]


def test_the_headline_never_calls_slower_faster_nor_recommends_int8_its_note_calls_no_faster():
    from edgedistill.report import _headline, _notes
    from edgedistill.report.render import _speed_card

    target = {"name": "x86-avx2", "precision": "int8", "runtime": "onnxruntime"}
    slower = _artifacts(1.0, 1.3, 1.4, "measured")  # the student is slower than the teacher, int8 slower than fp32
    head, summary = _headline(target, slower)
    assert "1.3x slower (measured)" in summary and "faster" not in summary
    assert head["artifact"] == "s.fp32.onnx"  # int8 measured no faster on the target's own kind of CPU
    note = next(n for n in _notes(slower, [], target, head, []) if n.startswith("int8 is not faster"))
    assert "stands in for x86-avx2" in note and "The headline artifact is s.fp32.onnx" in note
    assert _speed_card(0.7, " on pixel-8 (estimated)") == ("1.4x", "slower on pixel-8 (estimated)")
    assert _speed_card(2.0, " (measured)") == ("2.0x", "faster (measured)")

    host_only = _artifacts(1.0, 0.5, 0.6, "measured-host")  # a host that does not stand in: int8 stays the pick
    head, summary = _headline({**target, "name": "pixel-8"}, host_only)
    assert head["artifact"] == "s.int8.onnx" and "1.7x faster (measured-host)" in summary
    note = next(n for n in _notes(host_only, [], {**target, "name": "pixel-8"}, head, []) if n.startswith("int8"))
    assert "does not stand in for pixel-8" in note and "own int8 kernels decide" in note
