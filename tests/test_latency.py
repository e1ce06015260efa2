"""Latency for a target: measured here when this machine stands in for it, else a labelled roofline estimate."""

import json
import subprocess
import sys

import pytest

from edgedistill.errors import UserError
from edgedistill.estimate import estimate
from edgedistill.exporters.onnx import export_onnx
from edgedistill.latency import for_file
from edgedistill.targets import load_target
from tests.helpers import SPEC, cnn


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    small, big = d / "small.onnx", d / "big.onnx"
    export_onnx(cnn((8, 16, 32)).module.eval(), SPEC, small, 18)
    export_onnx(cnn((64, 128, 256)).module.eval(), SPEC, big, 18)
    return small, big


def test_estimate_is_labelled_and_grows_with_work(models):
    small, big = models
    pixel = load_target("pixel-8")
    e_small, e_big = estimate(small, pixel), estimate(big, pixel)
    assert e_small["kind"] == "estimated" and e_small["precision"] == "fp32"
    assert e_big["macs"] > 20 * e_small["macs"] and e_big["p50"] > e_small["p50"] > 0
    # the same graph on a slower device (lower peaks and bandwidth) takes longer
    assert estimate(big, load_target("raspberry-pi-5"))["p50"] > e_big["p50"]
    # int8 peaks are higher: the compute part of the estimate shrinks
    assert estimate(big, pixel, precision="int8")["p50"] < e_big["p50"]
    conv = next(layer for layer in e_big["layers"] if layer["op"] == "Conv")
    assert conv["macs"] in (64 * 128 * 9 * 16, 128 * 256 * 9 * 4)  # 3x3 convs at 4x4 and 2x2 after striding


def test_for_file_measures_host_targets_and_refuses_bad_files(models, tmp_path):
    small, _ = models
    measured = for_file(small, load_target("x86-avx2"), warmup=2, repeats=10)
    assert measured["kind"] == "measured" and measured["p90"] >= measured["p50"] > 0
    assert for_file(small, load_target("pixel-8"))["kind"] == "estimated"
    with pytest.raises(UserError, match="no such model file"):
        for_file(tmp_path / "missing.onnx", load_target("x86-avx2"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(UserError, match="junk.onnx: ONNX Runtime cannot load it"):
        for_file(junk, load_target("x86-avx2"))


@pytest.mark.slow
def test_bench_command_json_contract(models):
    small, _ = models
    out = subprocess.run([sys.executable, "-m", "edgedistill", "bench", str(small), "--target", "pixel-8", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"kind", "p50", "p90", "p99", "threads"} <= set(result) and result["kind"] == "estimated"
