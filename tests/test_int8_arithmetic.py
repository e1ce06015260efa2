"""Int8 that is right on every CPU: which arithmetic a target's kernels run, the weight range that makes it exact,
the static pair test that finds files it would get wrong, and parity judged in the target's arithmetic.

Nothing here depends on the CPU the suite runs on: the non-VNNI kernel is modelled in numpy, and the host's
arithmetic is set explicitly where a code path depends on it (test_avx2_emulated.py runs the real kernels)."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from edgedistill import int8_arithmetic as ia
from edgedistill import quantize
from edgedistill.exporters.onnx import export_onnx
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.targets import load_target
from tests.helpers import SPEC, batch, cnn

ENV_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_targets_say_what_int8_arithmetic_they_run():
    ranges = {t: (load_target(t).arithmetic, load_target(t).int8_weight_range)
              for t in ("x86-avx2", "x86-avx512-vnni", "pixel-8", "galaxy-s23", "raspberry-pi-5", "iphone-15-pro")}
    assert ranges["x86-avx2"] == ("pair-saturating", (-64, 63))
    assert all(v == ("exact", (-128, 127)) for t, v in ranges.items() if t != "x86-avx2")
    assert ia.arithmetic_of("x86_64", {"avx2", "fma"}) == ia.PAIR_SATURATING
    assert ia.arithmetic_of("x86_64", {"avx2", "avx512f", "avx512_vnni"}) == ia.EXACT
    assert ia.arithmetic_of("x86_64", {"avx2", "avx_vnni"}) == ia.EXACT  # Alder Lake's VEX-coded VNNI
    assert ia.arithmetic_of("arm64", {"neon"}) == ia.EXACT
    explicit = load_target("x86-avx512-vnni").model_copy(update={"int8_arithmetic": "pair-saturating"})
    assert explicit.int8_weight_range == (-64, 63)  # a profile may say so itself


def test_the_pair_test_predicts_the_saturating_kernel():
    """Rows the test passes give the exact dot product for every u8 input; rows it flags overflow int16 for
    the input that puts their two largest same-sign weights side by side at 255."""
    rng = np.random.default_rng(0)
    seven_bit = rng.integers(-64, 64, size=(32, 48))  # ORT's reduce_range grid reaches +64
    assert not ia.can_saturate(seven_bit).any()
    for _ in range(20):
        a = rng.integers(0, 256, size=(16, 48))
        a[:4] = 255  # extremes
        assert np.array_equal(ia.pair_saturating_dot(a, seven_bit), a @ seven_bit.T)

    eight_bit = rng.integers(-128, 128, size=(32, 48))
    flagged = ia.can_saturate(eight_bit)
    assert flagged.all()
    for row in eight_bit[flagged]:
        order = np.argsort(row)  # the two largest next to each other
        w = row.copy()
        w[[0, 1]], w[order[-2:]] = row[order[-2:]], row[[0, 1]]
        a = np.zeros((1, len(w)), int)
        a[0, :2] = 255
        worst = -np.sort(-np.maximum(row, 0))[:2].sum() * 255, np.sort(np.minimum(row, 0))[:2].sum() * 255
        if abs(worst[1]) > abs(worst[0]):  # the negative pair is the one that overflows
            w[[0, 1]], w[order[:2]] = row[order[:2]], w[[0, 1]]
        assert ia.pair_saturating_dot(a, w[None])[0, 0] != (a @ w)[0], row

    mild = np.array([[127, 1, -3, 0], [64, 64, -64, -64]])  # 128*255 and 128*255: both fit int16
    assert not ia.can_saturate(mild).any()
    assert ia.can_saturate(np.array([[127, 2, 0, 0]]))[0]  # 129*255 = 32,895 > 32,767


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arith") / "fp32.onnx"
    export_onnx(cnn(seed=3).module.eval(), SPEC, path, 18)
    return path


@pytest.mark.parametrize("method", ["ort", "nncf"])
def test_ptq_writes_the_targets_weight_range(fp32_file, tmp_path, method):
    ptq = quantize.nncf_ptq_onnx if method == "nncf" else quantize.ptq_onnx
    calibration = batch(64)[0].numpy()
    for weight_range, saturates in (((-128, 127), True), ((-64, 63), False)):
        path = tmp_path / f"{weight_range[1]}.onnx"
        ptq(fp32_file, path, calibration, weight_range=weight_range)
        model = onnx.load(str(path))
        weights = ia.u8s8_weights(model)
        assert len(weights) >= 3
        assert max(int(np.abs(rows).max()) for _, _, rows in weights) == (127 if saturates else 64)
        assert bool(ia.saturation_findings(model)) == saturates


def test_dynamic_quantization_writes_the_targets_weight_range(tmp_path):
    """Transformers' dynamic int8 (MatMulInteger): same rule, and the reference execution of its integer
    products is exact (equal to this CPU's kernels where no pair can saturate)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10)).eval()
    fp32 = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(2, 64),), str(fp32), dynamo=True, external_data=False,
                      input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    x = np.random.default_rng(1).standard_normal((50, 64)).astype(np.float32)
    for weight_range in ((-128, 127), (-64, 63)):
        path = tmp_path / f"dyn{weight_range[1]}.onnx"
        quantize.dynamic_onnx(fp32, path, weight_range)
        loaded = onnx.load(str(path))
        assert "MatMulInteger" in {n.op_type for n in loaded.graph.node}
        assert bool(ia.saturation_findings(loaded)) == (weight_range == (-128, 127))
        ref = ortr.logits(ortr.session(path, reference=True), x)
        assert np.abs(ref - model(torch.from_numpy(x)).detach().numpy()).max() < 0.1
        if weight_range == (-64, 63) or ia.host_arithmetic() == ia.EXACT:
            assert np.abs(ortr.logits(ortr.session(path), x) - ref).max() < 1e-4


@pytest.mark.slow
def test_qat_trains_with_the_weight_range_the_file_holds(tmp_path):
    prepared = quantize.prepare_qat(cnn(seed=0).module, SPEC, weight_range=(-64, 63))
    weight_ranges = {(m.quant_min, m.quant_max) for name, m in prepared.named_children()
                     if name.startswith("activation_post_process") and m.qscheme == torch.per_channel_symmetric}
    assert weight_ranges == {(-64, 63)}
    quantize.set_mode(prepared, True)
    prepared(batch(32)[0])
    path = tmp_path / "qat7.onnx"
    export_onnx(quantize.convert(prepared), SPEC, path, 18, int8=True)
    model = onnx.load(str(path))
    weights = ia.u8s8_weights(model)
    assert weights and max(int(np.abs(rows).max()) for _, _, rows in weights) <= 64
    assert not ia.saturation_findings(model)


def _cli_check(path, target):
    return subprocess.run([sys.executable, "-m", "edgedistill", "check", str(path), "--target", target],
                          capture_output=True, text=True, cwd=ENV_ROOT)


def test_check_flags_8_bit_weights_for_a_non_vnni_target(fp32_file, tmp_path):
    eight, seven = tmp_path / "w8.onnx", tmp_path / "w7.onnx"
    quantize.ptq_onnx(fp32_file, eight, batch(64)[0].numpy())
    quantize.ptq_onnx(fp32_file, seven, batch(64)[0].numpy(), weight_range=(-64, 63))
    flagged = _cli_check(eight, "x86-avx2")
    assert flagged.returncode == 3, flagged.stderr
    line = next(line for line in flagged.stdout.splitlines() if "int8 weight pairs" in line)
    assert "overflow int16" in line and "7-bit weights" in line and "reduce_range=True" in line
    assert "NOT deployable" in flagged.stdout
    from edgedistill.deployability import check_file

    assert check_file(seven, load_target("x86-avx2"))["ok"]
    assert check_file(eight, load_target("x86-avx512-vnni"))["ok"]  # VNNI: 8-bit weights are exact
    assert check_file(eight, load_target("pixel-8"))["ok"]


def _ctx(tmp_path, target):
    logs = []
    return SimpleNamespace(target=load_target(target), out=tmp_path, log=logs.append), logs


@pytest.mark.parametrize("host", [ia.EXACT, ia.PAIR_SATURATING])
def test_parity_is_judged_in_the_targets_arithmetic(fp32_file, tmp_path, monkeypatch, host):
    """The same rung, on a host whose kernels match the target's or not: matching, the host kernels judge;
    not matching, reference execution judges and the host kernels' result is kept beside it."""
    from edgedistill import parity

    monkeypatch.setattr(ia, "host_arithmetic", lambda: host)
    path = tmp_path / "student.int8.onnx"
    quantize.ptq_onnx(fp32_file, path, batch(64)[0].numpy())  # 8-bit weights, as for pixel-8
    x = batch(100, seed=4)[0].numpy()
    reference = ortr.logits(ortr.session(fp32_file), x)

    def onnx_logits(p, reference=False):
        return ortr.logits(ortr.session(p, reference=reference), x)

    ctx, logs = _ctx(tmp_path, "pixel-8")
    rung = parity.int8_rung(ctx, reference, path, ("fp32", "int8"), (0.9, None), onnx_logits, path)
    assert rung["arithmetic"] == ("host-kernels" if host == ia.EXACT else "reference")
    assert rung["top1_agreement"] >= 0.9
    if host == ia.PAIR_SATURATING:
        assert rung["host_arithmetic"] == ia.PAIR_SATURATING and set(rung["host_kernels"]) == {
            "top1_agreement", "max_abs", "max_rel"}
    assert path.exists()


def test_a_refused_int8_file_is_renamed_and_the_message_names_the_key(fp32_file, tmp_path):
    from edgedistill import parity
    from edgedistill.errors import RefusedError

    path = tmp_path / "student.int8.onnx"
    quantize.ptq_onnx(fp32_file, path, batch(64)[0].numpy(), weight_range=(-64, 63))
    x = batch(100, seed=4)[0].numpy()
    wrong = -ortr.logits(ortr.session(fp32_file), x)  # a reference it cannot agree with
    ctx, _ = _ctx(tmp_path, "x86-avx2")
    with pytest.raises(RefusedError) as refused:
        parity.int8_rung(ctx, wrong, path, ("student int8 (torch)", "int8"), (0.98, 0.05), lambda p, reference=False:
                          ortr.logits(ortr.session(p, reference=reference), x), path)
    message = str(refused.value)
    assert "stages.export.int8_" in message and "student.int8.refused.onnx" in message
    assert not path.exists() and (tmp_path / "student.int8.refused.onnx").exists()
