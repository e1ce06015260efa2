"""QAT int8 on real vision models (timm, torchvision; random weights, 64 px): every conv and the classifier run as
ONNX Runtime integer kernels, the int8 file agrees with fp32, and the stack's known traps stay fixed (exact-zero
BatchNorm weights, a ReLU module called twice, BatchNormAct2d's batch counter, ConvNeXt's head in Core ML)."""

import copy

import numpy as np
import pytest
import torch

from edgedistill import quantize
from edgedistill.exporters.onnx import export_onnx
from edgedistill.models import ModelSpec
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.training import predict
from tests.helpers import runs_right_here

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

PX = 64
SPEC = ModelSpec("image-classification", (3, PX, PX), 10, tuple(map(str, range(10))), (0.485, 0.456, 0.406),
                 (0.229, 0.224, 0.225))


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("tv:"):
        return getattr(torchvision.models, name[3:])(num_classes=10)
    return timm.create_model(name, pretrained=False, num_classes=10)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, PX, PX, generator=torch.Generator().manual_seed(seed))


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics from the calibration images (random init leaves them at 0 / 1), then eval."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0  # this batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.cat([images(8, seed) for seed in (1, 2)]))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def int8_of(model: torch.nn.Module):
    """The qat stage's path without training: prepare, observers fed the calibration images (eval mode: the
    BatchNorm statistics stay the fp32 model's), convert."""
    prepared = quantize.prepare_qat(copy.deepcopy(model), SPEC)
    quantize.set_mode(prepared, False)
    with torch.no_grad():
        for seed in (1, 2):
            out = prepared(images(8, seed))
            assert torch.isfinite(out).all()
    return quantize.convert(prepared)


def conv_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _rel(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(reference - other).max() / np.abs(reference).max())


# Random weights on noise images amplify every rounding: a deep mobile net's int8 logits drift from fp32 by as
# much as its max logit, ORT's own static PTQ's too. So int8 is held to PTQ's error of the same fp32 file, and
# to the torch int8 model it was exported from (ORT rounds biases and requantizes in its own order).
MODELS = ["mobilenetv3_small_050", "tv:mobilenet_v3_small", "efficientnet_b0", "resnet18", "tv:resnet18"]
PTQ_MARGIN, TORCH_INT8_MAX_REL = 1.25, 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_conv_runs_as_an_integer_kernel(name, tmp_path):
    """HardSwish/SiLU after the convs, squeeze-excitation, residual adds, zero-init BatchNorm (timm resnet18) and
    a shared ReLU module (torchvision resnet18): ORT's optimized int8 graph has no float Conv or Gemm left, and
    the file is as close to fp32 as ORT's own static PTQ."""
    import collections

    import onnx

    model = calibrated(build(name))
    q = int8_of(model)
    fp32_path, int8_path = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, SPEC, fp32_path, 18)
    export_onnx(q, SPEC, int8_path, 18, int8=True)
    ortr.session(int8_path, 1, optimized_path=tmp_path / "opt.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == conv_count(model), ops
    assert ops["QGemm"] >= 1 and not {"Conv", "FusedConv", "Gemm", "MatMul"} & set(ops), ops

    x = images(32, seed=3).numpy()
    fp32 = ortr.logits(ortr.session(fp32_path), x)
    torch_int8 = predict(q, torch.from_numpy(x), set_mode=quantize.set_mode).numpy()
    ptq_path = tmp_path / "ptq.onnx"
    quantize.ptq_onnx(fp32_path, ptq_path, np.concatenate([images(8, s).numpy() for s in (1, 2)]), batch_size=8)
    ptq_error = _rel(fp32, ortr.logits(ortr.session(ptq_path, reference=True), x))
    for reference in {True, not runs_right_here(int8_path)}:  # 8-bit weights: see test_quantize_export
        int8 = ortr.logits(ortr.session(int8_path, reference=reference), x)
        assert np.isfinite(int8).all()
        assert _rel(torch_int8, int8) < TORCH_INT8_MAX_REL, (reference, _rel(torch_int8, int8))
        assert _rel(fp32, int8) <= PTQ_MARGIN * ptq_error + 0.02, (reference, _rel(fp32, int8), ptq_error)


def test_zero_batchnorm_weights_are_nudged_not_nan():
    """timm zero-inits the last BatchNorm of each residual block; QAT's conv-BN fusion divides by it."""
    model = calibrated(build("resnet18"))
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert zeros > 0
    x = images(4, seed=3)
    with torch.no_grad():
        before = model(x)
    nudged = copy.deepcopy(model)
    assert quantize.nudge_zero_bn_weights(nudged) == zeros
    with torch.no_grad():
        assert torch.allclose(nudged(x), before, atol=1e-4 * before.abs().max().item())
    prepared = quantize.prepare_qat(nudged, SPEC)
    quantize.set_mode(prepared, True)
    with torch.no_grad():
        assert torch.isfinite(prepared(x)).all()


def test_a_relu_module_called_twice_prepares():
    """torchvision's BasicBlock calls self.relu after each conv; module-pattern annotation rejected that."""
    prepared = quantize.prepare_qat(build("tv:resnet18"), SPEC)
    observers = [n for n, _ in prepared.named_children() if n.startswith("activation_post_process")]
    assert len(observers) > 40  # 20 convs' inputs, weights and outputs, the residual adds


@pytest.mark.slow
def test_int8_coreml_package_targets_ios17_without_state(tmp_path):
    """timm's BatchNormAct2d counts batches in place; a converted graph keeping that became iOS 18 state."""
    import coremltools as ct

    from edgedistill.exporters import coreml

    model = build("mobilenetv3_small_050")
    prepared = quantize.prepare_qat(model, SPEC)
    quantize.set_mode(prepared, True)
    with torch.no_grad():
        prepared(images(4, seed=1))
    q = quantize.convert(prepared)
    assert not [n for n in q.graph.nodes if "num_batches_tracked" in str(n.args[0:1])]
    path = tmp_path / "student.w8a8.mlpackage"
    coreml.to_coreml(q, SPEC, path, deployment_target="iOS17", compute_units="ALL", precision="w8a8",
                     description="test", version="0")
    spec = ct.utils.load_spec(str(path))
    assert len(spec.description.state) == 0
    assert spec.specificationVersion == ct.target.iOS17.value  # not raised to iOS 18's


def test_convnext_exports_to_onnx_with_a_dynamic_batch_and_to_coreml(tmp_path):
    from edgedistill.exporters import coreml

    model = calibrated(build("convnext_atto"))
    path = tmp_path / "fp32.onnx"
    export_onnx(model, SPEC, path, 18)
    sess = ortr.session(path)
    for n in (1, 3):
        x = images(n, seed=4)
        with torch.no_grad():
            expected = model(x).numpy()
        assert np.abs(ortr.logits(sess, x.numpy()) - expected).max() < 1e-3 * np.abs(expected).max()
    package = tmp_path / "student.fp16.mlpackage"
    coreml.to_coreml(model, SPEC, package, deployment_target="iOS17", compute_units="ALL", precision="fp16",
                     description="test", version="0")
    assert coreml.inspect(package)["labels"] == list(SPEC.labels)


@pytest.mark.slow
def test_seven_bit_mobile_net_is_right_on_non_vnni_kernels(tmp_path):
    """The x86-avx2 weight range (7 bits) through the new annotation: no weight pair can saturate ONNX Runtime's
    u8s8 kernels without VNNI, and those kernels (this CPU's or qemu's Haswell model) compute the file as its
    reference execution does."""
    import onnx

    from edgedistill import int8_arithmetic as ia
    from tests import test_avx2_emulated as avx2

    if not avx2.NATIVE_AVX2 and avx2.QEMU is None:
        pytest.skip("needs an x86-64 CPU without VNNI, or qemu-user to emulate one")
    prepared = quantize.prepare_qat(calibrated(build("mobilenetv3_small_050")), SPEC,
                                    weight_range=ia.WEIGHT_RANGE[ia.PAIR_SATURATING])
    quantize.set_mode(prepared, False)
    with torch.no_grad():
        prepared(images(8, seed=1))
    path = tmp_path / "int8.onnx"
    export_onnx(quantize.convert(prepared), SPEC, path, 18, int8=True)
    assert not ia.saturation_findings(onnx.load(str(path)))
    x = images(8, seed=3).numpy()
    reference = ortr.logits(ortr.session(path, reference=True), x)
    (fused,) = avx2._fused_on_avx2(tmp_path, x, path)
    assert _rel(reference, fused) < TORCH_INT8_MAX_REL and (reference.argmax(1) == fused.argmax(1)).mean() >= 0.75
