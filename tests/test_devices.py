"""Timing on real devices: adb + onnxruntime_perf_test for Android phones (driven here through a stand-in adb
that records what it is asked and answers like a phone would), and the Core ML inputs built for macOS
predict (the predict itself needs macOS)."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from edgedistill.errors import UserError
from edgedistill.runtimes import adb
from edgedistill.runtimes import coreml as coreml_rt

PERF_TEST_OUTPUT = """Session creation time cost: 0.0123 s
First inference time cost: 2 ms
Total inference time cost: 0.41 s
Total inference requests: 200
Average inference time cost: 2.05 ms
Total inference run time: 0.412 s
Number of inferences per second: 485.4
Min Latency: 0.00181 s
Max Latency: 0.00392 s
P50 Latency: 0.00201 s
P90 Latency: 0.00231 s
P95 Latency: 0.00250 s
P99 Latency: 0.00301 s
P999 Latency: 0.00392 s
"""


@pytest.fixture()
def fake_adb(tmp_path, monkeypatch):
    """An `adb` that lists one phone, accepts pushes and answers onnxruntime_perf_test with a real report."""
    log = tmp_path / "adb.log"
    (tmp_path / "perf.txt").write_text(PERF_TEST_OUTPUT)
    script = tmp_path / "adb"
    script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
open({str(log)!r}, "a").write(" ".join(args) + "\\n")
if args == ["devices"]:
    print("List of devices attached\\nR5CT1234\\tdevice\\nemulator-5554\\toffline\\n")
elif "getprop" in " ".join(args):
    print("Pixel 8")
elif "onnxruntime_perf_test -I" in " ".join(args):
    print(open({str(tmp_path / "perf.txt")!r}).read())
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ADB", str(script))
    tool = tmp_path / "onnxruntime_perf_test"
    tool.write_bytes(b"\x7fELF stand-in")
    model = tmp_path / "student.int8.ort"
    model.write_bytes(b"ort")
    return {"log": log, "tool": tool, "model": model}


def test_perf_test_report_is_parsed_in_ms():
    got = adb.parse_perf_test(PERF_TEST_OUTPUT)
    assert got == pytest.approx({"p50": 2.01, "p90": 2.31, "p99": 3.01, "mean": 2.05})
    with pytest.raises(UserError, match="printed no latency figures"):
        adb.parse_perf_test("Failed to load model")


def test_on_device_run_pushes_the_tool_and_model_and_labels_the_result(fake_adb):
    result = adb.measure(fake_adb["model"], fake_adb["tool"], threads=4, repeats=200)
    assert result["kind"] == "on-device" and result["device"] == "Pixel 8" and result["p50"] == pytest.approx(2.01)
    calls = fake_adb["log"].read_text().splitlines()
    assert f"-s R5CT1234 push {fake_adb['tool']} {adb.REMOTE_DIR}/onnxruntime_perf_test" in calls
    assert f"-s R5CT1234 push {fake_adb['model']} {adb.REMOTE_DIR}/student.int8.ort" in calls
    run = next(c for c in calls if "onnxruntime_perf_test -I" in c)
    assert "-m times -r 200 -x 4 -e cpu" in run and run.endswith("student.int8.ort")
    with pytest.raises(UserError, match=r"device X1 is not attached \(attached: R5CT1234\)"):
        adb.measure(fake_adb["model"], fake_adb["tool"], threads=4, serial="X1")
    with pytest.raises(UserError, match="needs onnxruntime_perf_test built for Android"):
        adb.measure(fake_adb["model"], None, threads=4)


@pytest.mark.slow
def test_cli_bench_on_device_prints_the_on_device_label(fake_adb):
    env = {**os.environ, "EDGEDISTILL_ORT_PERF_TEST": str(fake_adb["tool"])}
    done = subprocess.run([sys.executable, "-m", "edgedistill", "bench", str(fake_adb["model"]), "--target", "pixel-8",
                           "--on-device", "--json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kind"] == "on-device" and result["threads"] == 4 and result["target"] == "pixel-8"
    no_adb = {**env, "ADB": "", "PATH": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "edgedistill", "bench", str(fake_adb["model"]), "--target", "pixel-8",
                           "--on-device"], capture_output=True, text=True, env=no_adb)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "adb is not installed" in done.stderr


def test_coreml_inputs_are_what_an_app_passes():
    from edgedistill.models import ModelSpec

    spec = ModelSpec("image-classification", (3, 4, 4), 2, ("a", "b"), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 3, 4, 4)).astype(np.float32)
    mean, std = np.array(spec.mean).reshape(1, 3, 1, 1), np.array(spec.std).reshape(1, 3, 1, 1)
    normalized = ((pixels / 255 - mean) / std).astype(np.float32)
    feeds = coreml_rt.features(normalized, spec, "image")
    image = feeds[1]["image"]
    assert image.mode == "RGB" and image.size == (4, 4)
    assert np.array_equal(np.asarray(image).transpose(2, 0, 1), pixels[1].astype(np.uint8))
    text = ModelSpec("text-classification", (6,), 2, ("neg", "pos"), (), (), pad_id=0)
    ids = np.array([[2, 9, 3, 0, 0, 0]])
    feed = coreml_rt.features(ids, text, "input_ids")[0]["input_ids"]
    assert feed.dtype == np.int32 and feed.shape == (1, 6) and feed.tolist() == [[2, 9, 3, 0, 0, 0]]


@pytest.mark.skipif(not coreml_rt.available(), reason="Core ML predict needs macOS; Linux checks the package spec only")
def test_coreml_predict_on_macos_matches_torch(tmp_path):
    import torch

    from edgedistill.exporters import coreml
    from edgedistill.models import ModelSpec, build_model

    spec = ModelSpec("image-classification", (1, 8, 8), 3, ("a", "b", "c"), (0.3,), (0.4,))
    model = build_model("cnn", [8, 16], spec.input_shape, 3).eval()
    path = tmp_path / "m.mlpackage"
    coreml.to_coreml(model, spec, path, deployment_target="iOS17", compute_units="ALL", precision="fp16",
                     description="t", version="0")
    x = torch.rand(16, 1, 8, 8)
    x = (torch.round(x * 255) / 255 - 0.3) / 0.4
    probs = coreml_rt.probabilities(path, x.numpy(), spec, "image")
    assert (probs.argmax(-1) == torch.softmax(model(x), -1).argmax(-1).numpy()).mean() >= 0.9


def test_on_device_bench_for_a_target_without_adb_is_refused_before_training(tmp_path):
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    with pytest.raises(UserError, match="stages.bench.on_device: .* iphone-15-pro runs coreml"):
        pipeline.run(load_recipe("digits", ["stages.bench.on_device=true"]), load_target("iphone-15-pro"), tmp_path,
                     quiet=True)
    assert not (tmp_path / "01-teacher").exists()
