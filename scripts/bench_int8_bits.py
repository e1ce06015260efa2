"""Benchmark: 8-bit vs 7-bit int8 weights on x86 without VNNI, same models, same inputs, one run.

    python scripts/bench_int8_bits.py [--out runs/bench-int8-bits] [--cifar ../shared/datasets/cifar10/cifar10_jpeg.npz]
                                      [--threads 1] [--rounds 7]

Models: the default recipe's student (digits, trained by `compress`: its QAT file from an x86-avx512-vnni run,
8-bit weights, and from an x86-avx2 run, 7-bit, plus ONNX Runtime static PTQ of the distilled fp32 student both
ways) and a CIFAR ResNet-20 with random weights (QAT-prepared and PTQ, both ways; CIFAR test images as inputs
when --cifar is given, else normal noise).

For each int8 file: max relative error (of the largest logit) and top-1 agreement of ONNX Runtime's fused kernels
on an AVX2-only CPU (qemu-x86_64 -cpu Haswell, or this CPU when it has no VNNI) against the file's reference
execution (Q/DQ as float ops), and batch-1 latency of the fused file on THIS host (alternating rounds).
Writes OUT/bench_int8_bits.json and prints a table."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _bench import compress

FUSED = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[2], opts, providers=["CPUExecutionProvider"])
np.save(sys.argv[3], np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 256]})[0] for i in range(0, len(x), 256)]))
"""


def fused_on_avx2(path: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    from edgedistill import int8_arithmetic as ia

    np.save(tmp / "x.npy", x)
    (tmp / "fused.py").write_text(FUSED)
    prefix = [] if ia.host_arithmetic() == ia.PAIR_SATURATING else [shutil.which("qemu-x86_64"), "-cpu", "Haswell"]
    subprocess.run([*prefix, sys.executable, str(tmp / "fused.py"), str(tmp / "x.npy"), str(path), str(tmp / "y.npy")],
                   check=True, stderr=subprocess.DEVNULL)
    return np.load(tmp / "y.npy")


def digits_files(out: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    from edgedistill import quantize
    from edgedistill.data import load_data
    from edgedistill.exporters.onnx import fuse_friendly_qdq
    from edgedistill.io import write_bytes
    from edgedistill.recipe import load_recipe

    import onnx

    sets = ["stages.export.formats=[onnx]", "stages.bench.enabled=false"]
    files = {}
    for target, bits in (("x86-avx512-vnni", 8), ("x86-avx2", 7)):
        compress("digits", target, out / f"digits-{target}", sets)
        files[f"digits student, QAT {bits}-bit"] = out / f"digits-{target}" / "07-export" / "student.int8.onnx"
    recipe = load_recipe("digits", sets)
    data = load_data(recipe.data, recipe.seed)
    fp32 = out / "digits-x86-avx2" / "07-export" / "student.fp32.onnx"
    for bits, weight_range in ((8, (-128, 127)), (7, (-64, 63))):
        path = out / f"digits-ptq{bits}.onnx"
        quantize.ptq_onnx(fp32, path, data.x_train[:512].numpy(), weight_range=weight_range)
        write_bytes(path, fuse_friendly_qdq(onnx.load(str(path))).SerializeToString())
        files[f"digits student, PTQ {bits}-bit"] = path
    return files, data.x_test.numpy(), data.y_test.numpy()


def cifar_inputs(path: Path | None, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    if path is None:
        return rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    from PIL import Image

    z = np.load(path, allow_pickle=False)
    buf, offsets = z["test_jpeg"], z["test_offsets"]
    pick = rng.choice(len(offsets) - 1, n, replace=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(buf[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
                       for i in pick]).astype(np.float32) / 255
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    return ((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def resnet20_files(out: Path, x: np.ndarray) -> dict:
    import torch

    from edgedistill import quantize
    from edgedistill.exporters.onnx import export_onnx, fuse_friendly_qdq
    from edgedistill.io import write_bytes
    from edgedistill.models import ModelSpec, build_model

    import onnx

    spec = ModelSpec(task="image-classification", input_shape=(3, 32, 32), num_classes=10,
                     labels=tuple(map(str, range(10))), mean=(0.0,) * 3, std=(1.0,) * 3)
    torch.manual_seed(0)
    model = build_model("resnet20", None, spec.input_shape, 10).eval()
    fp32 = out / "resnet20.fp32.onnx"
    export_onnx(model, spec, fp32, 18)
    files = {}
    calibration = torch.from_numpy(x[:256])
    for bits, weight_range in ((8, (-128, 127)), (7, (-64, 63))):
        prepared = quantize.prepare_qat(model, spec, weight_range=weight_range)
        quantize.set_mode(prepared, True)
        with torch.no_grad():  # observers and BN statistics see the inputs: no training, random weights
            for i in range(0, len(calibration), 64):
                prepared(calibration[i:i + 64])
        path = out / f"resnet20-qat{bits}.onnx"
        export_onnx(quantize.convert(prepared), spec, path, 18, int8=True)
        files[f"ResNet-20 (random), QAT {bits}-bit"] = path
        path = out / f"resnet20-ptq{bits}.onnx"
        quantize.ptq_onnx(fp32, path, x[:256], weight_range=weight_range)
        write_bytes(path, fuse_friendly_qdq(onnx.load(str(path))).SerializeToString())
        files[f"ResNet-20 (random), PTQ {bits}-bit"] = path
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/bench-int8-bits"))
    ap.add_argument("--cifar", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from edgedistill.int8_arithmetic import saturation_findings
    from edgedistill.runtimes import onnxruntime as ortr

    import onnx

    digits, x_digits, y_digits = digits_files(args.out)
    x_cifar = cifar_inputs(args.cifar)
    groups = [(digits, x_digits, y_digits), (resnet20_files(args.out, x_cifar), x_cifar, None)]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for files, x, y in groups:
            for name, path in files.items():
                reference = ortr.logits(ortr.session(path, reference=True), x)
                fused = fused_on_avx2(path, x, Path(tmp))
                rows[name] = {
                    "file": str(path), "saturating_layers": len(saturation_findings(onnx.load(str(path)))),
                    "max_rel": float(np.abs(fused - reference).max() / np.abs(reference).max()),
                    "agreement": float((fused.argmax(-1) == reference.argmax(-1)).mean()),
                    **({"accuracy_reference": float((reference.argmax(-1) == y).mean()),
                        "accuracy_avx2_fused": float((fused.argmax(-1) == y).mean())} if y is not None else {}),
                    "p50": []}
    sessions = {name: ortr.session(r["file"], args.threads) for name, r in rows.items()}
    examples = {name: (x_digits if name.startswith("digits") else x_cifar)[:1] for name in rows}
    for _ in range(args.rounds):  # alternate, so drift on a shared machine hits every file alike
        for name, sess in sessions.items():
            rows[name]["p50"].append(ortr.latency_ms(sess, examples[name], warmup=20, repeats=200)["p50"])
    for r in rows.values():
        r["p50_ms"] = float(np.median(r.pop("p50")))
    print(f"{'file':<34} {'saturating':>10} {'AVX2 max rel':>12} {'agreement':>9} {'acc ref/AVX2':>14} {'p50 ms here':>11}")
    for name, r in rows.items():
        acc = (f"{100 * r['accuracy_reference']:.2f}/{100 * r['accuracy_avx2_fused']:.2f}"
               if "accuracy_reference" in r else "-")
        print(f"{name:<34} {r['saturating_layers']:>10} {100 * r['max_rel']:>11.2f}% {100 * r['agreement']:>8.1f}% "
              f"{acc:>14} {r['p50_ms']:>11.4f}")
    (args.out / "bench_int8_bits.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
