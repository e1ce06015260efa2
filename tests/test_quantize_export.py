"""QAT -> int8 ONNX with integer kernels -> .ort; fp32 ONNX parity; Core ML package contents."""

import platform

import numpy as np
import onnx
import pytest
import torch

from edgedistill import quantize
from edgedistill.distill import DistillationTask
from edgedistill.exporters import coreml, ort_mobile
from edgedistill.exporters.onnx import export_onnx, weight_bytes
from edgedistill.runtimes import RUNTIMES
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.training import predict
from tests.helpers import SPEC, batch, cnn, runs_right_here


@pytest.fixture(scope="module")
def quantized():
    """A briefly QAT-trained int8 student (teacher supervising) and its fp32 origin."""
    student, teacher = cnn(seed=0), cnn((32, 64, 64), seed=1)
    x, y = batch(128)
    prepared = quantize.prepare_qat(student.module, SPEC)
    task = DistillationTask(teacher.module, 4.0, 0.9, 0.1)
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01)
    quantize.set_mode(prepared, True)
    for i in range(0, 128, 37):  # uneven batches: the batch dimension must stay dynamic
        loss = task(prepared, x[i : i + 37], y[i : i + 37])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student, quantize.convert(prepared)


@pytest.mark.slow
def test_int8_onnx_runs_integer_kernels_and_matches_torch(quantized, tmp_path):
    student, q = quantized
    x, _ = batch(200, seed=5)
    fp32_path, int8_path = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(student.module.eval(), SPEC, fp32_path, 18)
    export_onnx(q, SPEC, int8_path, 18, int8=True)
    ops = set(ortr.optimized_op_types(int8_path))
    assert {"QLinearConv", "QGemm", "QLinearGlobalAveragePool"} <= ops
    assert "Conv" not in ops and "Gemm" not in ops  # nothing left in float
    int8_types = {i.data_type for i in onnx.load(str(int8_path)).graph.initializer}
    assert onnx.TensorProto.INT8 in int8_types
    assert weight_bytes(int8_path) < 0.35 * weight_bytes(fp32_path)
    ref = predict(q, x, set_mode=quantize.set_mode).numpy()
    # 8-bit weights: exact on VNNI/ARM kernels; on x86 without VNNI only the reference execution is (their pairs
    # saturate there: tests/test_int8_arithmetic.py, test_avx2_emulated.py)
    for reference in {True, not runs_right_here(int8_path)}:
        got = ortr.logits(ortr.session(int8_path, reference=reference), x.numpy())
        assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97
        assert np.abs(ref - got).max() < 0.5
    fp32_ref = predict(student.module, x).numpy()
    assert np.abs(ortr.logits(ortr.session(fp32_path), x.numpy()) - fp32_ref).max() < 1e-4


@pytest.mark.slow
def test_qat_state_restores_exactly(quantized, tmp_path):
    student, _ = quantized
    a = quantize.prepare_qat(student.module, SPEC)
    quantize.set_mode(a, True)
    a(batch(16)[0])  # observers see data
    torch.save(a.state_dict(), tmp_path / "qat.pt")
    b = quantize.prepare_qat(cnn(seed=7).module, SPEC)
    b.load_state_dict(torch.load(tmp_path / "qat.pt", weights_only=True))
    x = batch(8, seed=3)[0]
    assert torch.equal(predict(a, x, set_mode=quantize.set_mode), predict(b, x, set_mode=quantize.set_mode))


@pytest.mark.parametrize("method", ["ort", "nncf"])
def test_ptq_baselines_run_integer_kernels(tmp_path, method):
    student = cnn()
    fp32_path, int8_path = tmp_path / "fp32.onnx", tmp_path / "ptq.onnx"
    export_onnx(student.module.eval(), SPEC, fp32_path, 18)
    (quantize.nncf_ptq_onnx if method == "nncf" else quantize.ptq_onnx)(fp32_path, int8_path, batch(64)[0].numpy())
    assert "QLinearConv" in ortr.optimized_op_types(int8_path)
    assert not list(tmp_path.glob("*augmented*")) and not list(__import__("pathlib").Path.cwd().glob("augmented*"))


@pytest.mark.slow
def test_ort_mobile_file_and_operator_config(quantized, tmp_path):
    _, q = quantized
    int8_path = tmp_path / "student.int8.onnx"
    export_onnx(q, SPEC, int8_path, 18, int8=True)
    ort_file, config = ort_mobile.to_ort(int8_path, tmp_path / "ort", "arm64")
    assert ort_file.name == "student.int8.ort" and config.parent == ort_file.parent
    text = config.read_text()
    assert "QLinearConv" in text and "com.microsoft" in text
    x = batch(32, seed=9)[0].numpy()
    assert np.abs(ortr.logits(ortr.session(ort_file), x) - ortr.logits(ortr.session(int8_path), x)).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("w8a8", [False, True])
def test_coreml_package_is_app_ready(quantized, tmp_path, w8a8):
    student, q = quantized
    path = tmp_path / "student.mlpackage"
    coreml.to_coreml(q if w8a8 else student.module.eval(), SPEC, path, deployment_target="iOS17",
                     compute_units="ALL", precision="w8a8" if w8a8 else "fp16", description="test", version="1.2.3")
    info = coreml.inspect(path)
    assert info["input"] == {"name": "image", "type": "imageType", "width": 8, "height": 8}
    assert info["outputs"] == {"classLabel": "stringType", "classLabel_probs": "dictionaryType"}
    assert info["labels"] == list(SPEC.labels) and info["specification_version"] == 8  # iOS17
    assert info["metadata"]["version"] == "1.2.3" and info["metadata"]["precision"] == ("w8a8" if w8a8 else "fp16")
    assert ("quantize" in info["ops"]) == w8a8 and "softmax" in info["ops"]


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predict needs macOS; Linux checks the package spec only")
def test_coreml_predict_matches_torch(quantized, tmp_path):
    import coremltools as ct
    from PIL import Image

    student, _ = quantized
    path = tmp_path / "s.mlpackage"
    coreml.to_coreml(student.module.eval(), SPEC, path, deployment_target="iOS17", compute_units="CPU_ONLY",
                     precision="fp16", description="t", version="1")
    pixels = (np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)
    out = ct.models.MLModel(str(path)).predict({"image": Image.fromarray(pixels, mode="L")})
    x = (torch.from_numpy(pixels).float() / 255 - SPEC.mean[0]) / SPEC.std[0]
    probs = torch.softmax(student.module(x.view(1, 1, 8, 8)), -1)[0]
    assert out["classLabel"] == SPEC.labels[int(probs.argmax())]


def test_the_int8_scheme_follows_the_target_runtime():
    from edgedistill.targets import load_target

    assert quantize.scheme_for(load_target("iphone-15-pro")) == "coreml-w8a8"
    assert {quantize.scheme_for(load_target(t)) for t in ("pixel-8", "x86-avx2", "raspberry-pi-5")} == {"onnxruntime-u8s8"}
    assert {quantize.scheme_for(load_target(t)) for t in ("pixel-8-executorch", "pixel-8-litert",
                                                          "iphone-15-pro-executorch")} == {"xnnpack-s8"}

    def activation_ranges(scheme):
        prepared = quantize.prepare_qat(cnn(seed=0).module, SPEC, scheme)
        return {(m.quant_min, m.quant_max, m.qscheme) for name, m in prepared.named_children()
                if name.startswith("activation_post_process")
                and m.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)}

    # per-tensor activations: unsigned, asymmetric for ONNX Runtime's u8s8 kernels
    assert activation_ranges("onnxruntime-u8s8") == {(0, 255, torch.per_tensor_affine)}
    assert activation_ranges("coreml-w8a8") == {(-128, 127, torch.per_tensor_symmetric)}  # Core ML's W8A8
    if RUNTIMES.get("executorch").available():  # XNNPACK's quantizer comes with executorch
        assert activation_ranges("xnnpack-s8") == {(-128, 127, torch.per_tensor_affine)}


def test_coreml_converts_a_graph_with_aliases(tmp_path):
    """aten.alias (left by the decompositions in some transformer graphs) has no Core ML translation; the exporter
    drops it, so such a student converts and computes the same."""
    from edgedistill.models import ModelSpec

    class Aliasing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 2)

        def forward(self, ids):
            return self.head(torch.ops.aten.alias(self.embed(ids)).mean(1))

    spec = ModelSpec(task="text-classification", input_shape=(6,), num_classes=2, labels=("neg", "pos"), mean=(), std=(), pad_id=0)
    path = tmp_path / "text.mlpackage"
    coreml.to_coreml(Aliasing().eval(), spec, path, deployment_target="iOS17", compute_units="ALL", precision="fp16",
                     description="t", version="1")
    info = coreml.inspect(path)
    assert info["labels"] == ["neg", "pos"] and "softmax" in info["ops"]
