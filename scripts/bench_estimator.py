"""Benchmark: how far the latency estimator (edgedistill.estimate, a per-layer roofline) is from latency
measured on this machine, before and after fitting its CPU factors to those measurements.

    python scripts/bench_estimator.py [--quick] [--out DIR] [--repeats 200] [--rounds 2]

1. Builds a set of zoo models (cnn and mlp at several widths on 1x28x28 and 3x32x32, the CIFAR ResNets and
   WRNs; random weights: latency does not depend on their values), exports each to ONNX, and makes int8
   copies of several the way the export stage does (ONNX Runtime static PTQ, here calibrated on random
   inputs, then fuse_friendly_qdq).
2. Measures each on this machine as edgedistill measures: ONNX Runtime CPU EP, batch 1, the host profile's
   threads capped at the cores, warm-up excluded, p50 (median over --rounds rounds that go through all the
   models in turn, so drift hits them alike).
3. Estimates each for the host profile (x86-avx512-vnni when the CPU has avx512_vnni, else x86-avx2) with
   the factors estimate.py had before calibration, and with those it has now.
4. Fits the CPU factors (compute efficiency, memory efficiency, per-node overhead; one set per precision)
   with edgedistill.estimate.calibrate on one half of the models and scores them on the other half, both
   ways (2-fold), and leave-one-out; then fits on all of them: the figures to put in estimate.py.

Errors are |estimated / measured - 1|; the headline is their median over the models.
--quick: 3 models and 50 repeats, a smoke test whose fitted figures mean nothing."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

# The factors estimate.py used before they were fitted to measurements (datasheet fractions, both precisions).
BEFORE = {"compute": 0.35, "memory": 0.6, "overhead_us": 4.0}

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
# (name, arch, channels, input shape, also int8?)
MODELS = [
    ("cnn-8-16-32/mnist", "cnn", [8, 16, 32], MNIST, True),
    ("cnn-32-64-128/mnist", "cnn", [32, 64, 128], MNIST, True),
    ("cnn-64-128-256/mnist", "cnn", [64, 128, 256], MNIST, False),
    ("cnn-16-32-64/cifar", "cnn", [16, 32, 64], CIFAR, False),
    ("cnn-64-128-256/cifar", "cnn", [64, 128, 256], CIFAR, True),
    ("cnn-128-256-512/cifar", "cnn", [128, 256, 512], CIFAR, False),
    ("mlp-256/mnist", "mlp", [256], MNIST, False),
    ("mlp-800-800/mnist", "mlp", [800, 800], MNIST, True),
    ("mlp-1200-1200/mnist", "mlp", [1200, 1200], MNIST, False),
    ("resnet8", "resnet8", None, CIFAR, True),
    ("resnet14", "resnet14", None, CIFAR, False),
    ("resnet20", "resnet20", None, CIFAR, True),
    ("resnet32", "resnet32", None, CIFAR, False),
    ("resnet56", "resnet56", None, CIFAR, True),
    ("resnet8x4", "resnet8x4", None, CIFAR, True),
    ("wrn_16_1", "wrn_16_1", None, CIFAR, False),
    ("wrn_16_2", "wrn_16_2", None, CIFAR, True),
    ("wrn_40_1", "wrn_40_1", None, CIFAR, True),
]
QUICK = [MODELS[0], (*MODELS[9][:4], False)]  # cnn fp32 + int8, resnet8 fp32: 3 models


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_profile():
    from edgedistill.targets import host_cpu_flags, load_target

    return load_target("x86-avx512-vnni" if "avx512_vnni" in host_cpu_flags() else "x86-avx2")


def export_all(models, tmp: Path) -> list[dict]:
    """ONNX files for every (model, precision): fp32 for all, int8 for those marked."""
    import onnx
    import torch

    from edgedistill.exporters.onnx import export_onnx, fuse_friendly_qdq
    from edgedistill.models import ModelSpec, build_model
    from edgedistill.quantize import ptq_onnx
    from edgedistill.runtimes import onnxruntime as ortr

    entries = []
    for name, arch, channels, shape, int8 in models:
        torch.manual_seed(0)
        spec = ModelSpec("image-classification", shape, 10, tuple(map(str, range(10))), (0.5,) * shape[0],
                         (0.25,) * shape[0])
        fp32 = tmp / f"{name.replace('/', '_')}.fp32.onnx"
        export_onnx(build_model(arch, channels, shape, 10).eval(), spec, fp32, 18)
        entries.append({"model": name, "precision": "fp32", "path": fp32, "shape": shape})
        if int8:
            path = fp32.with_suffix("").with_suffix(".int8.onnx")
            calibration = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
            ptq_onnx(fp32, path, calibration)
            onnx.save(fuse_friendly_qdq(onnx.load(str(path))), str(path))
            kernels = sorted(set(ortr.optimized_op_types(path)) & ortr.INTEGER_KERNELS)
            entries.append({"model": name, "precision": "int8", "path": path, "shape": shape,
                            "integer_kernels": kernels})
        print(f"  exported {name}{' (+int8)' if int8 else ''}", flush=True)
    return entries


def measure_all(entries, threads: int, warmup: int, repeats: int, rounds: int) -> None:
    """Adds "measured_ms" (median of the rounds' p50) to each entry; the rounds go through all models in turn."""
    from edgedistill.runtimes import onnxruntime as ortr

    sessions = [ortr.session(e["path"], threads) for e in entries]
    inputs = [np.random.default_rng(1).standard_normal((1, *e["shape"])).astype(np.float32) for e in entries]
    p50s = [[] for _ in entries]
    for r in range(rounds):
        for i, (sess, x) in enumerate(zip(sessions, inputs)):
            p50s[i].append(ortr.latency_ms(sess, x, warmup, repeats)["p50"])
        print(f"  measured round {r + 1}/{rounds}", flush=True)
    for e, runs in zip(entries, p50s):
        e["measured_ms"], e["round_p50s_ms"] = float(np.median(runs)), runs


def predict(entry, target, factors: dict) -> float:
    from edgedistill.estimate import peaks, roofline_ms

    return roofline_ms(entry["layers"], entry["other"], *peaks(target, entry["precision"]), factors)


def fit(entries, target) -> dict:
    """{precision: factors} fitted on `entries` (one set per precision present)."""
    from edgedistill.estimate import calibrate, peaks

    out = {}
    for precision in sorted({e["precision"] for e in entries}):
        mine = [e for e in entries if e["precision"] == precision]
        out[precision] = calibrate([(e["layers"], e["other"], e["measured_ms"]) for e in mine],
                                   *peaks(target, precision))
    return out


def rel_err(estimated: float, measured: float) -> float:
    return abs(estimated / measured - 1)


def median_err(entries, key: str) -> float | None:
    errs = [rel_err(e[key], e["measured_ms"]) for e in entries if e.get(key) is not None]
    return float(np.median(errs)) if errs else None


def halves(entries) -> tuple[list[dict], list[dict]]:
    """Two halves that each span the latency range: within each precision, sorted by measured latency, alternate."""
    a, b = [], []
    for precision in ("fp32", "int8"):
        mine = sorted((e for e in entries if e["precision"] == precision), key=lambda e: e["measured_ms"])
        a += mine[0::2]
        b += mine[1::2]
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 models, 50 repeats: a smoke test")
    ap.add_argument("--out", type=Path, help="write bench_estimator.json here")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per round (default 200, quick 50)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=None, help="rounds over all models (default 2, quick 1)")
    args = ap.parse_args()
    repeats = args.repeats or (50 if args.quick else 200)
    rounds = args.rounds or (1 if args.quick else 2)

    import onnx
    import onnxruntime
    import torch

    from edgedistill.estimate import efficiency, estimate, graph_work
    from edgedistill.runtimes import onnxruntime as ortr

    target = host_profile()
    threads = ortr.host_threads(target.threads)
    print(f"host profile {target.name}, {threads} threads, warm-up {args.warmup}, {repeats} repeats x {rounds} rounds")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        entries = export_all(QUICK if args.quick else MODELS, Path(tmp))
        measure_all(entries, threads, args.warmup, repeats, rounds)
        for e in entries:
            now = estimate(e["path"], target, precision=e["precision"])
            e["layers"], e["other"] = graph_work(onnx.load(str(e["path"])), e["precision"])
            e["macs"], e["compute_nodes"] = sum(c.macs for c in e["layers"]), len(e["layers"])
            e["est_now_ms"] = now["p50"]
            e["est_before_ms"] = predict(e, target, BEFORE)

    # Fit on one half, score on the other, and the other way round (2-fold); then leave-one-out; then all.
    a, b = halves(entries)
    folds = {}
    for name, train, test in (("a->b", a, b), ("b->a", b, a)):
        factors = fit(train, target)
        for e in test:
            e[f"heldout_{name}_ms"] = predict(e, target, factors[e["precision"]]) if e["precision"] in factors else None
        folds[name] = {"factors": factors, "train": [f"{e['model']} {e['precision']}" for e in train],
                       "heldout_median_err": median_err(test, f"heldout_{name}_ms")}
    for e in entries:
        e["two_fold_ms"] = e.get("heldout_a->b_ms") or e.get("heldout_b->a_ms")
    for i, e in enumerate(entries):
        rest = [o for j, o in enumerate(entries) if j != i and o["precision"] == e["precision"]]
        e["loo_ms"] = predict(e, target, fit(rest, target)[e["precision"]]) if len(rest) >= 3 else None
    fitted = fit(entries, target)
    for e in entries:
        e["fit_all_ms"] = predict(e, target, fitted[e["precision"]])

    summary = {
        "before (datasheet guesses)": median_err(entries, "est_before_ms"),
        "estimate.py now": median_err(entries, "est_now_ms"),
        "held-out half (fit on a, scored on b)": folds["a->b"]["heldout_median_err"],
        "held-out half (fit on b, scored on a)": folds["b->a"]["heldout_median_err"],
        "2-fold, all models held out once": median_err(entries, "two_fold_ms"),
        "leave-one-out": median_err(entries, "loo_ms"),
        "fitted on all (in-sample)": median_err(entries, "fit_all_ms"),
    }

    def ms(v):
        return f"{v:.3f}" if v is not None else "-"

    half = {id(e): "a" for e in a} | {id(e): "b" for e in b}
    print(f"\n| model | precision | half | MMACs | compute nodes | measured p50 ms | before | now | held-out (2-fold) "
          "| leave-one-out | fit on all |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in entries:
        print(f"| {e['model']} | {e['precision']} | {half[id(e)]} | {e['macs'] / 1e6:.2f} | {e['compute_nodes']} "
              f"| {e['measured_ms']:.3f} | {ms(e['est_before_ms'])} | {ms(e['est_now_ms'])} | {ms(e['two_fold_ms'])} "
              f"| {ms(e['loo_ms'])} | {ms(e['fit_all_ms'])} |")
    print("\nmedian |estimated / measured - 1| over the models:")
    for k, v in summary.items():
        print(f"  {k:42s} {'-' if v is None else f'{v:.1%}'}")
    print("\nfactors fitted on all models (for edgedistill/estimate.py EFFICIENCY['cpu']):")
    for precision, f in fitted.items():
        print(f"  {precision}: compute {f['compute']:.3f}, memory {f['memory']:.3f}, overhead_us {f['overhead_us']:.2f}"
              f"   (in estimate.py now: {efficiency('cpu', precision)})")
    print(f"\n{len(entries)} models in {time.time() - t0:.0f}s")

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "command": "python scripts/bench_estimator.py" + (" --quick" if args.quick else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_model(),
            "cpus": os.cpu_count(), "target": target.name, "threads": threads,
            "warmup": args.warmup, "repeats": repeats, "rounds": rounds,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
            "before_factors": BEFORE, "fitted_factors": fitted, "folds": folds, "median_abs_rel_err": summary,
            "models": [{k: v for k, v in e.items() if k not in ("layers", "shape", "path")} for e in entries],
        }
        (args.out / "bench_estimator.json").write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out / 'bench_estimator.json'}")


if __name__ == "__main__":
    main()
