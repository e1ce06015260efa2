"""Benchmark: precision chosen by measured latency, on a pruned student: all-fp32 vs all-int8 vs the plan.

    python scripts/bench_precision.py [--recipe cifar10-resnet] [--target x86-avx512-vnni] [--set KEY=VALUE ...]
                                      [--threads 1] [--rounds 7] [--out runs/bench-precision]

Runs the recipe twice in one run directory (the stages up to prune run once): with the precision stage off,
so QAT and export quantize every block (the habit), then with it on, so QAT trains the chosen plan and export
writes it. The fp32 student, the all-int8 student and the plan's file are evaluated on the held-out split and
timed with ONNX Runtime at batch 1, alternating the three round by round. Writes OUT/bench_precision.json and
prints a table with the plan's measured candidates."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from _bench import compress


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="cifar10-resnet")
    ap.add_argument("--target", default="x86-avx512-vnni")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-precision"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=None, help="default: the target's, as the plan was timed")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    run = args.out / "run"
    args.out.mkdir(parents=True, exist_ok=True)
    base = ["stages.qat.enabled=true", "stages.export.formats=[onnx]", "stages.bench.enabled=false", *args.sets]
    compress(args.recipe, args.target, run, [*base, "stages.precision.enabled=false"])
    shutil.copyfile(run / "07-export" / "student.int8.onnx", args.out / "student.all-int8.onnx")
    compress(args.recipe, args.target, run, [*base, "stages.precision.enabled=true"])

    from edgedistill.data import load_data
    from edgedistill.recipe import load_recipe
    from edgedistill.runtimes import onnxruntime as ortr
    from edgedistill.targets import load_target

    recipe = load_recipe(args.recipe, base)
    data = load_data(recipe.data, recipe.seed)
    x, y = data.x_test.numpy(), data.y_test.numpy()
    plan = json.loads((run / "05-precision" / "plan.json").read_text())
    models = {"all fp32": run / "07-export" / "student.fp32.onnx", "all int8 (QAT)": args.out / "student.all-int8.onnx",
              "plan (QAT)": run / "07-export" / "student.int8.onnx"}
    if not plan["int8"]:  # the plan is all fp32: its artifact is the fp32 file
        models["plan (QAT)"] = models["all fp32"]
    threads = args.threads or ortr.host_threads(load_target(args.target).threads)
    sessions = {k: ortr.session(p, threads) for k, p in models.items()}
    rows = {k: {"accuracy": float((ortr.logits(s, x).argmax(-1) == y).mean()), "bytes": p.stat().st_size, "p50": []}
            for (k, s), p in zip(sessions.items(), models.values())}
    for _ in range(args.rounds):
        for k, s in sessions.items():
            rows[k]["p50"].append(ortr.latency_ms(s, x[:1], warmup=20, repeats=200)["p50"])
    for r in rows.values():
        r["p50_ms"] = float(np.median(r.pop("p50")))
    widths = json.loads((run / "04-prune" / "result.json").read_text()).get("channels")
    print(f"student widths {widths}; plan: int8 {plan['int8'] or '-'}, fp32 {plan['fp32'] or '-'} ({plan['verdict']})")
    print(f"{'candidate (int8 blocks)':<40} {'p50 ms':>8} {'accuracy':>9} {'agreement':>10}")
    for c in sorted(plan["candidates"], key=lambda c: c["p50_ms"]):
        print(f"{', '.join(c['int8']) or 'all fp32':<40} {c['p50_ms']:>8.3f} {100 * c['accuracy']:>8.2f}% "
              f"{100 * c['agreement']:>9.2f}%")
    print(f"\n{'model':<16} {'accuracy':>9} {'KB':>8} {'p50 ms':>8}")
    for k, r in rows.items():
        print(f"{k:<16} {100 * r['accuracy']:>8.2f}% {r['bytes'] / 1e3:>8.1f} {r['p50_ms']:>8.3f}")
    (args.out / "bench_precision.json").write_text(json.dumps(
        {"recipe": args.recipe, "target": args.target, "sets": args.sets, "threads": threads,
         "widths": widths, "plan": plan, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
