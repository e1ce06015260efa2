"""The command line end to end, as a user runs it: real processes, real exit codes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import pytest

from edgedistill import io

ENV = {**os.environ, "TORCHAO_FORCE_SKIP_LOADING_SO_FILES": "1", "PYTHONWARNINGS": "ignore"}


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgedistill", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The README's main command on the built-in default recipe (the full recipe, not a shortened one)."""
    out = tmp_path_factory.mktemp("run") / "demo"
    result = cli("compress", "--recipe", "digits", "--target", "pixel-8", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_main_command_produces_every_artifact(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    assert report["target"] == "pixel-8" and report["recipe"]["name"] == "digits"
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "distill", "prune", "qat"]
    for s in report["stages"]:
        assert 0 <= s["accuracy"] <= 1 and s["params"] > 0 and s["macs"] > 0
    kinds = {(a["role"], a["kind"]) for a in report["artifacts"]}
    assert kinds == {("teacher", "onnx-fp32"), ("student", "onnx-fp32"), ("student", "onnx-int8"),
                     ("student", "ort"), ("student", "coreml")}
    for a in report["artifacts"]:
        path = run_dir / a["path"]
        assert path.exists() and a["size_bytes"] == io.dir_size(path) > 0
        if a["kind"] != "coreml":
            assert a["latency_ms"]["p50"] > 0 and a["latency_ms"]["p90"] >= a["latency_ms"]["p50"]
            assert a["latency_ms"]["kind"] == "measured-host"  # this machine is not a Pixel 8
    assert (run_dir / "07-export" / "ort" / "required_operators.config").exists()
    assert report["environment"]["world_size"] == 1 and report["environment"]["versions"]["torch"]
    assert (run_dir / "recipe.resolved.yaml").exists() and (run_dir / "report.md").exists()
    html = (run_dir / "report.html").read_text()
    assert html.count("<svg") >= 2 and "<script src" not in html


@pytest.mark.slow
def test_int8_student_keeps_accuracy_and_is_much_smaller(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    art = {(a["role"], a["kind"]): a for a in report["artifacts"]}
    teacher, int8 = art[("teacher", "onnx-fp32")], art[("student", "onnx-int8")]
    assert teacher["accuracy"] > 0.95
    assert int8["accuracy"] >= teacher["accuracy"] - 0.03
    assert teacher["size_bytes"] >= 8 * int8["size_bytes"]
    assert {"QLinearConv", "QGemm"} <= set(int8["integer_kernels"])
    assert art[("student", "ort")]["accuracy"] == int8["accuracy"]
    rungs = {(p["from"], p["to"]): p for p in report["parity"]}
    assert rungs[("student fp32 (torch)", "student fp32 (onnx)")]["max_abs"] < 1e-3
    assert rungs[("student int8 (torch)", "student int8 (onnx)")]["top1_agreement"] >= 0.97
    prune = next(s for s in report["stages"] if s["name"] == "prune")
    assert prune["macs"] <= 0.5 * prune["macs_before"] and all(c % 8 == 0 for c in prune["channels"])


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_report_regenerates(run_dir):
    result = cli("compress", "--recipe", "digits", "--target", "pixel-8", "--out", run_dir, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    last_run = events[max(i for i, e in enumerate(events) if e["event"] == "run_start"):]
    assert sorted(e["stage"] for e in last_run if e["event"] == "stage_skipped") == sorted(
        ["teacher", "student", "distill", "prune", "qat", "export", "bench", "report"])
    (run_dir / "report.html").unlink()
    result = cli("report", run_dir)
    assert result.returncode == 0 and "smaller than the teacher" in result.stdout
    assert (run_dir / "report.html").read_text().count("<svg") >= 2


@pytest.mark.slow
def test_parity_failure_exits_3_naming_the_artifact(run_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    result = cli("compress", "--target", "pixel-8", "--out", out, "--set", "stages.export.fp32_max_abs=1e-12",
                 "--set", "stages.export.fp32_max_rel=1e-12")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "parity: 07-export/teacher.fp32.onnx differs" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "07-export" / "done.json").exists()


@pytest.mark.slow
def test_kill_mid_distill_then_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--target", "x86-avx2", "--out", out, "--set", "stages.teacher.epochs=2", "--set", "stages.distill.epochs=60",
            "--set", "stages.prune.enabled=false", "--set", "stages.qat.enabled=false",
            "--set", "stages.export.formats=[onnx]", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "edgedistill", "compress", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "03-distill" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (out / "03-distill" / "done.json").exists()
    result = cli("compress", *args[:-1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "teacher: finished earlier, skipped" in result.stderr
    history = json.loads((out / "03-distill" / "result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 61))
    report = json.loads((out / "report.json").read_text())
    assert {a["kind"] for a in report["artifacts"]} == {"onnx-fp32", "onnx-int8"}  # PTQ when QAT is off
    assert next(a for a in report["artifacts"] if a["kind"] == "onnx-int8")["quantization"] == "ptq-ort-static"


def test_busy_out_is_refused(tmp_path):
    with io.RunLock(tmp_path):
        result = cli("compress", "--target", "pixel-8", "--out", tmp_path)
    assert result.returncode == 2 and "a live run" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--set", "stages.distil.epochs=3"], "stages.distil: unknown key; did you mean 'distill'?"),
    (["--set", "stages.distill.epochs=many"], "stages.distill.epochs: input should be a valid integer"),
    (["--recipe", "missing.yaml"], "--recipe missing.yaml: no such file or built-in recipe"),
    (["--recipe", "empty.yaml"], "empty.yaml: is empty"),
    (["--recipe", "malformed.yaml"], "malformed.yaml: line 3, column 1: invalid YAML"),
    (["--recipe", "typo.yaml"], "typo.yaml: stages.prune.macs_ratoi: unknown key; did you mean 'macs_ratio'?"),
    (["--target", "pixle-8"], "--target pixle-8: unknown target; did you mean 'pixel-8'?"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "malformed.yaml").write_text("seed: 1\nstages: {distill: [\n")
    (tmp_path / "typo.yaml").write_text(cli("recipe", "digits").stdout.replace("macs_ratio: 0.5", "macs_ratoi: 0.5"))
    if "--target" not in args:
        args = [*args, "--target", "pixel-8"]
    result = cli("compress", "--out", tmp_path / "out", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out" / "01-teacher").exists()


def test_targets_and_recipe_commands():
    listed = json.loads(cli("targets", "--json").stdout)
    assert {"iphone-15-pro", "pixel-8", "raspberry-pi-5", "x86-avx2", "x86-avx512-vnni"} <= {t["name"] for t in listed}
    assert all({"name", "runtime", "precision"} <= set(t) for t in listed)
    text = cli("recipe", "digits").stdout
    assert "stages:" in text and "temperature" in text
    assert cli("recipe", "nope").returncode == 2


def test_target_from_a_profile_path(tmp_path):
    from edgedistill.targets import TARGETS_DIR, load_target

    profile = tmp_path / "my-board.yaml"
    profile.write_text((TARGETS_DIR / "raspberry-pi-5.yaml").read_text().replace("name: raspberry-pi-5", "name: my-board"))
    assert load_target(profile).name == "my-board" and load_target(profile).threads == 4


@pytest.mark.slow
def test_cifar_resnets_with_feature_terms_end_to_end(tmp_path):
    """The zoo's residual networks through every stage: hooks, residual-coupled pruning, PT2E QAT, int8 export."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(160) % 4
    x = (rng.integers(0, 60, (160, 16, 16, 3)) + y[:, None, None, None] * 50).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    out = tmp_path / "run"
    result = cli("compress", "--recipe", "cifar10-resnet", "--target", "pixel-8", "--out", out, "--quiet",
                 "--set", f"data.path={tmp_path / 'd.npz'}", "--set", "data.labels=null", "--set", "data.batch_size=32",
                 "--set", "teacher.arch=resnet14", "--set", "student.arch=resnet8",
                 "--set", "stages.teacher.epochs=2", "--set", "stages.distill.epochs=2", "--set", "stages.prune.epochs=1",
                 "--set", "stages.qat.epochs=1", "--set", "stages.distill.features=[{student: layer3, teacher: layer3},"
                 " {student: layer2, teacher: layer2, kind: attention, weight: 100}]")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    distill = next(s for s in report["stages"] if s["name"] == "distill")
    assert {"fitnet_layer3", "attention_layer2", "kd_loss"} <= set(distill["history"][0])
    assert not distill["teacher_logits_cached"]  # augmented data: the teacher sees each crop live
    prune = next(s for s in report["stages"] if s["name"] == "prune")
    assert prune["macs"] <= 0.5 * prune["macs_before"]
    int8 = next(a for a in report["artifacts"] if a["kind"] == "onnx-int8")
    assert "QLinearConv" in int8["integer_kernels"]
    assert {a["kind"] for a in report["artifacts"]} == {"onnx-fp32", "onnx-int8", "ort", "coreml"}


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    """Data-parallel training with torchrun on CPU (gloo): metrics summed over ranks, rank 0 alone writes."""
    out = tmp_path / "ddp"
    args = ["--nproc_per_node", "2", "-m", "edgedistill", "compress", "--target", "x86-avx2", "--out", out, "--quiet",
            "--set", "stages.teacher.epochs=2", "--set", "stages.distill.epochs=2", "--set", "stages.prune.epochs=1",
            "--set", "stages.qat.enabled=false", "--set", "stages.export.formats=[onnx]"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", *map(str, args)], capture_output=True,
                            text=True, env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("smaller than the teacher") == 1  # one summary: rank 0's
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["world_size"] == 2
    distill = next(s for s in report["stages"] if s["name"] == "distill")
    assert all(h["world_size"] == 2 for h in distill["history"]) and distill["accuracy"] > 0.5
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "run_start" for e in events) == 1  # rank 1 wrote nothing


@pytest.mark.slow
def test_torchrun_refusal_ends_every_rank_with_rank_0s_line(tmp_path):
    """Rank 0 alone exports; when it refuses, the waiting rank exits with the same one line and code (no gloo
    traceback from a collective rank 0 left)."""
    out, logs = tmp_path / "ddp", tmp_path / "logs"
    args = ["--nproc_per_node", "2", "--log-dir", logs, "--redirects", "3", "-m", "edgedistill", "compress",
            "--target", "x86-avx2", "--out", out, "--quiet", "--set", "stages.teacher.epochs=1",
            "--set", "stages.distill.epochs=1", "--set", "stages.prune.enabled=false", "--set", "stages.qat.enabled=false",
            "--set", "stages.export.formats=[onnx]", "--set", "stages.export.fp32_max_abs=1e-12",
            "--set", "stages.export.fp32_max_rel=1e-12"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", *map(str, args)], capture_output=True,
                            text=True, env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode != 0
    per_rank = sorted(logs.glob("*/attempt_0/*/stderr.log"))
    assert len(per_rank) == 2, list(logs.rglob("*"))
    lines = [p.read_text().strip().splitlines() for p in per_rank]
    for rank_lines in lines:
        assert len(rank_lines) == 1 and "Traceback" not in rank_lines[0], rank_lines
        assert rank_lines[0].startswith("error: parity: 07-export/teacher.fp32.onnx differs")
        assert "stages.export.fp32_max_abs" in rank_lines[0]
    assert lines[0] == lines[1]
    assert "exitcode: 3" in result.stderr  # torchrun's own summary names each rank's code
