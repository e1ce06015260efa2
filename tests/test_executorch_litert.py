"""ExecuTorch (.pte) and LiteRT (.tflite): target profiles that name them, the Core ML delegate program for iOS,
what the deployability check and the report read from the files, and a whole digits run writing both.
The exporter/runtime contract (tests/test_exporter_contract.py) covers writing, parity and timing of both."""

import json
from pathlib import PurePosixPath
from types import SimpleNamespace

import pytest

from edgedistill.errors import UserError
from edgedistill.runtimes import RUNTIMES
from edgedistill.targets import load_target

needs_executorch = pytest.mark.skipif(not RUNTIMES.get("executorch").available(),
                                      reason=RUNTIMES.get("executorch").unavailable)
needs_litert = pytest.mark.skipif(not RUNTIMES.get("litert").available(), reason=RUNTIMES.get("litert").unavailable)


def _profile(tmp_path, **fields):
    import yaml

    base = {"name": "p", "arch": "arm64", "precision": "int8", **fields}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_profiles_name_a_runtime_their_os_runs(tmp_path):
    assert load_target("pixel-8-executorch").os == "android" and load_target("pixel-8").os == "android"
    assert load_target("iphone-15-pro").os == "ios" and load_target("pixel-8-litert").runtime == "litert"
    with pytest.raises(UserError, match=r"os: runtime executorch ships for several platforms"):
        load_target(_profile(tmp_path, runtime="executorch"))
    with pytest.raises(UserError, match=r"runtime: litert does not run on ios; use one of coreml, executorch"):
        load_target(_profile(tmp_path, runtime="litert", os="ios"))


@needs_executorch
def test_ios_target_gets_a_core_ml_delegate_program_checked_not_run(tmp_path):
    from edgedistill.deployability import check_file
    from edgedistill.exporters import EXPORTERS
    from edgedistill.exporters.job import ExportJob
    from edgedistill.pipeline import State
    from edgedistill.recipe import load_recipe
    from tests.helpers import SPEC, batch, cnn

    x, y = batch(40, seed=3)
    data = SimpleNamespace(x_train=batch(128, seed=1)[0], y_train=None, x_test=x, y_test=y, spec=SPEC)
    target = load_target("iphone-15-pro-executorch")
    (tmp_path / "07-export").mkdir()
    ctx = SimpleNamespace(recipe=load_recipe("digits"), target=target, data=data, out=tmp_path, log=lambda m: None)
    job = ExportJob(ctx, State(teacher=cnn(seed=0), student=cnn((8, 16, 16), seed=1)), tmp_path / "07-export")
    artifacts = {a.kind + "/" + a.precision: a for a in EXPORTERS.get("executorch").export(job)}
    assert set(artifacts) == {"pte/fp32", "pte/int8", "pte-coreml/fp16"}
    assert artifacts["pte/int8"].for_target and not artifacts["pte/fp32"].for_target
    coreml = artifacts["pte-coreml/fp16"]
    assert coreml.fields["graph"]["delegate"] == "CoreML" and coreml.fields["graph"]["delegated_fraction"] > 0.5
    assert "Apple devices" in coreml.fields["parity_note"] and not coreml.parity
    check = check_file(coreml.path, target)
    assert check["ok"] and "delegate::CoreMLBackend" in check["operators"]
    assert RUNTIMES.get("executorch").bench(coreml, None)["latency_note"]  # not run here, said why
    int8 = artifacts["pte/int8"]
    assert int8.fields["graph"]["integer_fraction"] == 1.0 and int8.fields["weights_from"].startswith("the fp32")
    check = check_file(int8.path, target)  # every op inside the XNNPACK partition
    assert check["ok"] and not check["off_accelerator"] and check["accelerator"] == "XNNPACK delegate"


@needs_executorch
@needs_litert
def test_qat_in_xnnpacks_scheme_is_what_both_files_run(tmp_path):
    """On an ExecuTorch or LiteRT target the qat stage trains with XNNPACK's quantizer; both exporters lower that
    int8 model as it is (no second quantization), and a precision plan's float block stays float."""
    import torch

    from edgedistill import quantize
    from edgedistill.exporters import EXPORTERS
    from edgedistill.exporters.job import ExportJob
    from edgedistill.exporters.litert import unfold_weights
    from edgedistill.pipeline import State
    from edgedistill.recipe import load_recipe
    from edgedistill.training import predict
    from tests.helpers import SPEC, cnn, digits

    student = cnn((8, 16, 16), seed=1)
    prepared = quantize.prepare_qat(student.module, SPEC, "xnnpack-s8", fp32_blocks=["features.3"])
    x, y, x_test, y_test = digits()
    opt = torch.optim.Adam(prepared.parameters(), lr=0.01)
    quantize.set_mode(prepared, True)
    for _ in range(3):
        for i in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(prepared(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    converted = quantize.convert(prepared)
    per_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    int8_weights = [n.args[1].target is per_channel for n in converted.graph.nodes
                    if n.op == "call_function" and "conv" in str(n.target)]
    assert int8_weights == [True, False, True]  # features.3 is the plan's float block

    unfolded = unfold_weights(converted)  # LiteRT's form: float weights quantized in the graph
    assert not any(t.dtype == torch.int8 for t in unfolded.state_dict().values())
    assert torch.equal(predict(unfolded, x_test, set_mode=quantize.set_mode),
                       predict(converted, x_test, set_mode=quantize.set_mode))

    data = SimpleNamespace(x_train=x, y_train=y, x_test=x_test, y_test=y_test, spec=SPEC)
    (tmp_path / "07-export").mkdir()
    ctx = SimpleNamespace(recipe=load_recipe("digits"), target=load_target("pixel-8-litert"), data=data,
                          out=tmp_path, log=lambda m: None)
    state = State(teacher=cnn(seed=0), student=student)
    state.outputs["qat"] = converted
    state.records["qat"] = {"parity": [{"from": "student fake-quant (torch)", "to": "student int8 (torch)"}]}
    job = ExportJob(ctx, state, tmp_path / "07-export")
    assert job.qat_scheme == "xnnpack-s8"
    for name in ("executorch", "litert"):
        int8 = next(a for a in EXPORTERS.get(name).export(job) if a.precision == "int8")
        assert int8.fields["weights_from"] == "the qat stage's int8 model" and "calibration" not in int8.fields
        assert [(r["from"], r["to"]) for r in int8.parity] == [
            ("student fp32 (torch)", "student int8 (torch)"), ("student fake-quant (torch)", "student int8 (torch)"),
            ("student int8 (torch)", f"student int8 ({name})")]
        assert int8.parity[-1]["top1_agreement"] >= 0.98
        assert int8.fields["graph"]["compute_ops"] - int8.fields["graph"]["integer_compute_ops"] <= 1


def test_a_target_whose_runtime_is_not_installed_is_refused_before_training(monkeypatch):
    import importlib.util

    from edgedistill.exporters import EXPORTERS
    from edgedistill.recipe import load_recipe
    from edgedistill.stages.export import Export
    from edgedistill.stages.qat import QAT

    recipe = load_recipe("digits")
    monkeypatch.setattr(EXPORTERS.get("executorch"), "missing", lambda: "ExecuTorch is not installed; install it")
    with pytest.raises(UserError, match=r"^target: pixel-8-executorch loads \.pte files, which this machine cannot "
                                        r"write: ExecuTorch is not installed; install it$"):
        Export().validate(recipe, load_target("pixel-8-executorch"))
    Export().validate(recipe, load_target("pixel-8"))  # writes .ort: nothing missing
    Export().validate(load_recipe("digits", ["stages.export.enabled=false"]), load_target("pixel-8-executorch"))

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else find_spec(name, *a))
    with pytest.raises(UserError, match=r"^target: pixel-8-litert: XNNPACK's quantizer \(int8 scheme xnnpack-s8\), "
                                        r"part of ExecuTorch, is not installed; .*; or set stages.qat.enabled=false$"):
        QAT().validate(recipe, load_target("pixel-8-litert"))
    QAT().validate(recipe, load_target("pixel-8"))  # ONNX Runtime's scheme: torchao alone
    QAT().validate(load_recipe("digits", ["stages.qat.enabled=false"]), load_target("pixel-8-litert"))


def test_deployability_refuses_what_it_cannot_read(tmp_path):
    from edgedistill.deployability import read_graph

    bad = tmp_path / "m.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(UserError, match=r"m\.pte: (not a readable ExecuTorch model|reading an ExecuTorch model needs)"):
        read_graph(bad)
    with pytest.raises(UserError, match=r"cannot inspect a '\.bin' file; pass an \.onnx, \.ort, \.mlpackage, "
                                        r"\.pte or \.tflite"):
        (tmp_path / "m.bin").write_bytes(b"x")
        read_graph(tmp_path / "m.bin")


def test_app_snippets_carry_the_files_names_shapes_and_int8_scales():
    from edgedistill.report.edge_snippets import kotlin_pte, kotlin_tflite, swift_pte
    from edgedistill.report.render import _io

    usage = {"labels": ["a", "b"], "mean": [0.5], "std": [0.2],
             "inputs": [{"name": "input", "shape": ["batch", 1, 8, 8]}]}
    tflite = {"kind": "tflite", "io": {
        "inputs": [{"name": "serving_default_args_0", "shape": [1, 1, 8, 8], "dtype": "int8", "scale": 0.02,
                    "zero_point": -3}],
        "outputs": [{"name": "serving_default_output_0_output", "shape": [1, 2], "dtype": "int8", "scale": 0.1,
                     "zero_point": 5}]}}
    code = kotlin_tflite(PurePosixPath("07-export/student.int8.tflite"), usage, _io(usage), tflite)
    assert "x / 0.02f + (-3)" in code and "(it - (5)) * 0.1f" in code and "ByteArray(2)" in code
    assert '"student.int8.tflite"' in code and "serving_default_args_0" in code
    pte = {"kind": "pte", "io": {"inputs": [{"shape": [1, 1, 8, 8], "dtype": "float"}], "outputs": []}}
    assert "longArrayOf(1, 1, 8, 8)" in kotlin_pte(PurePosixPath("student.int8.pte"), usage, _io(usage), pte)
    swift = swift_pte(PurePosixPath("student.int8.pte"), usage, _io(usage), pte)
    assert 'forResource: "student.int8", ofType: "pte"' in swift and "shape: [1, 1, 8, 8]" in swift


@pytest.mark.slow
@needs_executorch
@needs_litert
def test_digits_run_writes_pte_and_tflite_within_tolerance_and_times_them(tmp_path):
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe

    recipe = load_recipe("digits", ["stages.teacher.epochs=3", "stages.distill.epochs=2", "stages.prune.epochs=1",
                                    "stages.qat.epochs=1", "stages.bench.repeats=20",
                                    "stages.export.formats=[onnx, litert]"])  # the target's .pte: always
    pipeline.run(recipe, load_target("pixel-8-executorch"), tmp_path, quiet=True)
    report = json.loads((tmp_path / "report.json").read_text())
    files = {a["path"]: a for a in report["artifacts"]}
    for name in ("student.fp32.pte", "student.int8.pte", "student.fp32.tflite", "student.int8.tflite"):
        art = files[f"07-export/{name}"]
        assert art["latency_ms"]["p50"] > 0 and art["latency_ms"]["kind"] == "measured-host"
        assert art["accuracy"] > 0.8 and art["graph"]["delegated_fraction"] == 1.0
        if "int8" in name:  # the qat stage trained in XNNPACK's scheme; both files lower its int8 model
            assert art["graph"]["integer_fraction"] == 1.0 and art["weights_from"] == "the qat stage's int8 model"
            assert art["quantization"].startswith("xnnpack-s8-qat") and "calibration" not in art
    qat = next(s for s in report["stages"] if s["name"] == "qat")
    assert qat["quantizer"].startswith("torchao-pt2e xnnpack-s8")
    judged = {p["to"]: p for p in report["parity"]}
    assert judged["student int8 (torch)"]["from"] == "student fake-quant (torch)"
    assert judged["student int8 (executorch)"]["top1_agreement"] >= recipe.stages.export.int8_min_agreement
    assert judged["student fp32 (litert)"]["max_abs"] <= recipe.stages.export.fp32_max_abs
    assert files["07-export/student.int8.pte"]["deployability"]["ok"]  # the target's own format, checked
    assert report["headline"]["artifact"] == "07-export/student.int8.pte"
    # an ONNX graph says nothing of what XNNPACK's lowering runs where: the .pte is checked, not a preflight ONNX
    assert report["preflight"]["skipped"] == "pixel-8-executorch loads .pte files, checked when the export writes them"
    assert "not checked: pixel-8-executorch loads .pte files" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "Kotlin (LiteRT, Android)" in html and "Swift (ExecuTorch, iOS)" in html
    assert "integer / delegated" in (tmp_path / "report.md").read_text()


def test_a_run_without_the_targets_format_compares_its_onnx_files():
    from edgedistill.report import _headline

    target = {"name": "pixel-8-executorch", "runtime": "executorch", "precision": "int8"}
    arts = [{"role": "teacher", "kind": "onnx-fp32", "path": "t.onnx", "size_bytes": 4000, "accuracy": 0.9,
             "latency_ms": {"p50": 2.0, "kind": "measured-host"}},
            {"role": "student", "kind": "onnx-int8", "path": "s.onnx", "size_bytes": 500, "accuracy": 0.88,
             "latency_ms": {"p50": 0.5, "kind": "measured-host"}}]
    head, text = _headline(target, arts)
    assert head["artifact"] == "s.onnx" and head["size_ratio"] == 8 and head["speedup"] == 4
    assert text.startswith("pixel-8-executorch: onnx-int8 student is 8.0x smaller")
