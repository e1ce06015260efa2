"""Benchmark: structured pruning of a CIFAR ResNet, KD recovery vs plain cross-entropy recovery, and the
measured ONNX Runtime speed-up at batch 1.

    python scripts/bench_prune.py latency [--arch resnet56] [--macs-ratio 0.45] [--threads 1 2] [--target T]
                                  [--structure channels|blocks]
    python scripts/bench_prune.py recovery --data PATH/cifar10_jpeg.npz [--teacher-epochs 30] [--epochs 15]
                                  [--teacher-checkpoint T.pt] [--jobs 2] [--no-latency] [--variants kd ce]
    python scripts/bench_prune.py latency --checkpoint RUN/0X-prune/model.pt   (the widths of a trained run)
    python scripts/bench_prune.py widths [--stage-widths 16,32,64 8,32,64 ...] [--threads 1 2]

latency:  prunes the architecture (random init: latency does not depend on the weights' values) to the MACs
          budget with channels rounded to the target's multiple and times both fp32 ONNX exports in ONNX Runtime, batch 1,
          alternating the two models, p50 over many runs. CPU-only, minutes.
          --checkpoint: the pruned model of a recovery run instead (its widths; the weights are loaded).
widths:   CIFAR ResNets with hand-set widths per stage (the first is the baseline), timed the same way: which
          cuts this CPU turns into time.
recovery: trains the teacher with the `cifar10-resnet` recipe (or loads --teacher-checkpoint), then copies
          it as the student (student.from_teacher), prunes it to the budget and heals it for --epochs with KD
          (the unpruned teacher supervising) and, same run, with labels only; --jobs 2 runs the two side by
          side (given a teacher checkpoint). --no-latency skips the per-step ONNX Runtime timing (time the
          result on the CPU that matters with `latency --checkpoint`). Needs a GPU for real schedules.
--target: the profile whose channel multiple rounds the widths. Pick the one matching the CPU that times
          the result: ONNX Runtime runs convolutions in blocks of 16 channels on AVX-512 and 8 on AVX2, so
          widths rounded to 8 are padded back to 16 on an AVX-512 machine and buy no time there."""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


SPEC_ARGS = ("image-classification", (3, 32, 32), 10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)


def _time(models: dict, spec, args) -> dict:
    """MACs, params and ONNX weight bytes of each model, and the p50 of its fp32 ONNX export in ONNX Runtime at
    batch 1 per thread count; the models are timed in turn, round after round, so drift on a shared machine
    hits them alike."""
    from edgedistill.exporters.onnx import export_onnx, weight_bytes
    from edgedistill.models import count_macs_params
    from edgedistill.runtimes import onnxruntime as ortr

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, model in models.items():
            paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            export_onnx(model.eval(), spec, paths[name], 18)
            macs, params = count_macs_params(model, spec)
            out[name] = {"macs": macs, "params": params, "onnx_weight_bytes": weight_bytes(paths[name]), "p50_ms": {}}
        x = spec.example_input(1).numpy() + np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        for threads in args.threads:
            sessions = {k: ortr.session(p, threads) for k, p in paths.items()}
            runs = {k: [] for k in sessions}
            for _ in range(args.rounds):
                for k, sess in sessions.items():
                    runs[k].append(ortr.latency_ms(sess, x, warmup=10, repeats=50)["p50"])
            for k, v in runs.items():
                out[k]["p50_ms"][threads] = float(np.median(v))
    return out


def latency(args) -> dict:
    import torch

    from edgedistill import io
    from edgedistill.depth_pruning import prune_blocks
    from edgedistill.models import ModelSpec, build_model, count_macs_params
    from edgedistill.pruning import prune_to_budget, reshape_to, widths
    from edgedistill.targets import load_target

    round_to = load_target(args.target).channel_multiple
    torch.manual_seed(0)
    spec = ModelSpec(*SPEC_ARGS)
    base = build_model(args.arch, None, spec.input_shape, 10).eval()
    if args.checkpoint:  # a trained pruned model: rebuild its widths, load its weights
        pruned = reshape_to(copy.deepcopy(base), io.load_torch(args.checkpoint))  # loads the weights too
    else:
        pruned, base_macs = base, count_macs_params(base, spec)[0]
        for i in range(1, args.steps + 1):  # the prune stage's schedule: budget ratio ** (i / steps) of the base
            budget = base_macs * args.macs_ratio ** (i / args.steps)
            if args.structure == "blocks":  # random weights rank blocks arbitrarily: only the depth is timed
                pruned = prune_blocks(pruned, spec, max_macs=budget, calibration=(torch.randn(8, 3, 32, 32),))
            else:
                pruned, _ = prune_to_budget(pruned, spec, max_macs=budget, round_to=round_to,
                                            global_pruning=args.scope == "global")
    how = ({"checkpoint": str(args.checkpoint)} if args.checkpoint else  # else: what pruned the architecture
           {"macs_ratio_budget": args.macs_ratio, "structure": args.structure, "round_to": round_to, "scope": args.scope,
            "steps": args.steps, "target": args.target})
    out = {"arch": args.arch, **how, **_time({"unpruned": base, "pruned": pruned}, spec, args)}
    out["pruned"]["widths"] = widths(pruned)
    print(f"{args.arch}: MACs {out['unpruned']['macs']:,} -> {out['pruned']['macs']:,} "
          f"({out['unpruned']['macs'] / out['pruned']['macs']:.2f}x fewer), params {out['unpruned']['params']:,} -> "
          f"{out['pruned']['params']:,}, ONNX weights {out['unpruned']['onnx_weight_bytes']:,} -> "
          f"{out['pruned']['onnx_weight_bytes']:,} B")
    for threads in args.threads:
        before, after = out["unpruned"]["p50_ms"][threads], out["pruned"]["p50_ms"][threads]
        print(f"  {threads} thread(s): p50 {before:.3f} ms -> {after:.3f} ms, speed-up {before / after:.2f}x")
    return out


def stage_widths(args) -> dict:
    """CIFAR ResNets of the arch's depth with hand-set stage widths, the first the baseline: which widths
    ONNX Runtime on this CPU turns into time saved."""
    from edgedistill.models import ModelSpec
    from edgedistill.models.cifar import ResNet

    depth = int(args.arch.removeprefix("resnet"))
    configs = {w: ResNet(depth, [int(w.split(",")[0]), *map(int, w.split(","))]) for w in args.stage_widths}
    out = _time(configs, ModelSpec(*SPEC_ARGS), args)
    base = out[args.stage_widths[0]]
    for w, r in out.items():
        print(f"{args.arch} widths {w}: MACs {r['macs']:,} ({base['macs'] / r['macs']:.2f}x fewer), "
              + ", ".join(f"{t} thread(s) p50 {r['p50_ms'][t]:.3f} ms ({base['p50_ms'][t] / r['p50_ms'][t]:.2f}x)"
                          for t in args.threads))
    return out


def _recover(recipe_overrides: list[str], target: str, out: Path) -> dict:
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    state = pipeline.run(load_recipe("cifar10-resnet", recipe_overrides), load_target(target), out, quiet=True)
    return state.records["prune"]


def recovery(args) -> dict:
    common = [f"data.path={args.data.resolve()}", f"teacher.arch={args.arch}", f"student.arch={args.arch}",
              "student.from_teacher=true", "stages.distill.enabled=false", f"stages.teacher.epochs={args.teacher_epochs}",
              f"stages.prune.macs_ratio={args.macs_ratio}", f"stages.prune.epochs={args.epochs}",
              "stages.prune.lr=0.02", f"stages.prune.scope={args.scope}", f"stages.prune.structure={args.structure}", f"stages.prune.steps={args.steps}", "stages.prune.step_epochs=0", *[f"stages.{s}.enabled=false" for s in ("qat", "export", "bench", "report")]]
    if args.teacher_checkpoint:
        common.append(f"teacher.checkpoint={args.teacher_checkpoint.resolve()}")
    if args.no_latency:
        common.append("stages.prune.measure_latency=false")
    variants = {k: v for k, v in {"kd": [], "ce": ["stages.prune.kd_weight=0.0", "stages.prune.ce_weight=1.0"]}.items()
                if k in args.variants}
    # Without a teacher checkpoint both variants share one run directory, so the second reuses the first's
    # teacher (its stage fingerprint is the same); with one they run apart, side by side if --jobs allows.
    outs = {k: args.out / k if args.teacher_checkpoint else args.out for k in variants}
    jobs = args.jobs if args.teacher_checkpoint else 1
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {k: pool.submit(_recover, [*common, *extra], args.target, outs[k]) for k, extra in variants.items()}
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
    ap.add_argument("mode", choices=["latency", "widths", "recovery"])
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--macs-ratio", type=float, default=0.45)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scope", choices=["global", "per_layer"], default="global")
    ap.add_argument("--structure", choices=["channels", "blocks"], default="channels",
                    help="prune widths, or whole residual blocks (depth)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=1, help="prune in this many steps (the prune stage's schedule)")
    ap.add_argument("--target", default="x86-avx2", help="its channel_multiple rounds the widths")
    ap.add_argument("--variants", nargs="+", choices=["kd", "ce"], default=["kd", "ce"])
    ap.add_argument("--stage-widths", nargs="+", default=["16,32,64", "8,32,64", "16,16,64", "16,32,32", "8,16,32",
                                                          "16,16,32"], help="widths: per-stage widths, baseline first")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--teacher-checkpoint", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="latency: a pruned model.pt from a recovery run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-prune"))
    args = ap.parse_args()
    result = {"latency": latency, "widths": stage_widths, "recovery": recovery}[args.mode](args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_prune_{args.mode}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
