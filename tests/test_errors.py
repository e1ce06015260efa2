"""Failures a user can meet mid-run become one line and the right exit status."""

import errno
import sys

import pytest
import torch

from edgedistill import cli, pipeline
from edgedistill.errors import RefusedError
from edgedistill.exporters.onnx import export_onnx
from tests.helpers import SPEC, cnn


def _main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["edgedistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def test_full_disk_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "03-distill" / "checkpoint.pt"))

    monkeypatch.setattr(pipeline, "run", full)
    code, err = _main(monkeypatch, capsys, "compress", "--target", "pixel-8", "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1
    assert "checkpoint.pt: no space left on the device; free some space or choose another --out" in err


def test_refused_result_exits_3(monkeypatch, capsys, tmp_path):
    def refuse(*a, **k):
        raise RefusedError("parity: x.onnx differs")

    monkeypatch.setattr(pipeline, "run", refuse)
    code, err = _main(monkeypatch, capsys, "compress", "--target", "pixel-8", "--out", str(tmp_path / "o"))
    assert code == 3 and err.strip() == "error: parity: x.onnx differs"


def test_export_failure_names_the_artifact_and_cause(monkeypatch, tmp_path):
    def broken(*a, **k):
        raise RuntimeError("Unsupported operator aten::frobnicate\nlong trace ...")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RefusedError, match=r"export student.onnx: the ONNX exporter failed: Unsupported operator "
                                           r"aten::frobnicate$"):
        export_onnx(cnn().module.eval(), SPEC, tmp_path / "student.onnx", 18)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
