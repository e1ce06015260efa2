"""Benchmark: the default recipe (digits -> pixel-8) over several seeds, end to end through the CLI.

    .venv/bin/python scripts/bench_default.py --seeds 0 1 2 [--target pixel-8] [--out runs/bench-default]

Prints a table and writes OUT/bench_default.json: teacher vs int8 student accuracy (held-out), ONNX sizes,
host latency (ONNX Runtime, batch 1, threads from the target), per seed and mean +- std."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target", default="pixel-8")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-default"))
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        cmd = [sys.executable, "-m", "edgedistill", "compress", "--recipe", "digits", "--target", args.target,
               "--out", str(out), "--set", f"seed={seed}", "--force", "--quiet"]
        subprocess.run(cmd, check=True)
        report = json.loads((out / "report.json").read_text())
        art = {(a["role"], a["kind"]): a for a in report["artifacts"]}
        stage = {s["name"]: s for s in report["stages"]}
        teacher, fp32, int8 = art["teacher", "onnx-fp32"], art["student", "onnx-fp32"], art["student", "onnx-int8"]
        rows.append({
            "seed": seed,
            "teacher_acc": teacher["accuracy"], "student_fp32_acc": fp32["accuracy"], "student_int8_acc": int8["accuracy"],
            "int8_minus_teacher_points": 100 * (int8["accuracy"] - teacher["accuracy"]),
            "teacher_bytes": teacher["size_bytes"], "int8_bytes": int8["size_bytes"],
            "size_ratio": teacher["size_bytes"] / int8["size_bytes"],
            "teacher_params": stage["teacher"]["params"], "student_params": stage["prune"]["params"],
            "macs_teacher": stage["teacher"]["macs"], "macs_student": stage["prune"]["macs"],
            "p50_teacher_ms": teacher["latency_ms"]["p50"], "p50_fp32_ms": fp32["latency_ms"]["p50"],
            "p50_int8_ms": int8["latency_ms"]["p50"], "threads": int8["latency_ms"]["threads"],
            "integer_kernels": int8["integer_kernels"], "wall_s": sum(s.get("wall_s", 0) for s in report["stages"]),
        })
    keys = ["teacher_acc", "student_fp32_acc", "student_int8_acc", "int8_minus_teacher_points", "size_ratio",
            "p50_teacher_ms", "p50_fp32_ms", "p50_int8_ms"]
    summary = {k: (statistics.mean(r[k] for r in rows), statistics.pstdev(r[k] for r in rows)) for k in keys}
    print(f"{'seed':>4} " + " ".join(f"{k:>26}" for k in keys))
    for r in rows:
        print(f"{r['seed']:>4} " + " ".join(f"{r[k]:>26.4f}" for k in keys))
    print(f"{'mean':>4} " + " ".join(f"{m:>17.4f} +- {s:6.4f}" for m, s in summary.values()))
    (args.out / "bench_default.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
