"""Benchmark: does distillation help? The student alone vs distilled, same run, same teacher, several seeds.

    python scripts/bench_kd.py mnist --data PATH/mnist.npz [--seeds 0] [--teacher-epochs 60] [--epochs 60]
    python scripts/bench_kd.py cifar --data PATH/cifar10_jpeg.npz --seeds 0 1 2 [--teacher-epochs 30] [--epochs 30]

mnist: Hinton et al. (2015) section 3 with the built-in `mnist-hinton` recipe: 1200-1200 teacher (dropout,
       2-pixel jitter), 800-800 student alone vs distilled at T=20. Reports test errors out of 10,000.
cifar: the built-in `cifar10-resnet` recipe: ResNet-56 teacher, ResNet-20 alone vs logit KD vs logit KD +
       FitNets (layer3). Reports held-out accuracy, mean +- std over seeds.
The teacher is trained once (recipe settings, --teacher-epochs) and loaded by every student run. Each run
goes through edgedistill's pipeline (prune/qat/export/bench stages off). Prints a table, writes JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edgedistill import pipeline
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

AFTER_DISTILL_OFF = [f"stages.{s}.enabled=false" for s in ("prune", "qat", "export", "bench", "report")]
VARIANTS = {
    "mnist": {
        "alone": ["stages.distill.kd_weight=0.0", "stages.distill.ce_weight=1.0"],
        "distilled T=20": [],
    },
    "cifar": {
        "alone": ["stages.distill.kd_weight=0.0", "stages.distill.ce_weight=1.0"],
        "logit KD": [],
        "logit KD + FitNets": ["stages.distill.features=[{student: layer3, teacher: layer3, kind: fitnet, weight: 1.0}]"],
    },
}
RECIPES = {"mnist": "mnist-hinton", "cifar": "cifar10-resnet"}


def run(recipe: str, overrides: list[str], out: Path) -> dict:
    state = pipeline.run(load_recipe(recipe, overrides), load_target("x86-avx2"), out, quiet=True)
    return state.records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--teacher-epochs", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-kd"))
    args = ap.parse_args()
    recipe = RECIPES[args.task]
    base = [f"data.path={args.data.resolve()}"]
    if args.epochs:
        base.append(f"stages.distill.epochs={args.epochs}")
    t0 = time.perf_counter()
    teacher_over = [*base, "stages.distill.enabled=false", *AFTER_DISTILL_OFF]
    if args.teacher_epochs:
        teacher_over.append(f"stages.teacher.epochs={args.teacher_epochs}")
    teacher_records = run(recipe, teacher_over, args.out / args.task / "teacher")
    teacher_acc = teacher_records["teacher"]["accuracy"]
    checkpoint = args.out / args.task / "teacher" / "01-teacher" / "model.pt"
    print(f"teacher: held-out accuracy {teacher_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for seed in args.seeds:
        for name, extra in VARIANTS[args.task].items():
            t1 = time.perf_counter()
            over = [*base, f"teacher.checkpoint={checkpoint.resolve()}", f"seed={seed}", *extra, *AFTER_DISTILL_OFF]
            records = run(recipe, over, args.out / args.task / f"{name.replace(' ', '_').replace('=', '')}-seed{seed}")
            acc = records["distill"]["accuracy"]
            rows.append({"variant": name, "seed": seed, "accuracy": acc, "seconds": time.perf_counter() - t1,
                         "samples_per_s": records["distill"]["history"][-1]["samples_per_s"]})
            print(f"  seed {seed} {name:<22} accuracy {acc:.4f}  ({rows[-1]['seconds']:.0f} s)", flush=True)
    with np.load(args.data, allow_pickle=False) as z:
        n_test = len(z["y_test"])
    summary = {}
    for name in VARIANTS[args.task]:
        accs = [r["accuracy"] for r in rows if r["variant"] == name]
        summary[name] = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "n": len(accs)}
    print(f"\n{'model':<24} {'accuracy (mean +- std)':>24} {'test errors':>12}")
    print(f"{'teacher':<24} {teacher_acc:>24.4f} {round((1 - teacher_acc) * n_test):>12}")
    for name, s in summary.items():
        s["test_errors"] = (1 - s["mean"]) * n_test
        print(f"{name:<24} {s['mean']:>15.4f} +- {s['std']:.4f} {s['test_errors']:>12.1f}")
    result = {"task": args.task, "recipe": recipe, "teacher_accuracy": teacher_acc, "test_examples": n_test, "rows": rows, "summary": summary,
              "teacher_epochs": args.teacher_epochs, "epochs": args.epochs, "wall_s": time.perf_counter() - t0}
    (args.out / f"bench_kd_{args.task}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
