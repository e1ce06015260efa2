"""Benchmark: int8 methods on one student, same run: fp32 vs ONNX Runtime static PTQ vs NNCF PTQ vs QAT with KD.

    python scripts/bench_quant.py [--recipe cifar10-resnet] [--target x86-avx512-vnni] [--out runs/bench-quant]
                                  [--set KEY=VALUE ...] [--threads 1] [--rounds 5]

Runs the recipe with pruning off and QAT on (teacher -> student -> distill -> qat -> export), then takes that
run's distilled student (its fp32 ONNX) and quantizes it post-training both ways, calibrated on the same 512
training inputs the export stage uses. All four are evaluated on the held-out split and timed with ONNX Runtime
at batch 1, alternating the models round by round so drift on a shared machine hits them alike.
Writes OUT/bench_quant.json and prints a table. The CIFAR figures need a GPU for the training part."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _bench import compress


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="cifar10-resnet")
    ap.add_argument("--target", default="x86-avx512-vnni")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-quant"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    run = args.out / "run"
    sets = ["stages.prune.enabled=false", "stages.qat.enabled=true", "stages.export.formats=[onnx]", *args.sets]
    compress(args.recipe, args.target, run, sets)

    from edgedistill import quantize
    from edgedistill.data import load_data
    from edgedistill.exporters.onnx import fuse_friendly_qdq
    from edgedistill.io import write_bytes
    from edgedistill.recipe import load_recipe
    from edgedistill.runtimes import onnxruntime as ortr

    import onnx

    recipe = load_recipe(args.recipe, sets)
    data = load_data(recipe.data, recipe.seed, tokenizer_dir=recipe.teacher.path)
    x, y = data.x_test.numpy(), data.y_test.numpy()
    export = run / "07-export"
    models = {"fp32": export / "student.fp32.onnx", "qat+kd int8": export / "student.int8.onnx"}
    calibration = data.x_train[:512].numpy()
    for name, ptq in (("ort ptq int8", quantize.ptq_onnx), ("nncf ptq int8", quantize.nncf_ptq_onnx)):
        path = args.out / f"student.{name.split()[0]}-ptq.int8.onnx"
        ptq(models["fp32"], path, calibration)
        write_bytes(path, fuse_friendly_qdq(onnx.load(str(path))).SerializeToString())
        models[name] = path
    sessions = {k: ortr.session(p, args.threads) for k, p in models.items()}
    rows = {k: {"accuracy": float((ortr.logits(s, x).argmax(-1) == y).mean()), "bytes": p.stat().st_size,
                "integer_kernels": sorted(set(ortr.optimized_op_types(p)) & ortr.INTEGER_KERNELS), "p50": []}
            for (k, s), p in zip(sessions.items(), models.values())}
    for _ in range(args.rounds):
        for k, s in sessions.items():
            rows[k]["p50"].append(ortr.latency_ms(s, x[:1], warmup=20, repeats=200)["p50"])
    for r in rows.values():
        r["p50_ms"] = float(np.median(r.pop("p50")))
    base = rows["fp32"]
    print(f"{'model':<15} {'accuracy':>9} {'vs fp32':>8} {'KB':>8} {'p50 ms':>8} {'speed-up':>8}  integer kernels")
    for k, r in rows.items():
        r["vs_fp32_points"] = 100 * (r["accuracy"] - base["accuracy"])
        r["speedup"] = base["p50_ms"] / r["p50_ms"]
        print(f"{k:<15} {100 * r['accuracy']:>8.2f}% {r['vs_fp32_points']:>+8.2f} {r['bytes'] / 1e3:>8.1f} "
              f"{r['p50_ms']:>8.3f} {r['speedup']:>7.2f}x  {', '.join(r['integer_kernels']) or '-'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_quant.json").write_text(json.dumps(
        {"recipe": args.recipe, "target": args.target, "sets": sets, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
