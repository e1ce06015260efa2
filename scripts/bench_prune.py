"""Benchmark: structured pruning of a CIFAR ResNet, KD recovery vs plain cross-entropy recovery, and the
measured ONNX Runtime speed-up at batch 1.

    python scripts/bench_prune.py latency [--arch resnet56] [--macs-ratio 0.45] [--threads 1 2]
    python scripts/bench_prune.py recovery --data PATH/cifar10_jpeg.npz [--teacher-epochs 30] [--epochs 15]
                                  [--teacher-checkpoint T.pt] [--jobs 2] [--no-latency]
    python scripts/bench_prune.py latency --checkpoint RUN/0X-prune/model.pt   (the widths of a trained run)

latency:  prunes the architecture (random init: latency does not depend on the weights' values) to the MACs
          budget with channels rounded to 8 and times both fp32 ONNX exports in ONNX Runtime, batch 1,
          alternating the two models, p50 over many runs. CPU-only, minutes.
          --checkpoint: the pruned model of a recovery run instead (its widths; the weights are loaded).
recovery: trains the teacher with the `cifar10-resnet` recipe (or loads --teacher-checkpoint), then copies
          it as the student (student.from_teacher), prunes it to the budget and heals it for --epochs with KD
          (the unpruned teacher supervising) and, same run, with labels only; --jobs 2 runs the two side by
          side (given a teacher checkpoint). --no-latency skips the per-step ONNX Runtime timing (time the
          result on the CPU that matters with `latency --checkpoint`). Needs a GPU for real schedules."""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def latency(args) -> dict:
    import torch

    from edgedistill.exporters.onnx import export_onnx, weight_bytes
    from edgedistill.models import ModelSpec, build_model, count_macs_params
    from edgedistill import io
    from edgedistill.pruning import prune_to_macs, reshape_to, widths
    from edgedistill.runtimes import onnxruntime as ortr

    torch.manual_seed(0)
    spec = ModelSpec("image-classification", (3, 32, 32), 10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)
    base = build_model(args.arch, None, spec.input_shape, 10).eval()
    if args.checkpoint:  # a trained pruned model: rebuild its widths, load its weights
        pruned = copy.deepcopy(base)
        reshape_to(pruned, io.load_torch(args.checkpoint))
        pruned.load_state_dict(io.load_torch(args.checkpoint))
    else:
        pruned, ratio = prune_to_macs(base, spec, args.macs_ratio, round_to=8, global_pruning=args.scope == "global")
    pruned.eval()
    out = {"arch": args.arch, "macs_ratio_budget": args.macs_ratio, "round_to": 8, "scope": args.scope}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, model in (("unpruned", base), ("pruned", pruned)):
            paths[name] = Path(tmp) / f"{name}.onnx"
            export_onnx(model, spec, paths[name], 18)
            macs, params = count_macs_params(model, spec)
            out[name] = {"macs": macs, "params": params, "onnx_weight_bytes": weight_bytes(paths[name])}
        out["pruned"]["widths"] = widths(pruned)
        x = spec.example_input(1).numpy() + np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        for threads in args.threads:
            sessions = {k: ortr.session(p, threads) for k, p in paths.items()}
            runs = {k: [] for k in sessions}
            for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both alike
                for k, sess in sessions.items():
                    runs[k].append(ortr.latency_ms(sess, x, warmup=10, repeats=50)["p50"])
            p50 = {k: float(np.median(v)) for k, v in runs.items()}
            out[f"threads_{threads}"] = {"p50_ms": p50, "speedup": p50["unpruned"] / p50["pruned"]}
    print(f"{args.arch}: MACs {out['unpruned']['macs']:,} -> {out['pruned']['macs']:,} "
          f"({out['unpruned']['macs'] / out['pruned']['macs']:.2f}x fewer), params {out['unpruned']['params']:,} -> "
          f"{out['pruned']['params']:,}, ONNX weights {out['unpruned']['onnx_weight_bytes']:,} -> "
          f"{out['pruned']['onnx_weight_bytes']:,} B")
    for threads in args.threads:
        t = out[f"threads_{threads}"]
        print(f"  {threads} thread(s): p50 {t['p50_ms']['unpruned']:.3f} ms -> {t['p50_ms']['pruned']:.3f} ms, "
              f"speed-up {t['speedup']:.2f}x")
    return out


def _recover(recipe_overrides: list[str], out: Path) -> dict:
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    state = pipeline.run(load_recipe("cifar10-resnet", recipe_overrides), load_target("x86-avx2"), out, quiet=True)
    return state.records["prune"]


def recovery(args) -> dict:
    common = [f"data.path={args.data.resolve()}", f"teacher.arch={args.arch}", f"student.arch={args.arch}",
              "student.from_teacher=true", "stages.distill.enabled=false", f"stages.teacher.epochs={args.teacher_epochs}",
              f"stages.prune.macs_ratio={args.macs_ratio}", f"stages.prune.epochs={args.epochs}",
              "stages.prune.lr=0.02", f"stages.prune.scope={args.scope}", *[f"stages.{s}.enabled=false" for s in ("qat", "export", "bench", "report")]]
    if args.teacher_checkpoint:
        common.append(f"teacher.checkpoint={args.teacher_checkpoint.resolve()}")
    if args.no_latency:
        common.append("stages.prune.measure_latency=false")
    variants = {"kd": [], "ce": ["stages.prune.kd_weight=0.0", "stages.prune.ce_weight=1.0"]}
    # Without a teacher checkpoint both variants share one run directory, so the second reuses the first's
    # teacher (its stage fingerprint is the same); with one they run apart, side by side if --jobs allows.
    outs = {k: args.out / k if args.teacher_checkpoint else args.out for k in variants}
    jobs = args.jobs if args.teacher_checkpoint else 1
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {k: pool.submit(_recover, [*common, *extra], outs[k]) for k, extra in variants.items()}
        records = {k: f.result() for k, f in futures.items()}
    results = {}
    for name, r in records.items():
        results[name] = {"accuracy": r["accuracy"], "unpruned_accuracy": r["accuracy_before"],
                         "accuracy_before_recovery": r["accuracy_before_recovery"], "channels": r["channels"],
                         "macs": r["macs"], "macs_before": r["macs_before"], "speedup": r.get("speedup")}
        speed = f", measured speed-up {r['speedup']:.2f}x" if r.get("speedup") else ""
        print(f"{name} recovery: {r['accuracy_before']:.4f} unpruned -> {r['accuracy']:.4f} pruned "
              f"({r['macs_before'] / r['macs']:.2f}x fewer MACs{speed})", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "recovery"])
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--macs-ratio", type=float, default=0.45)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scope", choices=["global", "per_layer"], default="global")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--teacher-checkpoint", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="latency: a pruned model.pt from a recovery run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-prune"))
    args = ap.parse_args()
    result = latency(args) if args.mode == "latency" else recovery(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_prune_{args.mode}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
