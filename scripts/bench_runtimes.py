"""ONNX Runtime, ExecuTorch (XNNPACK) and LiteRT (XNNPACK) on the same models in one process: fp32 and int8,
batch 1, 1 and 2 threads. Per file: p50 latency, size, parity with torch (top-1 agreement and max |diff| on
random inputs; int8 against its own torch int8 graph), and how much of it is integer and delegated.

Models: the zoo's ResNet-20 (CIFAR, 32 px) and a timm MobileNetV3-Large (224 px), random weights: latency does
not depend on them. int8 is what a run writes for a target of that runtime: the qat stage's PT2E graph in the
target's scheme (quantize.scheme_for), here observed on random inputs without training steps. ONNX Runtime:
edgedistill's ORT annotation (U8 activations, S8 per-channel weights); ExecuTorch and LiteRT: one graph from
XNNPACK's quantizer (S8 activations), lowered by each, so their int8 rows run the same integers.

    python scripts/bench_runtimes.py --out runs/bench-runtimes      # writes results.json, prints a table
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

MODELS = {"resnet20": (3, 32, 32), "timm:mobilenetv3_large_100": (3, 224, 224)}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=1000).eval()
    from edgedistill.models import build_model

    return build_model(name, None, MODELS[name], 10).eval()


def time_p50(call, warmup: int, repeats: int) -> float:
    from edgedistill.runtimes import time_calls

    return time_calls(call, warmup, repeats)["p50"]


def agreement(ref: np.ndarray, out: np.ndarray) -> dict:
    return {"top1_agreement": float((ref.argmax(-1) == out.argmax(-1)).mean()),
            "max_abs": float(np.abs(ref - out).max())}


def spec_of(example: torch.Tensor):
    from edgedistill.models import ModelSpec

    return ModelSpec(task="image-classification", input_shape=tuple(example.shape[1:]), num_classes=1,
                     labels=("x",), mean=(0.0,), std=(1.0,))


def int8_graph(model, spec, calib: torch.Tensor, scheme: str) -> torch.fx.GraphModule:
    """The converted int8 graph a run's qat stage would hand export for `scheme`, its observers having seen
    `calib` (BatchNorm in eval mode: its statistics stay the model's)."""
    import copy

    from edgedistill import quantize

    prepared = quantize.prepare_qat(copy.deepcopy(model), spec, scheme)
    quantize.set_mode(prepared, False)
    with torch.no_grad():
        for i in range(0, len(calib), 8):
            prepared(calib[i : i + 8])
    return quantize.convert(prepared)


def onnx_files(model, spec, int8_model, tmp: Path) -> dict:
    from edgedistill.exporters.onnx import export_onnx

    fp32, int8 = tmp / "m.fp32.onnx", tmp / "m.int8.onnx"
    export_onnx(model, spec, fp32, 18)
    export_onnx(int8_model, spec, int8, 18, int8=True)
    return {"fp32": fp32, "int8": int8}


def ort_composition(path: Path) -> dict:
    from edgedistill.runtimes import onnxruntime as ortr

    ops = ortr.optimized_op_types(path)
    return {"integer_kernels": sorted(set(ops) & ortr.INTEGER_KERNELS), "delegate": "CPU EP (no delegate)"}


def run_ort(path, x, threads, warmup, repeats):
    from edgedistill.runtimes import onnxruntime as ortr

    sess = ortr.session(path, threads)
    out = np.concatenate([ortr.logits(sess, x[i : i + 1]) for i in range(len(x))])
    return out, time_p50(lambda: sess.run(None, ortr.feed(sess, x[:1])), warmup, repeats)


def run_pte(path, x, threads, warmup, repeats):
    from edgedistill.runtimes import executorch as etr

    out = etr.outputs(path, x, threads)
    forward, inputs = etr.method(path, threads), [torch.from_numpy(np.ascontiguousarray(x[:1]))]
    return out, time_p50(lambda: forward.execute(inputs), warmup, repeats)


def run_tflite(path, x, threads, warmup, repeats):
    from edgedistill.runtimes import litert as ltr

    out = ltr.outputs(path, x, threads)
    it = ltr.interpreter(path, threads)
    (inp,), (o,) = it.get_input_details(), it.get_output_details()
    q = ltr.quantize(x[:1], inp)
    return out, time_p50(lambda: (it.set_tensor(inp["index"], q), it.invoke(), it.get_tensor(o["index"])),
                         warmup, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--inputs", type=int, default=16, help="random inputs for parity")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    from edgedistill.exporters import executorch as etx
    from edgedistill.exporters import litert as ltx
    from edgedistill.mobile_graphs import read_pte
    from edgedistill.quantize import set_mode
    from edgedistill.training import predict

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        model, shape = build(name), MODELS[name]
        g = torch.Generator().manual_seed(1)
        example = torch.randn(1, *shape, generator=g)
        calib = torch.randn(32, *shape, generator=g)
        x = torch.randn(args.inputs, *shape, generator=g)
        ref = predict(model, x).numpy()
        d = args.out / name.replace(":", "_")
        d.mkdir(exist_ok=True)
        t0 = time.time()
        spec = spec_of(example)
        ort_int8 = int8_graph(model, spec, calib, "onnxruntime-u8s8")
        xnn_int8 = int8_graph(model, spec, calib, "xnnpack-s8")
        int8_refs = {id(m): predict(m, x, set_mode=set_mode).numpy() for m in (ort_int8, xnn_int8)}
        files = {("onnxruntime", p): (f, ref if p == "fp32" else int8_refs[id(ort_int8)], ort_composition(f))
                 for p, f in onnx_files(model, spec, ort_int8, d).items()}
        for precision, module in (("fp32", model), ("int8", xnn_int8)):
            path = d / f"m.{precision}.pte"
            graph = etx.lower(module, example, etx._xnnpack(), path, "XNNPACK")
            assert read_pte(path)["operators"]
            files["executorch", precision] = (path, ref if precision == "fp32" else int8_refs[id(module)], graph)
        for precision, module, q in (("fp32", model, None),
                                     ("int8", ltx.unfold_weights(xnn_int8), ltx.converter_quantizer())):
            path = d / f"m.{precision}.tflite"
            ltx.convert(module, example, path, q)
            files["litert", precision] = (path, ref if precision == "fp32" else int8_refs[id(xnn_int8)],
                                          ltx.composition(path)[0])
        print(f"{name}: exported in {time.time() - t0:.0f} s", flush=True)
        runners = {"onnxruntime": run_ort, "executorch": run_pte, "litert": run_tflite}
        for threads in args.threads:
            for (runtime, precision), (path, reference, graph) in files.items():
                out, p50 = runners[runtime](path, x.numpy(), threads, args.warmup, args.repeats)
                rows.append({"model": name, "runtime": runtime, "precision": precision, "threads": threads,
                             "p50_ms": round(p50, 3), "size_kb": round(path.stat().st_size / 1e3, 1),
                             **agreement(reference, out), "graph": graph})
                print(f"  {runtime:<11} {precision} {threads} thr  p50 {p50:8.3f} ms  "
                      f"{path.stat().st_size / 1e3:9.1f} KB  agree {rows[-1]['top1_agreement']:.2f}", flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
