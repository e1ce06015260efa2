"""Benchmark: int8 on real vision models in ONNX Runtime: fp32 vs this project's QAT-path int8 vs ORT static PTQ.

    python scripts/bench_vision_int8.py [--models resnet18 tv:mobilenet_v3_small ...] [--px 224] [--threads 1]
                                        [--rounds 7] [--out runs/bench-vision-int8]

Each model (timm by name, torchvision as tv:NAME) with random weights and 10 classes is exported to fp32 ONNX;
its int8 twins are (1) the qat stage's path: torchao PT2E prepare with edgedistill's annotation, observers and
BatchNorm statistics fed a few random batches in training mode (no weight updates: latency does not depend on
them), convert, int8 export with edgedistill's QDQ post-pass; (2) ONNX Runtime quantize_static, QDQ, U8
activations, S8 per-channel weights, calibrated on the same random batches. Reported: ORT's optimized graph
(integer vs float convs and Gemms) and batch-1 latency, 1 thread, p50 of `repeats` runs, median over rounds
that alternate the three files so drift hits them alike. Writes OUT/bench_vision_int8.json, prints a table."""

from __future__ import annotations

import argparse
import collections
import copy
import json
import time
import traceback
from pathlib import Path

import numpy as np
import torch

MODELS = ["resnet18", "resnet50", "mobilenetv3_large_100", "mobilenetv3_small_100", "efficientnet_b0",
          "convnext_atto", "mobilenetv4_conv_small", "repvit_m0_9", "tv:mobilenet_v3_small", "tv:resnet18"]


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("tv:"):
        import torchvision

        return getattr(torchvision.models, name[3:])(num_classes=10)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10)


def graph_ops(path: Path) -> dict:
    """Operator counts in the graph ONNX Runtime runs (after its fusions)."""
    import onnx

    from edgedistill.runtimes import onnxruntime as ortr

    optimized = path.with_suffix(".opt.onnx")
    ortr.session(path, 1, optimized_path=optimized)
    counts = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    optimized.unlink()
    convs = ("Conv", "FusedConv", "NhwcFusedConv")
    return {"int8_conv": counts["QLinearConv"], "float_conv": sum(counts[c] for c in convs),
            "int8_gemm": counts["QGemm"] + counts["QLinearMatMul"], "float_gemm": counts["Gemm"] + counts["MatMul"],
            "q": counts["QuantizeLinear"], "dq": counts["DequantizeLinear"]}


def qat_int8(model, spec, batches, path: Path) -> float:
    from edgedistill import quantize
    from edgedistill.exporters.onnx import export_onnx

    start = time.time()
    prepared = quantize.prepare_qat(copy.deepcopy(model), spec)
    quantize.set_mode(prepared, True)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    export_onnx(quantize.convert(prepared), spec, path, 18, int8=True)
    return time.time() - start


def one(name: str, args, out: Path) -> dict:
    from edgedistill import quantize
    from edgedistill.exporters.onnx import export_onnx
    from edgedistill.models import ModelSpec
    from edgedistill.runtimes import onnxruntime as ortr

    spec = ModelSpec("image-classification", (3, args.px, args.px), 10, tuple(map(str, range(10))),
                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model = build(name).eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(args.batch, 3, args.px, args.px, generator=g) for _ in range(args.calibration)]
    d = out / name.replace(":", "_")
    d.mkdir(parents=True, exist_ok=True)
    files = {"fp32": d / "fp32.onnx", "qat": d / "qat_int8.onnx", "ptq": d / "ptq_int8.onnx"}
    row: dict = {"model": name}
    export_onnx(model, spec, files["fp32"], 18)
    for kind, make in (("qat", lambda: qat_int8(model, spec, batches, files["qat"])),
                       ("ptq", lambda: quantize.ptq_onnx(files["fp32"], files["ptq"], torch.cat(batches).numpy(),
                                                         batch_size=args.batch))):
        try:
            make()
        except Exception as e:  # noqa: BLE001 (a model that fails one path is a result, not a crash)
            row[f"{kind}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            traceback.print_exc()
            files.pop(kind)
    row["ops"] = {k: graph_ops(p) for k, p in files.items()}
    sessions = {k: ortr.session(p, args.threads) for k, p in files.items()}
    x = batches[0][:1].numpy()
    runs = collections.defaultdict(list)
    for _ in range(args.rounds):
        for k, s in sessions.items():
            runs[k].append(ortr.latency_ms(s, x, warmup=10, repeats=args.repeats)["p50"])
    row["p50_ms"] = {k: float(np.median(v)) for k, v in runs.items()}
    fp32 = row["p50_ms"]["fp32"]
    row["speedup"] = {k: fp32 / v for k, v in row["p50_ms"].items() if k != "fp32"}
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--px", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--calibration", type=int, default=2, help="random batches fed to observers / calibration")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-vision-int8"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, args.threads))
    rows = []
    for name in args.models:
        print(f"--- {name}", flush=True)
        try:
            rows.append(one(name, args, args.out))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            rows.append({"model": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
        (args.out / "bench_vision_int8.json").write_text(json.dumps(rows, indent=1))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | fp32 ms | QAT int8 ms (x) | ORT PTQ ms (x) | QAT int8 / float convs | PTQ int8 / float convs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['error']} | | | | |")
            continue
        p, s, o = r["p50_ms"], r["speedup"], r["ops"]
        cell = lambda k: f"{p[k]:.2f} ({s[k]:.2f}x)" if k in p else r.get(f"{k}_error", "-")  # noqa: E731
        convs = lambda k: f"{o[k]['int8_conv']} / {o[k]['float_conv']}" if k in o else "-"  # noqa: E731
        print(f"| {r['model']} | {p['fp32']:.2f} | {cell('qat')} | {cell('ptq')} | {convs('qat')} | {convs('ptq')} |")


if __name__ == "__main__":
    main()
