"""Precision plans: choosing int8/fp32 per block by measurement, QAT and export honouring the plan, and the
all-fp32 fallback. Timings are replaced by fixed numbers where a test needs one outcome."""

import collections
import json

import numpy as np
import onnx
import pytest
import torch

from edgedistill import pipeline, precision, quantize
from edgedistill.errors import UserError
from edgedistill.exporters.onnx import export_onnx
from edgedistill.models import ModelSpec, build_model
from edgedistill.recipe import load_recipe
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.targets import load_target
from edgedistill.training import predict
from tests.helpers import runs_right_here

SPEC = ModelSpec("image-classification", (1, 8, 8), 10, tuple(map(str, range(10))), (0.5,), (0.25,))
BLOCKS = ["features.0", "features.3", "features.6", "classifier"]


def C(int8, p50, accuracy=0.9):
    return precision.Candidate(list(int8), p50, accuracy)


def test_block_names_follow_the_module_tree():
    assert precision.block_of("layer2.0.conv1.weight") == "layer2"
    assert precision.block_of("conv1.weight") == "conv1"
    assert precision.block_of("features.3.weight") == "features.3"
    assert precision.block_of("fc.weight") == "fc"


def test_onnx_nodes_are_grouped_by_block(tmp_path):
    export_onnx(build_model("cnn", [16, 32, 64], (1, 8, 8), 10).eval(), SPEC, tmp_path / "m.onnx", 18)
    groups = precision.onnx_blocks(onnx.load(str(tmp_path / "m.onnx")))
    assert list(groups) == BLOCKS and all(len(v) == 1 for v in groups.values())
    r20 = tmp_path / "r20.onnx"
    spec = ModelSpec("image-classification", (3, 32, 32), 10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)
    export_onnx(build_model("resnet20", None, (3, 32, 32), 10).eval(), spec, r20, 18)
    groups = precision.onnx_blocks(onnx.load(str(r20)))
    assert list(groups) == ["conv1", "layer1", "layer2", "layer3", "fc"]
    assert [len(v) for v in groups.values()] == [1, 6, 7, 7, 1]  # layer2/3 hold a downsample conv too


def test_the_fastest_plan_within_the_tolerance_wins():
    cands = [C([], 1.0), C(["a"], 0.7, 0.899), C(["a", "b"], 0.5, 0.890), C(["b"], 0.8)]
    pick, verdict = precision._choose(cands, tolerance=0.002, budget_ms=None)
    assert pick.int8 == ["a"] and verdict.startswith("mixed")
    pick, _ = precision._choose(cands, tolerance=0.02, budget_ms=None)
    assert pick.int8 == ["a", "b"]


def test_a_mixed_plan_must_beat_all_int8_by_more_than_the_noise():
    cands = [C([], 1.0), C(["a"], 0.600), C(["a", "b"], 0.625)]  # 4% apart: a real difference
    assert precision._choose(cands, 0.002, None)[0].int8 == ["a"]
    cands = [C([], 1.0), C(["a"], 0.600), C(["a", "b"], 0.615)]  # 2.5% apart: noise, all-int8 wins
    assert precision._choose(cands, 0.002, None)[0].int8 == ["a", "b"]


def test_timings_within_three_percent_are_a_tie_won_by_more_int8():
    cands = [C([], 1.0), C(["a"], 0.60), C(["a", "b"], 0.61)]
    pick, verdict = precision._choose(cands, tolerance=0.002, budget_ms=None)
    assert pick.int8 == ["a", "b"] and verdict.startswith("all int8")


def test_a_latency_budget_takes_the_most_accurate_plan_that_meets_it():
    cands = [C([], 1.0), C(["a"], 0.7, 0.899), C(["a", "b"], 0.5, 0.88)]
    assert precision._choose(cands, 0.002, budget_ms=0.8)[0].int8 == ["a"]
    assert precision._choose(cands, 0.002, budget_ms=0.6)[0].int8 == ["a", "b"]
    pick, verdict = precision._choose(cands, 0.002, budget_ms=0.1)
    assert pick.int8 == ["a", "b"] and "no plan meets" in verdict


def test_int8_slower_everywhere_gives_an_all_fp32_plan_that_says_why():
    cands = [C([], 0.50), C(["a"], 0.55), C(["a", "b"], 0.70)]
    pick, verdict = precision._choose(cands, 0.002, None)
    assert pick.int8 == [] and verdict == "all fp32: no plan with int8 blocks is faster than fp32 here"
    cands = [C([], 0.50), C(["a"], 0.30, 0.85)]  # faster, but less accurate
    pick, verdict = precision._choose(cands, 0.002, None)
    assert pick.int8 == [] and "lose more than 0.2 points of accuracy" in verdict


def test_search_builds_every_combination_and_measures_it(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", [16, 32, 64], (1, 8, 8), 10).eval()
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 96)
    plan = precision.search_student(model, SPEC, x[:64], x[64:], y[64:], load_target("x86-avx2"),
                                    keep_fp32=["classifier"], rounds=1, repeats=5)
    assert plan.blocks == BLOCKS and plan.latency_kind == "measured"
    assert len(plan.candidates) == 8  # 2^3: the classifier is kept fp32 in every one
    assert all("classifier" not in c.int8 for c in plan.candidates) and "classifier" in plan.fp32
    fp32 = next(c for c in plan.candidates if not c.int8)
    assert fp32.agreement == 1.0 and fp32.max_abs == 0.0
    assert all(c.p50_ms > 0 and 0 <= c.agreement <= 1 and 0 <= c.accuracy <= 1 for c in plan.candidates)
    assert fp32.accuracy == float((model(torch.from_numpy(x[64:])).argmax(-1).numpy() == y[64:]).mean())
    again = precision.Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.int8 == plan.int8 and again.fp32 == plan.fp32 and len(again.candidates) == 8
    with pytest.raises(UserError, match=r"stages.precision.keep_fp32: no block 'fc' in this student; its blocks are "
                                        r"features.0, features.3, features.6, classifier"):
        precision.search_student(model, SPEC, x[:64], x[64:], y[64:], load_target("x86-avx2"), keep_fp32=["fc"])


def _optimized_ops(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(path) + ".opt.onnx"
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


@pytest.mark.slow
@pytest.mark.parametrize("arch, channels, shape, fp32_blocks, float_convs", [
    ("cnn", [16, 32, 64], (1, 8, 8), ["features.0"], 1),
    ("resnet8", None, (3, 16, 16), ["layer1"], 2),
])
def test_qat_keeps_the_plans_fp32_blocks_float_and_export_folds_their_batchnorm(tmp_path, arch, channels, shape,
                                                                                fp32_blocks, float_convs):
    spec = ModelSpec("image-classification", shape, 10, tuple(map(str, range(10))), (0.5,) * shape[0], (0.25,) * shape[0])
    torch.manual_seed(0)
    prepared = quantize.prepare_qat(build_model(arch, channels, shape, 10), spec, fp32_blocks=fp32_blocks)
    quantize.set_mode(prepared, True)
    for _ in range(3):
        prepared(torch.randn(32, *shape))
    converted = quantize.convert(prepared)
    export_onnx(converted, spec, tmp_path / "mixed.onnx", 18, int8=True)
    raw = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "mixed.onnx")).graph.node)
    assert raw["BatchNormalization"] == raw["Div"] == 0  # the float blocks' QAT conv-bn form, folded
    ops = _optimized_ops(tmp_path / "mixed.onnx")
    assert ops["QLinearConv"] >= 1 and ops["Conv"] + ops["FusedConv"] == float_convs
    x = torch.randn(64, *shape)
    ref = predict(converted, x, set_mode=quantize.set_mode).numpy()
    out = ortr.logits(ortr.session(tmp_path / "mixed.onnx", 1, reference=not runs_right_here(tmp_path / "mixed.onnx")),
                      x.numpy())
    assert (ref.argmax(-1) == out.argmax(-1)).mean() >= 0.9
    assert np.abs(ref - out).max() <= 0.1 * np.abs(ref).max()


@pytest.mark.slow
def test_qat_residual_adds_run_as_integer_kernels(tmp_path):
    spec = ModelSpec("image-classification", (3, 16, 16), 10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    prepared = quantize.prepare_qat(build_model("resnet8", None, (3, 16, 16), 10), spec)
    quantize.set_mode(prepared, True)
    prepared(torch.randn(32, 3, 16, 16))
    export_onnx(quantize.convert(prepared), spec, tmp_path / "q.onnx", 18, int8=True)
    ops = _optimized_ops(tmp_path / "q.onnx")
    # every conv integer, every residual Add too: no float conv between int8 blocks
    assert ops["QLinearAdd"] == 3 and ops["QLinearConv"] == 9 and ops["Conv"] + ops["FusedConv"] == 0


def _fixed_timings(monkeypatch, p50_of):
    def evaluate(cands, reference, check, labels, target, rounds, repeats):
        for c in cands:
            c.accuracy, c.agreement, c.p50_ms = 0.9, 1.0, p50_of(c.int8)
        return "measured"

    monkeypatch.setattr(precision, "_evaluate", evaluate)


BASE = ["stages.teacher.epochs=2", "stages.distill.epochs=2", "stages.prune.enabled=false", "stages.qat.epochs=1",
        "stages.precision.enabled=true", "stages.export.formats=[onnx]", "stages.bench.repeats=5",
        "stages.bench.warmup=1"]


@pytest.mark.slow
def test_a_mixed_plan_is_trained_and_exported(tmp_path, monkeypatch):
    _fixed_timings(monkeypatch, lambda int8: 1.0 - 0.1 * ("features.3" in int8) + 0.05 * len(int8))
    state = pipeline.run(load_recipe("digits", BASE), load_target("x86-avx2"), tmp_path, quiet=True)
    assert state.records["precision"]["int8"] == ["features.3"]
    assert state.records["qat"]["precision_plan"]["fp32"] == ["features.0", "features.6", "classifier"]
    report = json.loads((tmp_path / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["kind"] == "onnx-int8")
    assert int8["precision_plan"]["int8"] == ["features.3"] and int8["quantization"] == "qat-pt2e"
    ops = _optimized_ops(tmp_path / int8["path"])
    assert ops["QLinearConv"] == 1 and ops["QGemm"] == 0  # one int8 block; the classifier stays float
    assert "## Precision plan" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_an_all_fp32_plan_skips_qat_and_the_report_recommends_fp32(tmp_path, monkeypatch):
    _fixed_timings(monkeypatch, lambda int8: 1.0 + 0.1 * len(int8))
    state = pipeline.run(load_recipe("digits", BASE), load_target("x86-avx2"), tmp_path, quiet=True)
    assert state.records["precision"]["int8"] == [] and state.records["qat"]["skipped"].startswith(
        "precision plan is all fp32")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["headline"]["artifact"].endswith("student.fp32.onnx")
    assert any("recommended artifact is student.fp32.onnx" in n for n in report["notes"])
    int8 = next(a for a in report["artifacts"] if a["kind"] == "onnx-int8")  # still written, all int8
    assert int8["quantization"] == "ptq-ort-static" and "QLinearConv" in int8["integer_kernels"]
