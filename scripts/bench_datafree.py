"""Benchmark: data-free distillation against data-based KD, same teacher, same student, same run.

    python scripts/bench_datafree.py mnist --data PATH/mnist.npz [--teacher-epochs 3] [--kd-epochs 3]
                                     [--df-epochs 20] [--iterations 50] [--width 64] [--out runs/bench-df-mnist]
    python scripts/bench_datafree.py cifar --data PATH/cifar10_jpeg.npz --teacher-checkpoint T.pt [...]
    python scripts/bench_datafree.py digits --full      (the built-in default data, every stage)

mnist: the built-in `mnist-datafree` recipe (CNN 32-64-128 teacher -> 16-32-64 student); cifar: `cifar10-datafree`
(ResNet-56 -> ResNet-20); digits: the default recipe's CNNs on scikit-learn's digits. The teacher is trained once on the training split (or given) and loaded by both runs;
its input statistics are the training split's, as when it was trained. Data-based KD: `stages.distill` with the
training split (and the recipe's augmentation); data-free: the same stage with `data_free` on, which never
reads the training split. Stages after distill are off; with --full they run too (pruning, QAT and int8
calibration on the transfer set in the data-free run) and the int8 ONNX student's accuracy is reported. Prints a table, writes results.json under --out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgedistill import pipeline
from edgedistill.data import load_data
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

RECIPES = {"mnist": "mnist-datafree", "cifar": "cifar10-datafree", "digits": "digits"}
AFTER_DISTILL_OFF = [f"stages.{s}.enabled=false" for s in ("prune", "qat", "export", "bench", "report")]


def _run(recipe: str, sets: list[str], out: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    state = pipeline.run(load_recipe(recipe, sets), load_target("x86-avx2"), out, quiet=True)
    return state.records, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("--data", type=Path, help="the npz (mnist, cifar)")
    ap.add_argument("--teacher-checkpoint", type=Path)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--kd-epochs", type=int, default=3)
    ap.add_argument("--df-epochs", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=50, help="data-free rounds per epoch")
    ap.add_argument("--batch-size", type=int, default=256, help="data-free generated images per step")
    ap.add_argument("--width", type=int, default=128, help="generator channels")
    ap.add_argument("--set", action="append", default=[], help="extra --set for both runs")
    ap.add_argument("--full", action="store_true", help="run the stages after distill too")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    recipe = RECIPES[args.task]
    out = (args.out or Path(f"runs/bench-df-{args.task}")).resolve()
    base = [*([f"data.path={args.data.resolve()}"] if args.data else []), *args.set]
    after = [] if args.full else AFTER_DISTILL_OFF
    # The teacher's normalization: the training split's statistics, computed as a data-based run computes them.
    spec = load_data(load_recipe(recipe, [*base, "data.normalization=null",
                                          "stages.distill.data_free.enabled=false"]).data, 0).spec
    base.append(f"data.normalization={{mean: {list(spec.mean)}, std: {list(spec.std)}}}")
    rows: dict[str, dict] = {}
    teacher = args.teacher_checkpoint
    if teacher is None:
        only = [*base, "stages.distill.data_free.enabled=false", f"stages.teacher.epochs={args.teacher_epochs}",
                "stages.distill.enabled=false", *AFTER_DISTILL_OFF]
        records, seconds = _run(recipe, only, out / "teacher")
        teacher = out / "teacher" / "01-teacher" / "model.pt"
        rows["teacher"] = {"accuracy": records["teacher"]["accuracy"], "seconds": seconds}
    base.append(f"teacher.checkpoint={Path(teacher).resolve()}")
    runs = {
        "data-based KD": ["stages.distill.data_free.enabled=false", f"stages.distill.epochs={args.kd_epochs}"],
        "data-free": ["stages.distill.data_free.enabled=true", f"stages.distill.epochs={args.df_epochs}", f"stages.distill.data_free.iterations={args.iterations}",
                      f"stages.distill.data_free.batch_size={args.batch_size}", f"stages.distill.data_free.width={args.width}"],
    }
    for name, sets in runs.items():
        records, seconds = _run(recipe, [*base, *sets, *after], out / name.replace(" ", "-"))
        rows.setdefault("teacher", {"accuracy": records["teacher"]["accuracy"], "seconds": 0.0})
        d = records["distill"]
        rows[name] = {"accuracy": d["accuracy"], "agreement_with_teacher": d["agreement_with_teacher"],
                      "seconds": seconds, "history": [h["test_accuracy"] for h in d["history"]],
                      **({"transfer_set": d["transfer_set"]} if "transfer_set" in d else {})}
        if args.full:
            int8 = next(a for a in records["export"]["artifacts"] if a["kind"] == "onnx-int8")
            rows[name]["int8_onnx_accuracy"] = next(b["accuracy"] for b in records["bench"]["artifacts"]
                                                    if b["path"] == int8["path"])
            rows[name]["pruned_macs_kept"] = records["prune"]["macs_kept"]
        print(f"{name:14s} accuracy {d['accuracy']:.4f}  agreement {d['agreement_with_teacher']:.4f}  {seconds:.0f}s",
              flush=True)
    rows["gap_points"] = 100 * (rows["data-based KD"]["accuracy"] - rows["data-free"]["accuracy"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"task": args.task, "args": {k: str(v) for k, v in vars(args).items()},
                                                  "rows": rows}, indent=1))
    print(f"| teacher | {100 * rows['teacher']['accuracy']:.2f} |")
    for name in runs:
        int8 = f" int8 ONNX {100 * rows[name]['int8_onnx_accuracy']:.2f} |" if args.full else ""
        print(f"| {name} | {100 * rows[name]['accuracy']:.2f} |{int8} {rows[name]['seconds']:.0f} s |")
    print(f"gap: {rows['gap_points']:.2f} points")


if __name__ == "__main__":
    main()
