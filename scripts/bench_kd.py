"""Benchmark: does distillation help? The student alone vs distilled, same run, same teacher, several seeds.

    python scripts/bench_kd.py mnist --data PATH/mnist.npz [--seeds 0] [--teacher-epochs 60] [--epochs 60]
    python scripts/bench_kd.py cifar --data PATH/cifar10_jpeg.npz --seeds 0 1 2 [--teacher-epochs 30] [--epochs 30]
                               [--jobs 9] [--teacher-checkpoint T.pt]
    python scripts/bench_kd.py photos --data PATH/cifar10_jpeg.npz --seeds 0 1 2 --jobs 2

mnist: Hinton et al. (2015) section 3 with the built-in `mnist-hinton` recipe: 1200-1200 teacher (dropout,
       shifts, rotation, zoom and elastic distortion), 800-800 student alone vs distilled at T=20 on the plain
       images (the paper's rows), and both again on the teacher's warped images. Reports test errors of 10,000.
cifar: the built-in `cifar10-resnet` recipe: ResNet-56 teacher, ResNet-20 alone vs logit KD vs logit KD +
       FitNets (layer3). Reports held-out accuracy, mean +- std over seeds.
photos: the built-in `photos` recipe on the CIFAR-10 JPEG copy at 96 px: timm ResNet-50 teacher, timm
       MobileNetV3-Small alone vs logit KD (a GPU run: python scripts/bench_kd.py photos --data PATH --jobs 2).
The teacher is trained once (recipe settings, --teacher-epochs; or given with --teacher-checkpoint) and loaded
by every student run. Each run goes through edgedistill's pipeline (prune/qat/export/bench stages off).
--jobs N runs up to N student runs at once, each in its own process: one GPU trains several small models
faster side by side than one after the other. Prints a table, writes JSON (rewritten as runs finish)."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from edgedistill import pipeline
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

AFTER_DISTILL_OFF = [f"stages.{s}.enabled=false" for s in ("prune", "qat", "export", "bench", "report")]
ALONE = ["stages.distill.kd_weight=0.0", "stages.distill.ce_weight=1.0"]
TEACHER_AUGMENT = "stages.distill.augment=<the teacher's>"  # filled in from the recipe
VARIANTS = {
    "mnist": {  # the paper's two rows, then both again on the teacher's warped images (a control, and KD on them)
        "alone": ALONE,
        "distilled T=20": [],
        "alone, warped inputs": [*ALONE, TEACHER_AUGMENT],
        "distilled T=20, warped transfer": [TEACHER_AUGMENT],
    },
    "cifar": {
        "alone": ALONE,
        "logit KD": [],
        "logit KD + FitNets": ["stages.distill.features=[{student: layer3, teacher: layer3, kind: fitnet, weight: 1.0}]"],
    },
    "photos": {"alone": ALONE, "logit KD": []},
}
RECIPES = {"mnist": "mnist-hinton", "cifar": "cifar10-resnet", "photos": "photos"}
# photos: the CIFAR-10 JPEG copy read as photos by a timm ResNet-50 teacher's preprocessing at 96 px, a timm
# MobileNetV3-Small student
TASK_DATA = {"photos": ["data.dataset=npz", "data.image_size=96", 'student.arch="timm:mobilenetv3_small_100"']}


def run(recipe: str, overrides: list[str], out: Path) -> dict:
    state = pipeline.run(load_recipe(recipe, overrides), load_target("x86-avx2"), out, quiet=True)
    return state.records


def summarize(args, recipe, teacher_acc, rows, t0) -> dict:
    with np.load(args.data, allow_pickle=False) as z:
        n_test = len(z["y_test"])
    summary = {}
    for name in VARIANTS[args.task]:
        accs = [r["accuracy"] for r in rows if r["variant"] == name]
        if accs:
            summary[name] = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "n": len(accs),
                             "test_errors": (1 - statistics.mean(accs)) * n_test}
    result = {"task": args.task, "recipe": recipe, "teacher_accuracy": teacher_acc, "test_examples": n_test,
              "rows": rows, "summary": summary, "teacher_epochs": args.teacher_epochs, "epochs": args.epochs,
              "jobs": args.jobs, "wall_s": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench_kd_{args.task}.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--teacher-epochs", type=int, default=None)
    ap.add_argument("--teacher-checkpoint", type=Path, default=None, help="skip training the teacher")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--variants", nargs="+", default=None, help="a subset of the task's variants")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-kd"))
    args = ap.parse_args()
    recipe = RECIPES[args.task]
    base = [*TASK_DATA.get(args.task, []), f"data.path={args.data.resolve()}"]
    loaded = load_recipe(recipe, base)
    augment = json.dumps((loaded.stages.teacher.augment or loaded.data.augment).model_dump())
    variants = {k: [f"stages.distill.augment={augment}" if o == TEACHER_AUGMENT else o for o in v]
                for k, v in VARIANTS[args.task].items() if args.variants is None or k in args.variants}
    if args.epochs:
        base.append(f"stages.distill.epochs={args.epochs}")
    t0 = time.perf_counter()
    teacher_over = [*base, "stages.distill.enabled=false", *AFTER_DISTILL_OFF]
    if args.teacher_epochs:
        teacher_over.append(f"stages.teacher.epochs={args.teacher_epochs}")
    checkpoint = args.teacher_checkpoint or args.out / args.task / "teacher" / "01-teacher" / "model.pt"

    def student_run(seed, name, extra):
        over = [*base, f"teacher.checkpoint={checkpoint.resolve()}", f"seed={seed}", *extra, *AFTER_DISTILL_OFF]
        slug = name.replace(" ", "_").replace("=", "").replace(",", "")
        return recipe, over, args.out / args.task / f"{slug}-seed{seed}"

    rows, teacher_acc = [], None  # None: given as a checkpoint, not measured here
    teacher_ready = args.teacher_checkpoint is not None
    pending = [(seed, name, extra) for seed in args.seeds for name, extra in variants.items()]
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        running = {}
        if not teacher_ready:
            running[pool.submit(run, recipe, teacher_over, args.out / args.task / "teacher")] = ("teacher", None, None)
        while running or pending:
            if teacher_ready:  # every student loads the teacher checkpoint
                while pending and len(running) < args.jobs:
                    seed, name, extra = pending.pop(0)
                    running[pool.submit(run, *student_run(seed, name, extra))] = ("student", seed, name)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, seed, name = running.pop(fut)
                try:
                    records = fut.result()
                except Exception as e:  # one failed run must not lose the others' figures
                    print(f"  {kind} {name or ''} seed {seed} failed: {type(e).__name__}: {e}", flush=True)
                    if kind == "teacher":
                        raise
                    continue
                if kind == "teacher":
                    teacher_acc, teacher_ready = records["teacher"]["accuracy"], True
                    print(f"teacher: held-out accuracy {teacher_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
                    continue
                d = records["distill"]
                rows.append({"variant": name, "seed": seed, "accuracy": d["accuracy"], "seconds": d.get("wall_s"),
                             "samples_per_s": d["history"][-1]["samples_per_s"]})
                print(f"  seed {seed} {name:<34} accuracy {d['accuracy']:.4f}  ({d.get('wall_s', 0):.0f} s, "
                      f"{time.perf_counter() - t0:.0f} s in)", flush=True)
                summarize(args, recipe, teacher_acc, rows, t0)
    result = summarize(args, recipe, teacher_acc, rows, t0)
    print(f"\n{'model':<36} {'accuracy (mean +- std)':>24} {'test errors':>12}")
    if teacher_acc is not None:
        print(f"{'teacher':<36} {teacher_acc:>24.4f} {round((1 - teacher_acc) * result['test_examples']):>12}")
    for name, s in result["summary"].items():
        print(f"{name:<36} {s['mean']:>15.4f} +- {s['std']:.4f} {s['test_errors']:>12.1f}")


if __name__ == "__main__":
    main()
