"""The error catalogue, as a user meets it: real `edgedistill` processes, real exit codes (errors found
before the pipeline starts run some of their cases in this process, INPROC: same code, no ~2 s of imports each).

Every failure a user can cause must end in ONE line on stderr ("error: <field>: <cause>; <fix>"), exit 2
(their input) or 3 (the pipeline refused its own result), and no traceback. A killed run (SIGINT, SIGTERM,
kill -9) mid-distill, mid-prune or mid-export must complete when rerun; a live --out is refused (exit 2);
a stale lock is not.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One torch thread: this machine has 2 cores and background load; with 2 threads each epoch slows ~40x.
ENV = {**os.environ, "TORCHAO_FORCE_SKIP_LOADING_SO_FILES": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

# A whole run in about 10 s: tiny models, 256 training examples, ONNX only, no latency timing.
FAST = ["--target", "x86-avx2", "--quiet", "--set", "teacher.channels=[16, 32]", "--set", "student.channels=[8, 16]",
        "--set", "data.limit_train=256", "--set", "stages.teacher.epochs=1", "--set", "stages.distill.epochs=2",
        "--set", "stages.prune.epochs=2", "--set", "stages.prune.round_to=1", "--set", "stages.prune.measure_latency=false",
        "--set", "stages.qat.enabled=false", "--set", "stages.export.formats=[onnx]", "--set", "stages.bench.enabled=false"]
# The digits recipe's labels and normalization fit its own data only.
NPZ = ["--set", "data.dataset=npz", "--set", "data.labels=null", "--set", "data.normalization=null"]
# Only what the teacher and student stages need (no preflight export, no report), quietly.
NO_EXPORT = [*FAST, "--set", "stages.export.enabled=false"]  # no preflight, no export: 4 s less per run
MODELS_ONLY = ["--quiet", *(x for s in ("distill", "prune", "qat", "export", "bench", "report") for x in ("--set", f"stages.{s}.enabled=false"))]


def cli(*args, cwd=None, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "edgedistill", *map(str, args)], capture_output=True, text=True,
                          env=env or ENV, cwd=cwd, timeout=timeout)


def one_line(result, code: int, *needles: str) -> str:
    """The contract: exit `code`, exactly one stderr line 'error: ...' holding every needle, no traceback.
    `result` is a finished process, or (exit code, stderr) of _in_process."""
    returncode, err = (result.returncode, result.stderr) if hasattr(result, "returncode") else result
    assert returncode == code, f"exit {returncode}, expected {code}:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines, expected 1:\n{err[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


class _Reached(Exception):
    """Validation passed; the pipeline would have started."""


def _reached(*a, **k):
    raise _Reached


def _in_process(monkeypatch, capsys, argv, run=_reached):
    """cli.main() in this process with pipeline.run replaced: (exit code or None when validation passed, stderr).

    For errors found before the pipeline starts: the same code path as a real process without its ~2 s of
    imports. Each test below that uses it keeps at least one case in a real process."""
    from edgedistill import cli as cli_module, pipeline

    monkeypatch.setattr(pipeline, "run", run)
    monkeypatch.setattr(sys, "argv", ["edgedistill", *map(str, argv)])
    capsys.readouterr()
    try:
        cli_module.main()
    except _Reached:
        return None, capsys.readouterr().err
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


PROC, INPROC = "process", "in-process"


def compress(how: str, monkeypatch, capsys, *argv, **kw):
    """`edgedistill compress *argv`: in a real process (PROC), or for an error found before the pipeline starts,
    in this one (INPROC: the same code path without a process's ~2 s of imports)."""
    if how == PROC:
        return cli("compress", *argv, **kw)
    assert not kw, kw
    return _in_process(monkeypatch, capsys, ["compress", *argv])


def _save_model(path, arch, channels, input_shape, classes):
    import torch

    from edgedistill.models import build_model

    torch.manual_seed(0)
    torch.save(build_model(arch, channels, input_shape, classes).state_dict(), path)
    return path


def _npz(path, shape, classes=4, n=96):
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    np.savez(path, x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=y)
    return path


def _metrics(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    return {"stages": [(s["name"], s["accuracy"], [round(h["loss"], 6) for h in s.get("history") or []])
                       for s in report["stages"]],
            "artifacts": sorted((a["role"], a["kind"]) for a in report["artifacts"])}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(args): the metrics of an uninterrupted run with `args` (run once per module), which every
    interrupted-then-resumed run with the same args must reproduce."""
    done: dict = {}

    def metrics(args):
        if tuple(args) not in done:
            out = tmp_path_factory.mktemp("reference") / "run"
            result = cli("compress", "--out", out, *args)
            assert result.returncode == 0, result.stderr[-3000:]
            done[tuple(args)] = _metrics(out)
        return done[tuple(args)]
    return metrics


# ================================================================ recipe: YAML, keys, types, --set


@pytest.mark.parametrize("how, text, needles", [
    (PROC, "seed: 1\nstages: {distill: [\n", ["line 3, column 1: invalid YAML", "fix the syntax there"]),
    (INPROC, "seed: 1\n\tteacher: x\n", ["invalid YAML", "fix the syntax"]),
    (INPROC, "- just\n- a list\n", ["is a list, expected a mapping of keys", "edgedistill recipe digits"]),
    (INPROC, "student: {arch: cnn, channels: [8]}\n", ["teacher: required key is missing"]),
    (INPROC, "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, channels: [8]}\nstages: {distill: {epochs: ten}}\n",
     ["stages.distill.epochs: input should be a valid integer", "'ten'"]),
    (PROC, "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, chanels: [8]}\n",
     ["student.chanels: unknown key; did you mean 'channels'?"]),
    (INPROC, "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: resnet21}\n",
     ["student: unknown arch 'resnet21'; did you mean"]),
    (INPROC, "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, channels: [8]}\ndevice: tpu\n",
     ["device: input should be 'auto', 'cpu' or 'cuda'"]),
    # a key given twice is refused, at the top level or nested, never silently resolved to the last value
    (PROC, "seed: 1\nteacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, channels: [8]}\nseed: 2\n",
     ["r.yaml: line 4: duplicate key 'seed' (first on line 1); keep one of them"]),
    (INPROC, "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, channels: [8]}\nstages:\n  distill:\n"
             "    epochs: 3\n    lr: 0.1\n    epochs: 30\n", ["r.yaml: line 7: duplicate key 'epochs' (first on line 5)"]),
    (INPROC, "teacher: {arch: cnn, channels: [8], arch: mlp}\nstudent: {arch: cnn, channels: [8]}\n",
     ["r.yaml: line 1: duplicate key 'arch' (first on line 1)"]),
])
def test_recipe_file_errors_are_one_line(monkeypatch, capsys, tmp_path, how, text, needles):
    (tmp_path / "r.yaml").write_text(text)
    one_line(compress(how, monkeypatch, capsys, "--recipe", tmp_path / "r.yaml", "--target", "x86-avx2",
                      "--out", tmp_path / "o"), 2, *needles)
    assert not (tmp_path / "o").exists()  # nothing written for a recipe that does not validate


def test_recipe_file_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "r.yaml").write_bytes(b"\xff\xfe\x00garbage\x81\n")
    one_line(cli("compress", "--recipe", tmp_path / "r.yaml", "--target", "x86-avx2", "--out", tmp_path / "o"), 2,
             "r.yaml: cannot read")


@pytest.mark.parametrize("how, assignment, needles", [
    (PROC, "stages.distill.epochs", ["--set stages.distill.epochs: expected KEY=VALUE", "e.g. --set stages.distill.epochs=3"]),
    (INPROC, "=3", ["is not a dotted key like stages.distill.epochs"]),
    (INPROC, "stages..epochs=1", ["'stages..epochs' is not a dotted key"]),
    (INPROC, "seed.x=1", ["--set seed.x: 'seed' is a value, not a section"]),
    (INPROC, "stages.distill.epochs=[1", ["--set stages.distill.epochs: line 1, column 3: invalid YAML"]),
    (INPROC, "stages.distill.epochs=-1", ["stages.distill.epochs: input should be greater than or equal to 0", "(got -1)"]),
    # counts are bounded: a few zeros too many is refused at once, naming the bound
    (PROC, "stages.distill.epochs=1000000000000",
     ["stages.distill.epochs: input should be less than or equal to 10000", "(got 1000000000000)"]),
    (INPROC, "data.batch_size=10000000", ["data.batch_size: input should be less than or equal to 65536"]),
    (INPROC, "stages.bench.repeats=1000000000000", ["stages.bench.repeats: input should be less than or equal to 1000000"]),
    (INPROC, "stages.distill.data_free.iterations=999999999",
     ["stages.distill.data_free.iterations: input should be less than or equal to 100000"]),
    (INPROC, "stages.distill.lr=fast", ["stages.distill.lr: input should be a valid number", "'fast'"]),
    (INPROC, "stages.prune.importance=magnitude",
     ["stages.prune.importance: input should be 'l2', 'l1', 'taylor' or 'bn_scale'"]),
    (PROC, "stages.distil.epochs=3", ["stages.distil: unknown key; did you mean 'distill'?"]),
    (INPROC, "stages.distill.temprature=2", ["stages.distill.temprature: unknown key; did you mean 'temperature'?"]),
    (INPROC, "stages.teacher.enabled=false", ["stage 'teacher' cannot be disabled"]),
    (INPROC, "student.from_teacher=true", ["student.from_teacher needs student.arch and channels equal to the teacher's"]),
    (PROC, "seed=line1\nline2", ["seed"]),  # a newline typed into a value stays on one line
])
def test_bad_set_is_one_line_naming_the_key(monkeypatch, capsys, tmp_path, how, assignment, needles):
    one_line(compress(how, monkeypatch, capsys, "--target", "x86-avx2", "--out", tmp_path / "o", f"--set={assignment}"),
             2, *needles)


def test_unknown_key_inside_a_list_item_suggests_the_key(monkeypatch, capsys, tmp_path):
    one_line(compress(INPROC, monkeypatch, capsys, "--target", "x86-avx2", "--out", tmp_path / "o",
                      "--set", "stages.distill.features=[{studnet: features, teacher: features}]"),
             2, "stages.distill.features.0.studnet: unknown key; did you mean 'student'?")
    one_line(compress(INPROC, monkeypatch, capsys, "--target", "x86-avx2", "--out", tmp_path / "o",
                      "--set", "stages.distill.features=[{student: features, teacher: features, wieght: 2}]"),
             2, "stages.distill.features.0.wieght: unknown key; did you mean 'weight'?")


@pytest.mark.parametrize("args", [["--target", "x86-avx2", "--set"], [], ["--target", "x86-avx2", "--bogus", "1"]])
def test_usage_errors_are_one_line(tmp_path, args):
    one_line(cli("compress", "--out", tmp_path / "o", *args), 2)


# ================================================================ recipes never execute anything


def test_yaml_tags_in_a_recipe_file_or_set_never_run(tmp_path):
    pwned = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(f"seed: !!python/object/apply:os.system ['touch {pwned}']\n"
                                        "teacher: {arch: cnn, channels: [8]}\nstudent: {arch: cnn, channels: [8]}\n")
    one_line(cli("compress", "--recipe", tmp_path / "evil.yaml", "--target", "x86-avx2", "--out", tmp_path / "o"),
             2, "invalid YAML")
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o",
                 "--set", f"seed=!!python/object/apply:os.system ['touch {pwned}']"), 2, "--set seed", "invalid YAML")
    # an arch is a name from the zoo, never an import path
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", "student.arch=os.system"),
             2, "student: unknown arch 'os.system'")
    assert not pwned.exists()


@pytest.mark.slow
def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    import torch

    pwned = tmp_path / "pwned"

    class P:  # pickled as a call of os.system: saving it runs nothing, loading it would
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    torch.save({"features.0.weight": torch.ones(1), "x": P()}, tmp_path / "evil.pt")
    assert not pwned.exists()
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"teacher.checkpoint={tmp_path / 'evil.pt'}",
                 *MODELS_ONLY)
    one_line(result, 2, "evil.pt: refused to load", "could run code", "torch.save(model.state_dict(), path)")
    assert not pwned.exists()


@pytest.mark.slow
def test_a_whole_pickled_model_is_refused_with_the_fix(tmp_path):
    import torch

    from edgedistill.models import build_model

    torch.save(build_model("cnn", [32, 64, 128], (1, 8, 8), 10), tmp_path / "model.pt")
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"teacher.checkpoint={tmp_path / 'model.pt'}",
                 *MODELS_ONLY)
    one_line(result, 2, "model.pt: refused to load", "save a plain state_dict")


@pytest.mark.slow
@pytest.mark.parametrize("make, field, needles", [
    ("empty", "teacher.checkpoint", ["is empty (0 bytes), not a torch checkpoint"]),
    ("truncated", "student.checkpoint", ["is truncated or corrupt, not a readable torch checkpoint"]),
    ("pickle", "teacher.checkpoint", ["is not a readable torch checkpoint (a plain pickle or another format"]),
])
def test_empty_truncated_or_pickled_checkpoint_names_field_file_and_fix(tmp_path, make, field, needles):
    import pickle

    path = tmp_path / "w.pt"
    if make == "empty":
        path.write_bytes(b"")
    elif make == "truncated":
        whole = _save_model(tmp_path / "whole.pt", "cnn", [8, 16], (1, 8, 8), 10).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    else:  # a plain pickle whose loading would call os.system: refused, torch's own warnings kept quiet
        pwned = tmp_path / "pwned"
        path.write_bytes(pickle.dumps({"x": _Pwn(str(pwned))}, protocol=4))
    env = {k: v for k, v in ENV.items() if k != "PYTHONWARNINGS"}  # a warning must not leak through either
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"{field}={path}",
                 "--set", "student.channels=[8, 16]", "--set", "stages.teacher.epochs=1", *MODELS_ONLY, env=env)
    one_line(result, 2, f"{field}: {path} ", *needles, "re-save it with torch.save(model.state_dict(), path)")
    assert not (tmp_path / "pwned").exists()


class _Pwn:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# ================================================================ paths: missing, unreadable, relative


@pytest.mark.slow
@pytest.mark.parametrize("how, make, field, needles", [
    (INPROC, None, "teacher.checkpoint", ["teacher.checkpoint:", "nope.pt does not exist (resolved to"]),
    (PROC, "junk", "teacher.checkpoint", ["not a readable torch checkpoint"]),
    (PROC, "dir", "teacher.checkpoint", ["teacher.checkpoint:", "nope.pt is a directory, not a checkpoint file"]),
    (INPROC, None, "data.path", ["data.path:", "nope.pt does not exist (resolved to"]),
])
def test_missing_or_unreadable_paths(monkeypatch, capsys, tmp_path, how, make, field, needles):
    path = tmp_path / "nope.pt"
    if make == "junk":
        path.write_bytes(b"PK\x03\x04 not really a checkpoint")
    elif make == "dir":
        path.mkdir()
    extra = ["--set", "data.dataset=npz"] if field == "data.path" else []
    result = compress(how, monkeypatch, capsys, "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"{field}={path}",
                      *extra, *MODELS_ONLY)
    one_line(result, 2, *needles)


@pytest.mark.slow
def test_missing_recipe_and_target_files(tmp_path):
    one_line(cli("compress", "--recipe", tmp_path / "nope.yaml", "--target", "x86-avx2", "--out", tmp_path / "o"),
             2, "--recipe", "no such file or built-in recipe (built-ins:")
    one_line(cli("compress", "--target", tmp_path / "nope.yaml", "--out", tmp_path / "o"), 2,
             "unknown target", "(or a path to a profile YAML)")
    one_line(cli("report", tmp_path / "never-ran"), 2, "no such run directory; pass the --out of a compress run")
    one_line(cli("bench", tmp_path / "nope.onnx", "--target", "x86-avx2"), 2, "nope.onnx: no such model file")


@pytest.mark.slow
def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "f"), 2, "exists and is not a directory")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under-a-file", "/proc"])
def test_out_that_cannot_be_created(tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "out" if where == "under-a-file" else Path("/proc/edgedistill-test-out")
    one_line(cli("compress", "--target", "x86-avx2", "--out", out, *MODELS_ONLY), 2, "--out")


def _digits_recipe() -> str:
    from edgedistill.recipe import builtin_text

    return builtin_text("digits")


@pytest.mark.slow
def test_recipe_paths_resolve_against_the_recipe_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    _npz(tmp_path / "recipes" / "data" / "d.npz", (8, 8))
    text = _digits_recipe().replace("dataset: digits", "dataset: npz\n  path: data/d.npz", 1)
    assert "path: data/d.npz" in text
    (tmp_path / "recipes" / "r.yaml").write_text(text)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = cli("compress", "--recipe", tmp_path / "recipes" / "r.yaml", "--out", tmp_path / "o", *FAST[:2], "--quiet",
                 "--set", "stages.teacher.epochs=1", *NPZ[2:], *MODELS_ONLY, cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-2000:]
    resolved = (tmp_path / "o" / "recipe.resolved.yaml").read_text()
    assert str((tmp_path / "recipes" / "data" / "d.npz").resolve()) in resolved
    (tmp_path / "recipes" / "r2.yaml").write_text(text.replace("data/d.npz", "data/missing.npz"))
    monkeypatch.chdir(elsewhere)
    one_line(compress(INPROC, monkeypatch, capsys, "--recipe", tmp_path / "recipes" / "r2.yaml", "--target", "x86-avx2",
                      "--out", tmp_path / "o2"), 2, "data.path: data/missing.npz does not exist",
             str((tmp_path / "recipes" / "data" / "missing.npz").resolve()))


def test_relative_set_paths_resolve_against_the_working_directory(monkeypatch, capsys, tmp_path):
    """A path typed on the command line is relative to where it was typed; one in the recipe file, to the file."""
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    _npz(tmp_path / "recipes" / "data" / "d.npz", (8, 8))
    (tmp_path / "recipes" / "r.yaml").write_text(
        _digits_recipe().replace("dataset: digits", "dataset: npz\n  path: data/d.npz", 1))
    _save_model(tmp_path / "t.pt", "cnn", [32, 64, 128], (1, 8, 8), 10)
    _npz(tmp_path / "cli.npz", (8, 8))
    monkeypatch.chdir(tmp_path)
    seen = []

    def record(recipe, *a, **k):
        seen.append(recipe)
        raise _Reached

    base = ["--recipe", "recipes/r.yaml", "--target", "x86-avx2", "--out", tmp_path / "o", *NPZ[2:]]
    for sets in (["teacher.checkpoint=t.pt"], ["teacher={arch: cnn, channels: [32, 64, 128], checkpoint: t.pt}"]):
        code, err = _in_process(monkeypatch, capsys, ["compress", *base, *(x for s in sets for x in ("--set", s))], run=record)
        assert code is None, err
        assert seen[-1].teacher.checkpoint == tmp_path / "t.pt"  # typed here: the working directory
        assert seen[-1].data.path == tmp_path / "recipes" / "data" / "d.npz"  # in the file: the file's folder
    code, err = _in_process(monkeypatch, capsys, ["compress", *base, "--set", "data.path=cli.npz"], run=record)
    assert code is None, err
    assert seen[-1].data.path == tmp_path / "cli.npz"
    one_line(compress(INPROC, monkeypatch, capsys, *base, "--set", "teacher.checkpoint=recipes/../nope.pt"), 2,
             "teacher.checkpoint: recipes/../nope.pt does not exist", f"(resolved to {tmp_path / 'nope.pt'})")


@pytest.mark.slow
def test_relative_out_completes(tmp_path):
    result = cli("compress", "--out", "runs/rel", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "rel" / "report.json").exists()


# ================================================================ full disk


def _in_tiny_tmpfs(tmp_path, size: str, *args):
    """Run compress with --out on a real tmpfs of `size` (a user+mount namespace: no root needed)."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {mnt}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode()[:200]}")
    command = " ".join(map(lambda a: "'" + str(a).replace("'", "'\\''") + "'",
                           [sys.executable, "-m", "edgedistill", "compress", "--out", mnt / "out", *args]))
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mnt} && exec {command}"],
                          capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.slow
def test_full_disk_while_writing_run_files_is_one_line(tmp_path):
    result = _in_tiny_tmpfs(tmp_path, "8k", "--target", "x86-avx2", "--quiet", "--set", "data.limit_train=100", *MODELS_ONLY)
    one_line(result, 2, f"error: {tmp_path / 'mnt' / 'out'}/", ": no space left on the device",
             "free some space or choose another --out, then rerun to resume")


@pytest.mark.slow
def test_full_disk_while_saving_a_checkpoint_is_one_line(tmp_path):
    result = _in_tiny_tmpfs(tmp_path, "200k", "--target", "x86-avx2", "--quiet", "--set", "data.limit_train=100",
                            "--set", "stages.teacher.epochs=1", *MODELS_ONLY)
    one_line(result, 2, f"error: {tmp_path / 'mnt' / 'out' / '01-teacher'}/", ": no space left on the device")


# ================================================================ teacher / student / data mismatches


@pytest.mark.slow
def test_teacher_checkpoint_for_another_number_of_classes(tmp_path):
    _save_model(tmp_path / "t.pt", "cnn", [32, 64, 128], (1, 8, 8), 3)
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"teacher.checkpoint={tmp_path / 't.pt'}",
                 *MODELS_ONLY)
    one_line(result, 2, "teacher.checkpoint:", "classifier.weight is (3, 128) in the checkpoint but (10, 128) in the model",
             "set the channels (and classes/input) it was trained with")


@pytest.mark.slow
def test_teacher_checkpoint_for_other_input_channels(tmp_path):
    _save_model(tmp_path / "t.pt", "cnn", [16, 32], (1, 8, 8), 4)  # grayscale teacher, RGB data
    data = _npz(tmp_path / "rgb.npz", (8, 8, 3))
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", *NPZ,
                 "--set", f"data.path={data}", "--set", "teacher.channels=[16, 32]",
                 "--set", f"teacher.checkpoint={tmp_path / 't.pt'}", *MODELS_ONLY)
    one_line(result, 2, "teacher.checkpoint:", "features.0.weight is (16, 1, 3, 3) in the checkpoint but (16, 3, 3, 3)")


@pytest.mark.slow
def test_teacher_checkpoint_for_another_input_shape(tmp_path):
    _save_model(tmp_path / "t.pt", "mlp", [32], (1, 8, 8), 4)  # 8x8 teacher, 16x16 data
    data = _npz(tmp_path / "big.npz", (16, 16))
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", *NPZ,
                 "--set", f"data.path={data}", "--set", "teacher.arch=mlp", "--set", "teacher.channels=[32]",
                 "--set", f"teacher.checkpoint={tmp_path / 't.pt'}", *MODELS_ONLY)
    one_line(result, 2, "teacher.checkpoint:", "features.1.weight is (32, 64) in the checkpoint but (32, 256)")


@pytest.mark.slow
def test_checkpoint_for_another_architecture(tmp_path):
    _save_model(tmp_path / "t.pt", "mlp", [32], (1, 8, 8), 10)
    result = cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", f"teacher.checkpoint={tmp_path / 't.pt'}",
                 *MODELS_ONLY)
    one_line(result, 2, "teacher.checkpoint:", "does not fit arch 'cnn'", "set the arch and channels the checkpoint was made with")


@pytest.mark.slow
def test_data_mismatches(tmp_path):
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o1", "--set", "data.labels=[a, b, c]", *MODELS_ONLY),
             2, "data: train label ", "is not one of the 3 classes data.labels names (0..2); fix that label, or name "
                                      "its class in data.labels")
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o2", *MODELS_ONLY,
                 "--set", "data.normalization={mean: [0.1, 0.1, 0.1], std: [1, 1, 1]}"),
             2, "data.normalization: has 3 channel(s) but the images have 1")


def _labelled_npz(path: Path, labels) -> Path:
    import numpy as np

    y = np.asarray(labels)
    np.savez(path, x_train=np.random.default_rng(0).integers(0, 256, (len(y), 8, 8), dtype=np.uint8), y_train=y)
    return path


def _with_label(n: int, index: int, value: int) -> list[int]:
    y = [i % 4 for i in range(n)]
    y[index] = value
    return y


LABELS_RUN = [*NPZ, *MODELS_ONLY, "--set", "stages.teacher.epochs=1", "--set", "teacher.channels=[8]",
              "--set", "student.channels=[8]", "--target", "x86-avx2"]


@pytest.mark.slow
@pytest.mark.parametrize("labels, declared, needles", [
    # a label outside data.labels is named, with its split and index, instead of blaming data.labels
    (_with_label(96, 17, 7), "[a, b, c, d]",
     ["data: train label 7 (example 17 of the train split) is not one of the 4 classes data.labels names (0..3)"]),
    # without data.labels one stray label must not make a 100-class model
    (_with_label(96, 17, 99), None,
     ["data: train label 99 (example 17 of the train split) implies 100 classes, but 95 of the ids 0..99 have no "
      "example", "labels must be 0..K-1 with every class present"]),
    # one class: a model that always answers it would score 100%
    ([0] * 96, None, ["data: the training split has only class '0'; a classifier needs examples of at least 2 classes"]),
])
def test_labels_the_classes_cannot_support_are_refused(tmp_path, labels, declared, needles):
    data = _labelled_npz(tmp_path / "d.npz", labels)
    extra = ["--set", f"data.labels={declared}"] if declared else []
    one_line(cli("compress", "--out", tmp_path / "o", *LABELS_RUN, "--set", f"data.path={data}", *extra), 2, *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_class_without_training_examples_is_a_warning(tmp_path):
    data = _labelled_npz(tmp_path / "d.npz", [i % 3 for i in range(96)])
    result = cli("compress", "--out", tmp_path / "o", *LABELS_RUN, "--set", f"data.path={data}",
                 "--set", "data.labels=[a, b, c, d]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines() == ["warning: data: 1 of 4 classes have no training example ('d'); the model "
                                          "cannot learn them"]
    assert json.loads((tmp_path / "o" / "02-student" / "result.json").read_text())["accuracy"] is not None


@pytest.mark.slow
def test_a_text_label_outside_data_labels_is_named(text_files, tmp_path):
    one_line(text_cli(tmp_path / "o", text_files["encoder"], text_files["train"], "--set", "data.labels=[pos, other]"),
             2, "data: train label 'neg' (example ", "of the train split) is not one of data.labels ['pos', 'other']",
             "fix that label, or add its class to data.labels")


def _image_folder(root: Path, classes: list[str], per_class: int = 8) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_an_image_folders_class_names_win_over_the_recipes_labels(tmp_path):
    """Starting from the digits recipe (labels "0".."9") with one's own folder: its class names are used."""
    from edgedistill.data import load_data
    from edgedistill.recipe import load_recipe

    folder = _image_folder(tmp_path / "imgs", ["cat", "dog", "owl"])
    sets = ["data.dataset=folder", f"data.path={folder}", "data.normalization=null"]
    data = load_data(load_recipe("digits", sets).data, 0)
    assert data.spec.labels == ("cat", "dog", "owl") and data.spec.num_classes == 3
    note = ("warning: data.labels (0, 1, 2, 3, ...) differ from the class names the data carries (cat, dog, owl); "
            "the data's names are used, data.labels is ignored")
    assert data.notes == (note.removeprefix("warning: "),)
    result = cli("compress", "--recipe", "digits", "--out", tmp_path / "o", *MODELS_ONLY, "--target", "x86-avx2",
                 "--set", "stages.teacher.epochs=1", *(x for s in sets for x in ("--set", s)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines() == [note]
    # the recipe's own labels for the folder's names: no note at all
    same = load_data(load_recipe("digits", [*sets, "data.labels=[cat, dog, owl]"]).data, 0)
    assert same.spec.labels == ("cat", "dog", "owl") and same.notes == ()


@pytest.mark.slow
def test_teacher_normalization_for_other_channels(tmp_path):
    result = cli("compress", "--out", tmp_path / "o", *FAST, "--set", "stages.distill.epochs=1",
                 "--set", "teacher.normalization={mean: [0.1, 0.1, 0.1], std: [1, 1, 1]}")
    one_line(result, 2, "teacher.normalization")


@pytest.mark.slow
@pytest.mark.parametrize("features", ["[{student: features, teacher: classifier}]",
                                      "[{student: classifier, teacher: classifier, kind: attention}]"])
def test_feature_terms_that_do_not_fit(tmp_path, features):
    result = cli("compress", "--out", tmp_path / "o", *FAST, "--set", "stages.distill.epochs=1",
                 "--set", f"stages.distill.features={features}", "--set", "stages.prune.enabled=false")
    one_line(result, 2, "stages.distill.features")


@pytest.mark.slow
def test_feature_term_naming_a_missing_module(tmp_path):
    result = cli("compress", "--out", tmp_path / "o", *NO_EXPORT, "--set", "stages.distill.epochs=1",
                 "--set", "stages.distill.features=[{student: layer9, teacher: features}]")
    one_line(result, 2, "features: the student has no module 'layer9'; module paths look like")


# ================================================================ targets


def test_unknown_target_and_bad_profiles(monkeypatch, capsys, tmp_path):
    one_line(cli("compress", "--target", "pixel8", "--out", tmp_path / "o"), 2, "--target pixel8: unknown target; did you mean 'pixel-8'?")
    (tmp_path / "t.yaml").write_text("name: t\nruntime: onnxruntime\narch: x86_64\nprecison: int8\n")
    one_line(compress(INPROC, monkeypatch, capsys, "--target", tmp_path / "t.yaml", "--out", tmp_path / "o"), 2,
             "target t.yaml: precison: unknown key; did you mean 'precision'?")
    (tmp_path / "t.yaml").write_text("name: t\nruntime: onnxruntime\nprecision: int8\n")
    one_line(compress(INPROC, monkeypatch, capsys, "--target", tmp_path / "t.yaml", "--out", tmp_path / "o"), 2,
             "target t.yaml: arch: required key is missing")
    (tmp_path / "t.yaml").write_text("name: t\nruntime: onnxruntime\narch: x86_64\nprecision: int8\nprecision: fp32\n")
    one_line(cli("compress", "--target", tmp_path / "t.yaml", "--out", tmp_path / "o"), 2,
             "t.yaml: line 5: duplicate key 'precision' (first on line 4); keep one of them")


@pytest.mark.slow
def test_cuda_asked_for_on_a_machine_without_one(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line(cli("compress", "--target", "x86-avx2", "--out", tmp_path / "o", "--set", "device=cuda", *MODELS_ONLY), 2,
             "device: 'cuda' was asked for but no CUDA GPU is visible; use device: auto or cpu")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["pixel-8", "profile-with-missing-isa"])
def test_latency_budget_on_a_target_this_machine_cannot_time(tmp_path, target):
    if target != "pixel-8":
        (tmp_path / "t.yaml").write_text("name: future-x86\nruntime: onnxruntime\narch: x86_64\n"
                                         "isa: [avx10_2_512]\nprecision: int8\n")
        target = tmp_path / "t.yaml"
    result = cli("compress", "--out", tmp_path / "o", *NO_EXPORT, "--target", target, "--set", "stages.distill.enabled=false",
                 "--set", "stages.prune.latency_ms=1.0")
    one_line(result, 2, "stages.prune.latency_ms:", "cannot be timed on this machine", "use a host target")
    assert not (tmp_path / "o" / "01-teacher").exists()  # refused before any training


@pytest.mark.slow
def test_bench_of_an_ort_file_for_a_target_this_machine_cannot_time(tmp_path):
    (tmp_path / "m.ort").write_bytes(b"\x00" * 64)
    one_line(cli("bench", tmp_path / "m.ort", "--target", "pixel-8"), 2, "pixel-8 cannot be timed on this machine",
             "pass the .onnx the artifact was made from")


# ================================================================ ONNX inputs must pass onnx.checker


@pytest.fixture
def invalid_onnx(tmp_path):
    """Parses as ONNX, fails onnx.checker: a node reads a tensor nothing defines."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["undefined"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "invalid.onnx")
    return tmp_path / "invalid.onnx"


@pytest.mark.slow
def test_bench_on_the_host_refuses_an_invalid_onnx(invalid_onnx):
    one_line(cli("bench", invalid_onnx, "--target", "x86-avx2"), 2, "invalid.onnx: ONNX Runtime cannot load it")


@pytest.mark.slow
@pytest.mark.parametrize("command, target", [("check", "pixel-8"), ("bench", "pixel-8")])  # check: one reader for all targets
def test_invalid_onnx_inputs_are_refused(invalid_onnx, command, target):
    one_line(cli(command, invalid_onnx, "--target", target), 2, "invalid.onnx: not a valid ONNX model (",
             "is not output of any previous nodes")


# ================================================================ a loss that turns NaN/Inf


@pytest.mark.slow
def test_diverging_loss_is_refused_naming_stage_and_epoch(tmp_path):
    out = tmp_path / "o"
    result = cli("compress", "--out", out, *NO_EXPORT, "--set", "stages.distill.lr=1e12")
    one_line(result, 3, "stage distill: loss became nan in epoch 1; stopped", "lower stages.distill.lr")
    assert not (out / "03-distill" / "done.json").exists() and not (out / "04-prune").exists()
    assert (out / "01-teacher" / "done.json").exists()  # the stages before it stay finished


# The loss turns NaN in the epoch after distill's first checkpoint (epoch 2), whatever the data and batch size.
_NAN_IN_EPOCH_2 = r"""
import sys
import edgedistill.epochs as epochs
import edgedistill.distill.task as task
save, forward, saved = epochs.save_torch, task.DistillationTask.forward, []
def save_and_note(path, obj):
    save(path, obj)
    saved.append(path.parent.name)
def nan_after_first_checkpoint(self, *a, **k):
    out = forward(self, *a, **k)
    if "03-distill" in saved:
        out["loss"] = out["loss"] * float("nan")
    return out
epochs.save_torch, task.DistillationTask.forward = save_and_note, nan_after_first_checkpoint
from edgedistill.cli import main
sys.argv = ["edgedistill", *sys.argv[1:]]
main()
"""


def _run_with(script: str, *args, timeout=300):
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _last_run(out: Path) -> list[dict]:
    """The events of the last run in `out`."""
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return events[max(i for i, e in enumerate(events) if e["event"] == "run_start"):]


@pytest.mark.slow
def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_says_what_a_rerun_does(reference, tmp_path):
    import torch

    out = tmp_path / "o"
    line = one_line(_run_with(_NAN_IN_EPOCH_2, "compress", "--out", out, *NO_EXPORT), 3,
                    "stage distill: loss became nan in epoch 2; stopped, the last good checkpoint is kept (checkpoint.pt)",
                    "lower stages.distill.lr and rerun: the stage then starts over", "the stages before it are kept")
    # a changed lr changes the stage's fingerprint, so pipeline._prepare_dir discards the checkpoint: no resume
    assert "resume" not in line, line
    kept = torch.load(out / "03-distill" / "checkpoint.pt", weights_only=True)["history"]
    assert [h["epoch"] for h in kept] == [1]
    assert not (out / "03-distill" / "done.json").exists() and not (out / "04-prune").exists()
    advised = tmp_path / "advised"
    shutil.copytree(out, advised)

    rerun = cli("compress", "--out", out, *NO_EXPORT)  # the same command, now without the fault
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _metrics(out) == reference(NO_EXPORT)  # epoch 1 came from the kept checkpoint: same numbers as a clean run

    # following the advice does what the line says: teacher and student are kept, distill starts over
    result = cli("compress", "--out", advised, *NO_EXPORT, "--set", "stages.distill.lr=0.01")
    assert result.returncode == 0, result.stderr[-2000:]
    last = _last_run(advised)
    assert {e["stage"] for e in last if e["event"] == "stage_skipped"} == {"teacher", "student"}
    assert [e["epoch"] for e in last if e["event"] == "epoch" and e["stage"] == "distill"] == [1, 2]
    history = json.loads((advised / "03-distill" / "result.json").read_text())["history"]
    assert history[0]["loss"] != kept[0]["loss"]  # epoch 1 retrained with the new lr, not taken from checkpoint.pt


# ================================================================ an export that fails


_BROKEN_STUDENT = r"""
import sys, torch
import edgedistill.models.zoo as zoo
real = zoo.build_model
class Cummax(torch.nn.Module):  # an operator the ONNX exporter has no translation for
    def __init__(self, inner):
        super().__init__(); self.inner = inner
    def forward(self, x):
        return torch.cummax(self.inner(x), 1).values
def build(arch, channels, *a, **k):
    m = real(arch, channels, *a, **k)
    return Cummax(m) if channels == [8, 16] else m  # the student only
zoo.build_model = build
from edgedistill.cli import main
sys.argv = ["edgedistill", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_export_failure_names_the_operator(tmp_path):
    result = _run_with(_BROKEN_STUDENT, "compress", "--out", tmp_path / "o", *FAST)
    line = one_line(result, 3, "export", "student")
    assert "cummax" in line and "\x1b[" not in line


# ================================================================ the text pipeline


WORDS = [f"w{i}" for i in range(60)]


def _bert_dir(d: Path, labels: int | None):
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    d.mkdir(parents=True)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", *WORDS]))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=67, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=64, num_labels=labels or 2)
    (BertForSequenceClassification if labels else BertModel)(config).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    rng = random.Random(0)
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label"])
        for _ in range(80):
            positive = rng.random() < 0.5
            words = rng.choices(WORDS, k=rng.randint(3, 10)) + ["good" if positive else "bad"]
            writer.writerow([" ".join(words), "pos" if positive else "neg"])
    (root / "nocol.csv").write_text("words,label\nw1 good,pos\nw2 bad,neg\n")
    (root / "numbers.jsonl").write_text('5\n{"sentence": "good", "label": 1}\n')
    no_config = root / "no-config"
    no_config.mkdir()
    (no_config / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return {"encoder": _bert_dir(root / "encoder", None), "head3": _bert_dir(root / "head3", 3), "no_config": no_config,
            "train": root / "train.csv", "nocol": root / "nocol.csv", "numbers": root / "numbers.jsonl"}


def text_args(out, teacher, train, *extra):
    return ["--recipe", "text-classification", "--target", "x86-avx2", "--out", out, "--quiet",
            "--set", f"teacher.path={teacher}", "--set", f"data.train={train}", "--set", "data.text_column=sentence",
            "--set", "data.max_length=32", "--set", "stages.teacher.epochs=1", "--set", "stages.distill.enabled=false",
            "--set", "stages.prune.enabled=false", "--set", "stages.export.enabled=false",
            "--set", "stages.bench.enabled=false", *extra]


def text_cli(out, teacher, train, *extra):
    return cli("compress", *text_args(out, teacher, train, *extra))


@pytest.mark.slow
def test_text_teacher_dir_without_config_json(text_files, tmp_path):
    one_line(text_cli(tmp_path / "o", text_files["no_config"], text_files["train"]), 2,
             "teacher.path:", "has no config.json; give a local Hugging Face model directory")


def test_text_teacher_path_missing(monkeypatch, capsys, text_files, tmp_path):
    one_line(compress(INPROC, monkeypatch, capsys, *text_args(tmp_path / "o", tmp_path / "nope", text_files["train"])), 2,
             "teacher.path:", "does not exist")


@pytest.mark.slow
def test_text_csv_without_the_text_column(text_files, tmp_path):
    one_line(cli("compress", "--recipe", "text-classification", "--target", "x86-avx2", "--out", tmp_path / "o",
                 "--set", f"teacher.path={text_files['encoder']}", "--set", f"data.train={text_files['nocol']}"),
             2, "data.train: nocol.csv has no column 'text' (columns: words, label); set data.text_column")


@pytest.mark.parametrize("how, sets, needles", [
    (PROC, ["student.arch=resnet8"], ["dataset 'text' needs teacher.arch and student.arch 'hf'"]),
    (INPROC, ["student.arch=cnn", "student.channels=[8]"], ["dataset 'text' needs teacher.arch and student.arch 'hf'"]),
    (INPROC, ["teacher.arch=resnet8"], ["teacher:", "path applies to arch 'hf', 'hf-lm' and 'hf-vision' only"]),
    (INPROC, ["student.layers=9", "student.init_layers=[0]"], ["init_layers lists 1 layers but layers is 9"]),
])
def test_text_recipe_with_a_zoo_arch_or_bad_hf_fields(monkeypatch, capsys, text_files, tmp_path, how, sets, needles):
    extra = [x for s in sets for x in ("--set", s)]
    one_line(compress(how, monkeypatch, capsys, *text_args(tmp_path / "o", text_files["encoder"], text_files["train"], *extra)),
             2, *needles)


def test_image_recipe_with_an_hf_arch(monkeypatch, capsys, tmp_path):
    one_line(compress(INPROC, monkeypatch, capsys, "--target", "x86-avx2", "--out", tmp_path / "o", "--set", "student.arch=hf",
                      "--set", "student.channels=null"), 2, "arch 'hf' needs data.dataset 'text'")


@pytest.mark.slow
def test_text_jsonl_of_non_objects(text_files, tmp_path):
    one_line(text_cli(tmp_path / "o", text_files["encoder"], text_files["numbers"]), 2, "data.train")


@pytest.mark.slow
def test_text_max_length_beyond_the_teachers_positions(text_files, tmp_path):
    result = text_cli(tmp_path / "o", text_files["encoder"], text_files["train"], "--set", "data.max_length=128",
                      "--set", "stages.export.enabled=true", "--set", "stages.export.formats=[onnx]")
    one_line(result, 2, "data.max_length", "64")


@pytest.mark.slow
def test_text_teacher_head_for_another_number_of_classes(text_files, tmp_path):
    result = text_cli(tmp_path / "o", text_files["head3"], text_files["train"], "--set", "teacher.finetune=false")
    one_line(result, 2, "teacher.finetune", "3", "2")


# ================================================================ kill mid-run, rerun; the run lock


_PAUSE = r"""
import os, signal, sys, time
from pathlib import Path
# Ctrl-C as from a terminal: a process started in the background by a shell without job control inherits
# SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
where, marker = sys.argv[1], Path(sys.argv[2])
def pause():
    part = marker.with_name(marker.name + ".part")  # renamed when complete: the test never reads it half-written
    part.write_text(str(os.getpid()))
    part.rename(marker)
    time.sleep(300)
if where in ("distill", "prune"):  # after the stage's first epoch checkpoint: mid-stage, resumable
    import edgedistill.epochs as epochs
    save, stage_dir = epochs.save_torch, {"distill": "03-distill", "prune": "04-prune"}[where]
    def save_then_pause(path, obj):
        save(path, obj)
        if path.parent.name == stage_dir and path.name == "checkpoint.pt":
            pause()
    epochs.save_torch = save_then_pause
elif where == "atomic":  # inside the atomic write of the student's fp32 ONNX: written, not yet renamed
    import contextlib
    import edgedistill.io as io
    real_atomic = io.atomic_path
    @contextlib.contextmanager
    def atomic_then_pause(path):
        with real_atomic(path) as tmp:
            yield tmp
            if Path(path).name == "student.fp32.onnx":
                pause()
    io.atomic_path = atomic_then_pause
else:  # after the student's fp32 ONNX, before its int8 one
    import edgedistill.exporters.onnx as export
    real = export.export_onnx
    def export_then_pause(module, spec, path, *a, **k):
        real(module, spec, path, *a, **k)
        if path.name == "student.fp32.onnx":
            pause()
    export.export_onnx = export_then_pause
from edgedistill.cli import main
sys.argv = ["edgedistill", *sys.argv[3:]]
main()
"""
STAGE_DIR = {"distill": "03-distill", "prune": "04-prune", "export": "07-export"}


@pytest.mark.slow
def test_same_recipe_and_seed_give_the_same_metrics_on_cpu(reference, tmp_path):
    result = cli("compress", "--out", tmp_path / "again", *NO_EXPORT, "--set", "device=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metrics(tmp_path / "again") == reference(NO_EXPORT)


def _signal_when_paused(where: str, out: Path, args: list, sig: int, tmp_path: Path, before=None):
    """Run compress under _PAUSE, send `sig` once it is paused at `where`: (exit status, stderr). `before(proc)`
    runs while it is paused."""
    marker = tmp_path / f"paused-{where}"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE, where, str(marker), "compress", "--out", str(out), *args],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"never reached {where} (exit {proc.poll()}): {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}"
        assert int(marker.read_text()) == proc.pid
        if before:
            before(proc)
        proc.send_signal(sig)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["distill", "prune", "export"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_kill_mid_stage_then_rerun_completes_with_a_report(reference, tmp_path, stage, sig):
    out = tmp_path / "run"
    args = FAST if stage == "export" else NO_EXPORT

    def busy(proc):  # while it lives, a second run on the same --out is refused with exit 2 naming the holder
        one_line(cli("compress", "--out", out, *args), 2, f"--out {out}: a live run (pid {proc.pid}) holds this directory",
                 "wait for it to finish or choose another --out")

    # the lock comes before any stage: one stage is enough
    returncode, err = _signal_when_paused(stage, out, args, sig, tmp_path,
                                          before=busy if sig == signal.SIGKILL and stage == "distill" else None)
    stage_dir = out / STAGE_DIR[stage]
    assert stage_dir.exists() and not (stage_dir / "done.json").exists()  # it really died mid-stage
    assert "Traceback" not in err, err[-3000:]
    if sig == signal.SIGINT:  # Ctrl-C: one line that says how to go on
        assert returncode == 130 and err.strip().splitlines() == ["interrupted: rerun the same command to resume"], err
    else:
        assert returncode == -sig
    if sig == signal.SIGTERM:  # it cleaned up on the way out, then died of the signal
        assert err.strip().splitlines() == ["terminated: rerun the same command to resume"], err
    # a lock file stays only where nothing could remove it (kill -9); it no longer binds anyone
    assert (out / ".lock").exists() == (sig == signal.SIGKILL)
    assert not (out / "report.json").exists()
    if sig == signal.SIGINT and stage == "prune":  # `report` on the interrupted run says so before anything else
        partial = cli("report", out)
        assert partial.returncode == 0, partial.stderr[-2000:]
        assert partial.stdout.startswith("UNFINISHED: the run stopped after the distill stage (interrupted or failed)")
    loud = sig == signal.SIGINT  # after Ctrl-C, a rerun as typed at a terminal: it says where it continues
    rerun = cli("compress", "--out", out, *(a for a in args if not (loud and a == "--quiet")))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _metrics(out) == reference(args)  # resumed, not merely restarted differently
    if loud and stage != "export":
        assert f"    {stage}: resuming at epoch 2 of 2 from checkpoint.pt" in rerun.stderr.splitlines(), rerun.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    last = events[max(i for i, e in enumerate(events) if e["event"] == "run_start"):]
    skipped = {e["stage"] for e in last if e["event"] == "stage_skipped"}
    earlier = {"distill": {"teacher", "student"}, "prune": {"teacher", "student", "distill"},
               "export": {"teacher", "student", "distill", "prune"}}[stage]
    assert skipped == earlier
    if stage != "export":  # the interrupted stage continued after its checkpoint instead of starting over
        epochs = [e["epoch"] for e in last if e["event"] == "epoch" and e["stage"] == stage]
        assert epochs == [2], epochs
    assert not [p for p in out.rglob("*.tmp")], "temporary files of the killed run were left behind"


def _files(folder: Path) -> set[str]:
    """Every file and folder under `folder`, hidden ones too, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# What a run killed inside export's first write keeps: the finished stages, and nothing half-written.
KEPT_MID_EXPORT = {"recipe.resolved.yaml", "target.resolved.yaml", "environment.json", "events.jsonl",
                   "preflight.json", "01-teacher", "02-student", "03-distill", "04-prune", "07-export"}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_inside_an_atomic_write_leaves_only_what_a_rerun_needs(tmp_path, sig):
    out = tmp_path / "run"
    returncode, err = _signal_when_paused("atomic", out, FAST, sig, tmp_path)
    assert returncode == -sig and "Traceback" not in err, err[-3000:]
    top = {p.name for p in out.iterdir()}
    hidden = {p.name for p in out.rglob(".*")}
    if sig == signal.SIGTERM:  # cleaned up before it died: no lock, no temporary
        assert top == KEPT_MID_EXPORT and not hidden, (top, hidden)
    else:  # kill -9 cleans nothing; the next run sweeps it, even one that then fails on its input
        assert top == KEPT_MID_EXPORT | {".lock"}, top
        assert hidden - {".lock"} == {p.name for p in (out / "07-export").glob(".student.fp32.onnx.*.tmp")}, hidden
        assert len(hidden) == 2, hidden
        one_line(cli("compress", "--out", out, *FAST, "--set", "data.labels=[a, b, c]"), 2, "data.labels")
        assert {p.name for p in out.iterdir()} == KEPT_MID_EXPORT and not list(out.rglob(".*"))
    assert _files(out / "07-export") == {"fingerprint", "teacher.fp32.onnx"}  # the student's was cut short


@pytest.mark.slow
def test_a_run_failing_on_its_data_leaves_nothing(tmp_path):
    one_line(cli("compress", "--out", tmp_path / "new", *NO_EXPORT, "--set", "data.labels=[a, b, c]"), 2, "data.labels")
    assert not (tmp_path / "new").exists()  # created for the run, removed with its lock
    (tmp_path / "empty").mkdir()
    one_line(cli("compress", "--out", tmp_path / "empty", *NO_EXPORT, "--set", "data.labels=[a, b, c]"), 2, "data.labels")
    assert _files(tmp_path / "empty") == set()  # the user's folder stays, as it was


@pytest.mark.slow
def test_a_run_failing_mid_stage_keeps_the_finished_stages_and_no_lock(tmp_path):
    out = tmp_path / "o"
    one_line(cli("compress", "--out", out, *NO_EXPORT, "--set", "stages.distill.lr=1e12"), 3, "loss became nan")
    # a refusal (exit 3) is a result: the stage says what it refused and the report opens with it
    assert {p.name for p in out.iterdir()} == {"recipe.resolved.yaml", "target.resolved.yaml", "environment.json",
                                               "events.jsonl", "01-teacher", "02-student", "03-distill",
                                               "report.json", "report.md", "report.html"}
    assert _files(out / "03-distill") == {"fingerprint", "refused.json"} and not list(out.rglob(".*"))
    assert json.loads((out / "report.json").read_text())["status"]["stage"] == "distill"


@pytest.mark.slow
def test_force_never_deletes_a_folder_of_user_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "important.txt").write_text("mine")
    (tmp_path / "sub" / "thesis.tex").write_text("mine too")
    one_line(cli("compress", "--out", ".", "--force", *NO_EXPORT, cwd=tmp_path), 2,
             f"--out {tmp_path}: not an edgedistill run directory (it holds important.txt, sub)",
             "--force will not empty it; choose a new or empty directory for --out")
    assert _files(tmp_path) == {"important.txt", "sub", "sub/thesis.tex"}


@pytest.mark.slow
def test_force_validates_first_then_deletes_only_the_runs_own_files(tmp_path):
    out = tmp_path / "o"
    first = cli("compress", "--out", out, *NO_EXPORT, "--set", "stages.distill.enabled=false",
                "--set", "stages.prune.enabled=false")
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "notes.txt").write_text("mine")  # a user's file beside the run's
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a --force whose data does not validate deletes nothing
    one_line(cli("compress", "--out", out, "--force", *NO_EXPORT, "--set", "data.labels=[a, b, c]"), 2, "data.labels")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # a valid one starts over: the run's files are new, the user's file stays
    again = cli("compress", "--out", out, "--force", *NO_EXPORT, "--set", "stages.distill.enabled=false",
                "--set", "stages.prune.enabled=false")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine"
    assert [e["event"] for e in _last_run(out)][0] == "run_start"
    assert sum(json.loads(line)["event"] == "run_start" for line in (out / "events.jsonl").read_text().splitlines()) == 1
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_every_training_stage_says_how_long_its_epochs_will_take(tmp_path):
    import re

    result = cli("compress", "--out", tmp_path / "o", *(a for a in NO_EXPORT if a != "--quiet"))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    estimates = [(lines[i - 1], int(m[1])) for i, line in enumerate(lines)
                 if (m := re.fullmatch(r"    ~(\d+) epochs? x [\d.]+ (s|min|h|days) = about [\d.]+ (s|min|h|days)", line))]
    # each before its stage's epochs, with the epochs still to run (the prune stage first reports its step)
    assert [(before.split(":")[0], epochs) for before, epochs in estimates] == [
        ("[1/9] teacher", 1), ("[3/9] distill", 2), ("    step 1", 2)], lines


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    code, err = _in_process(monkeypatch, capsys, ["compress", "--target", "x86-avx2", "--out", str(tmp_path / "o")],
                            run=interrupted)
    assert code == 130 and err == "interrupted: rerun the same command to resume\n", (code, err)


# ================================================================ fuzz: the CLI's own parsing and messages


def test_cli_fuzz_set_and_recipe_files_never_traceback(monkeypatch, capsys, tmp_path):
    import string

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pwned = tmp_path / "pwned"
    keys = st.sampled_from(["seed", "device", "data.batch_size", "data.dataset", "data.path", "data.train",
                            "teacher.arch", "teacher.checkpoint", "teacher.path", "student.channels", "student.layers",
                            "stages.distill.features", "stages.distill.layer_match", "stages.prune.macs_ratio",
                            "stages.export.formats", "training.precision", "stages", "data.augment", "nope.x"])
    values = st.one_of(st.text(string.printable, max_size=16), st.integers(-3, 10**9).map(str),
                       st.sampled_from(["[", "{a: 1}", "null", "[1, 2]", "hf", "text", "npz", "/nonexistent",
                                        "[{student: a, teacher: b}]", "{mapping: [0]}", "- x", "\u2028", "\x00",
                                        f"!!python/object/apply:os.system ['touch {pwned}']"]))

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(st.tuples(keys | st.text(string.printable, max_size=10), values), max_size=3))
    def sets(pairs):
        argv = ["compress", "--target", "x86-avx2", "--out", str(tmp_path / "o"), *[f"--set={k}={v}" for k, v in pairs]]
        code, err = _in_process(monkeypatch, capsys, argv)
        if code is not None:
            assert code == 2, (pairs, err)
            assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, (pairs, err)

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.binary(max_size=80) | st.text(max_size=120).map(str.encode))
    def files(content):
        (tmp_path / "r.yaml").write_bytes(content)
        code, err = _in_process(monkeypatch, capsys, ["compress", "--recipe", str(tmp_path / "r.yaml"),
                                                      "--target", "x86-avx2", "--out", str(tmp_path / "o")])
        assert code == 2, (content, err)  # no recipe of random bytes is complete (teacher, student are required)
        assert err.count("\n") == 1 and err.startswith("error: ") and "r.yaml" in err, (content, err)

    sets()
    files()
    assert not pwned.exists()


# ================================================================ refusals: nothing hidden


@pytest.mark.slow
def test_a_refused_file_is_renamed_and_the_report_opens_with_the_refusal(tmp_path):
    out = tmp_path / "run"
    result = cli("compress", "--out", out, *FAST, "--set", "stages.export.fp32_max_abs=1e-12",
                 "--set", "stages.export.fp32_max_rel=1e-12")
    one_line(result, 3, "parity: 07-export/teacher.fp32.onnx differs", "stages.export.fp32_max_abs 1e-12",
             "kept as 07-export/teacher.fp32.refused.onnx")
    assert {p.name for p in (out / "07-export").iterdir()} == {"fingerprint", "refused.json", "teacher.fp32.refused.onnx"}
    assert json.loads((out / "report.json").read_text())["status"]["state"] == "refused"  # written as it stopped

    report = cli("report", out)
    assert report.returncode == 3, report.stderr
    first = report.stdout.strip().splitlines()[0]
    assert first.startswith("REFUSED: the export stage refused its result: parity: 07-export/teacher.fp32.onnx")
    assert "rerun the same command" in first
    md = (out / "report.md").read_text().splitlines()
    assert md[4].startswith("> **REFUSED:** the export stage refused its result")  # above the summary
    assert "REFUSED" in (out / "report.html").read_text()

    rerun = cli("compress", "--out", out, *FAST)  # the setting fixed: export reruns, the refusal is gone
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(out.rglob("*refused*"))
    again = cli("report", out)
    assert again.returncode == 0 and json.loads((out / "report.json").read_text())["status"]["state"] == "finished"


_FAILING_FORMAT = r"""
import sys
from edgedistill.errors import RefusedError
import importlib
fmt = sys.argv[1]
def fails(*a, **k):
    raise RefusedError(f"export {fmt}: conversion failed: Unsupported fx node alias, kind alias")
setattr(importlib.import_module(f"edgedistill.exporters.{sys.argv[1]}"), sys.argv[2], fails)
from edgedistill.cli import main
sys.argv = ["edgedistill", *sys.argv[3:]]
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("module, function, target, code", [
    ("coreml", "to_coreml", "x86-avx2", 0),  # an extra for an x86 target: recorded, the run completes
    ("ort_mobile", "to_ort", "pixel-8", 3),  # the Android target's own format: the run stops
])
def test_one_failed_export_format(tmp_path, module, function, target, code):
    out = tmp_path / "run"
    sets = [a if a != "x86-avx2" else target for a in FAST]
    sets = [a if a != "stages.export.formats=[onnx]" else "stages.export.formats=[onnx, ort, coreml]" for a in sets]
    result = subprocess.run([sys.executable, "-c", _FAILING_FORMAT, module, function, "compress", "--out", str(out),
                             *sets, "--set", "stages.bench.enabled=true"],
                            capture_output=True, text=True, env=ENV, timeout=300)
    if code:
        one_line(result, 3, f"export {module}: conversion failed")
        return
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["state"] == "finished"
    assert report["failed_formats"] == [{"format": "coreml", "required": "onnx",
                                         "reason": "export coreml: conversion failed: Unsupported fx node alias, kind alias"}]
    assert {a["kind"] for a in report["artifacts"]} == {"onnx-fp32", "onnx-int8", "ort"}
    assert any(n.startswith("coreml export failed, the run went on without it") for n in report["notes"])
    assert "coreml export failed" in (out / "report.md").read_text()
