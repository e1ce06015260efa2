"""The real non-VNNI kernels: ONNX Runtime on an AVX2-only CPU (this one when it has no VNNI, else qemu-user's
Haswell model, which has neither AVX-512 nor VNNI, so ONNX Runtime picks its int16 pair-saturating kernels).

An x86-avx2 run's int8 files, fused the way such a CPU runs them, must agree with what the run checked them
against; an 8-bit-weight file of the same student must not (proof that the emulation reproduces the fault)."""

import json
import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgedistill import int8_arithmetic as ia
from edgedistill import quantize
from edgedistill.runtimes import onnxruntime as ortr
from tests.test_error_catalogue import ENV, FAST, cli

QEMU = shutil.which("qemu-x86_64")
NATIVE_AVX2 = platform.machine() == "x86_64" and ia.host_arithmetic() == ia.PAIR_SATURATING
pytestmark = pytest.mark.skipif(
    not NATIVE_AVX2 and (QEMU is None or platform.machine() != "x86_64"),
    reason="needs an x86-64 CPU without VNNI, or qemu-user (Debian's qemu-user; .ci/run installs it) to emulate one")

FUSED = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    x = np.load(sys.argv[1])
    for path in sys.argv[3:]:  # default optimizations: fused QLinearConv/QGemm, this CPU's kernels
        opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
        s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        np.save(f"{sys.argv[2]}/{path.replace('/', '_')}.npy", s.run(None, {s.get_inputs()[0].name: x})[0])
""")


def _fused_on_avx2(tmp_path, x: np.ndarray, *paths) -> list[np.ndarray]:
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "fused.py"
    script.write_text(FUSED)
    prefix = [] if NATIVE_AVX2 else [QEMU, "-cpu", "Haswell"]
    done = subprocess.run([*prefix, sys.executable, str(script), str(tmp_path / "x.npy"), str(tmp_path),
                           *map(str, paths)], capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [np.load(tmp_path / f"{str(p).replace('/', '_')}.npy") for p in paths]


def _compare(reference, other):
    return (float((reference.argmax(-1) == other.argmax(-1)).mean()),
            float(np.abs(reference - other).max() / np.abs(reference).max()))


@pytest.mark.slow
def test_x86_avx2_run_is_right_on_non_vnni_kernels(tmp_path):
    from edgedistill.data import load_data
    from edgedistill.recipe import load_recipe

    out = tmp_path / "run"
    qat = ["--set", "stages.qat.enabled=true", "--set", "stages.qat.epochs=1", "--set", "stages.export.formats=[onnx, ort]"]
    result = cli("compress", "--recipe", "digits", "--out", out, *FAST, *qat)
    assert result.returncode == 0, result.stderr[-3000:]
    export = json.loads((out / "07-export" / "result.json").read_text())
    int8 = next(a for a in export["artifacts"] if a["kind"] == "onnx-int8")
    assert int8["weight_range"] == [-64, 63] and int8["int8_arithmetic"] == "pair-saturating"
    torch_rung = next(r for r in export["parity"] if r["from"] == "student int8 (torch)")
    assert torch_rung["top1_agreement"] >= 0.99  # this host's judgement of the file against the torch int8 model

    recipe = load_recipe(out / "recipe.resolved.yaml")
    data = load_data(recipe.data, recipe.seed)
    x, y = data.x_test.numpy(), data.y_test.numpy()
    onnx_file, ort_file = out / int8["path"], out / next(a for a in export["artifacts"] if a["kind"] == "ort")["path"]
    eight_bit = tmp_path / "eight_bit.onnx"  # the same student with full 8-bit weights: what the fix prevents
    quantize.ptq_onnx(out / "07-export" / "student.fp32.onnx", eight_bit, data.x_train[:256].numpy())

    reference = ortr.logits(ortr.session(onnx_file, reference=True), x)
    fused, fused_ort, fused_eight = _fused_on_avx2(tmp_path, x, onnx_file, ort_file, eight_bit)
    for got in (fused, fused_ort):
        agreement, max_rel = _compare(reference, got)
        assert agreement >= 0.99 and max_rel <= recipe.stages.export.int8_max_rel, (agreement, max_rel)
    qat_accuracy = json.loads((out / "06-qat" / "result.json").read_text())["accuracy"]
    assert abs(float((fused.argmax(-1) == y).mean()) - qat_accuracy) <= 0.01

    eight_reference = ortr.logits(ortr.session(eight_bit, reference=True), x)
    _, eight_rel = _compare(eight_reference, fused_eight)
    assert eight_rel > 0.02, f"8-bit weights ran exactly on the emulated CPU ({eight_rel:.4f}): no saturation modelled"
