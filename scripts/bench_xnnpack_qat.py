"""Benchmark: where the int8 .pte's integers come from, same student, same held-out split.

    python scripts/bench_xnnpack_qat.py [--recipe digits] [--seeds 0 1 2] [--out runs/bench-xnnpack-qat]

Per seed, two runs of the recipe (as a user runs them):
- on `pixel-8-executorch`: the qat stage trains with XNNPACK's quantizer under the teacher, and the int8 .pte is
  that model ("qat, xnnpack scheme");
- on `pixel-8` (ONNX Runtime) with `stages.export.formats=[onnx, ort, executorch]`: the qat stage trains in ONNX
  Runtime's scheme, and the int8 .pte is XNNPACK's post-training quantizer on those fine-tuned weights
  ("ptq of ort-qat weights").
From the first run's pruned fp32 student, XNNPACK's post-training quantizer calibrated on the same 512 training
inputs gives a third .pte ("ptq of the fp32 student"). Every .pte runs in ExecuTorch on the held-out split.
Writes OUT/results.json and prints a table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _bench import compress


def pte_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    from edgedistill.runtimes import executorch as etr

    logits = etr.outputs(path, x)
    return float((logits.argmax(-1) == y).mean()), logits


def ptq_of_fp32_student(run: Path, recipe, data, out: Path) -> Path:
    """XNNPACK's post-training int8 of the run's pruned fp32 student, calibrated like the export stage."""
    from edgedistill.exporters import executorch as etx
    from edgedistill.families import family_of

    stage = next(iter(sorted(run.glob("*-prune"))))
    student = family_of(recipe.student.arch).load(stage, data.spec, "cpu").module.eval()
    example = data.spec.example_input(1)
    quantized = etx.xnnpack_int8(student, example, data.x_train[:512].float())
    path = out / "student.ptq.int8.pte"
    etx.lower(quantized, example, etx._xnnpack(), path, "XNNPACK")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="digits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-xnnpack-qat"))
    args = ap.parse_args()

    from edgedistill.data import load_data
    from edgedistill.recipe import load_recipe

    rows = []
    for seed in args.seeds:
        base = args.out / f"seed{seed}"
        xnn, ort = base / "pixel-8-executorch", base / "pixel-8"
        compress(args.recipe, "pixel-8-executorch", xnn, [f"seed={seed}", "stages.bench.enabled=false"])
        compress(args.recipe, "pixel-8", ort, [f"seed={seed}", "stages.bench.enabled=false",
                                                "stages.export.formats=[onnx, ort, executorch]"])
        recipe = load_recipe(args.recipe, [f"seed={seed}"])
        data = load_data(recipe.data, recipe.seed)
        x, y = data.x_test.numpy(), data.y_test.numpy()
        files = {"fp32": xnn / "07-export/student.fp32.pte",
                 "int8, ptq of the fp32 student": ptq_of_fp32_student(xnn, recipe, data, base),
                 "int8, ptq of ort-qat weights": ort / "07-export/student.int8.pte",
                 "int8, qat in xnnpack's scheme": xnn / "07-export/student.int8.pte"}
        fp32_acc, fp32_logits = pte_accuracy(files["fp32"], x, y)
        for name, path in files.items():
            acc, logits = pte_accuracy(path, x, y)
            rows.append({"seed": seed, "pte": name, "accuracy": acc, "size_bytes": path.stat().st_size,
                         "top1_agreement_with_fp32": float((logits.argmax(-1) == fp32_logits.argmax(-1)).mean())})
            print(f"seed {seed}  {name:<32} accuracy {acc:.4f}  agrees with fp32 "
                  f"{rows[-1]['top1_agreement_with_fp32']:.4f}  {path.stat().st_size:,} B", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\nmean over seeds:")
    for name in dict.fromkeys(r["pte"] for r in rows):
        accs = [r["accuracy"] for r in rows if r["pte"] == name]
        print(f"  {name:<32} {100 * np.mean(accs):.2f} +- {100 * np.std(accs):.2f}")


if __name__ == "__main__":
    main()
