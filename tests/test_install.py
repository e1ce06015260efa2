"""A non-editable install (what `pip install .` puts in site-packages) carries everything a run needs: the
device profiles and recipes are package data, not files the source checkout happens to have."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_error_catalogue import ENV, FAST, ROOT


def test_the_top_level_targets_folder_is_the_packages_profiles():
    assert (ROOT / "targets").is_symlink()
    assert (ROOT / "targets").resolve() == (ROOT / "edgedistill" / "profiles").resolve()


@pytest.mark.slow
def test_a_non_editable_install_lists_every_target_and_runs_the_default_recipe(tmp_path):
    # A copy of the source, so the build's own folders (build/, *.egg-info) never land in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "data"))
    site = tmp_path / "site"
    # The dependencies are this interpreter's; only edgedistill itself is built and installed, offline.
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "--target", str(site), str(source)], capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the source tree
    env = {**ENV, "PYTHONPATH": str(site)}
    env.pop("EDGEDISTILL_TARGETS", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=elsewhere,
                              timeout=600)

    where = run("-c", "import edgedistill; print(edgedistill.__file__)")
    assert where.stdout.strip() == str(site / "edgedistill" / "__init__.py"), where.stdout + where.stderr
    listed = run("-m", "edgedistill", "targets")
    assert listed.returncode == 0, listed.stderr[-2000:]
    shipped = sorted(p.stem for p in (ROOT / "edgedistill" / "profiles").glob("*.yaml"))
    assert len(shipped) >= 7
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == shipped
    compressed = run("-m", "edgedistill", "compress", "--out", "run", *FAST)  # the default recipe: digits
    assert compressed.returncode == 0, compressed.stderr[-3000:]
    assert (elsewhere / "run" / "report.json").is_file() and (elsewhere / "run" / "07-export" / "student.int8.onnx").is_file()


def test_edgedistill_targets_points_at_another_folder_of_profiles(tmp_path):
    from tests.test_error_catalogue import cli, one_line

    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "my-board.yaml").write_text(
        (ROOT / "edgedistill" / "profiles" / "raspberry-pi-5.yaml").read_text().replace("name: raspberry-pi-5", "name: my-board"))
    listed = cli("targets", env={**ENV, "EDGEDISTILL_TARGETS": str(tmp_path / "boards")})
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == ["my-board"], listed
    (tmp_path / "none").mkdir()
    one_line(cli("targets", env={**ENV, "EDGEDISTILL_TARGETS": str(tmp_path / "none")}), 2,
             f"{tmp_path / 'none'}: no target profiles (*.yaml) there; point EDGEDISTILL_TARGETS at a folder")
