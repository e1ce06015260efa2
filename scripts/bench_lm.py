"""Benchmark: sequence-level distillation of a causal language model, its KV-cache ONNX and speculative decoding.

    python scripts/make_lm_teacher.py --out runs/lm-teacher --layers 4 --width 256 --heads 4 --epochs 1
    python scripts/bench_lm.py --teacher-dir runs/lm-teacher --data PATH/sst2.npz [--limit-train 20000]
                               [--epochs 3] [--layers 2] [--out runs/bench-lm]

Runs the built-in `lm-seqkd` recipe on the same teacher and data three ways: the student learning the teacher's
greedy continuations with cross-entropy only (Kim & Rush's sequence-level KD), with the word-level term from
the teacher's cached top-32 logits added, and with it from the live teacher (full distributions). Reports held-out perplexity and next-token accuracy, the share of
greedy tokens decoded as the teacher does, ms per generated token of the ONNX files (KV cache, batch 1) and the
student as the teacher's draft in speculative decoding. Prints a table, writes results.json under --out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgedistill import pipeline
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

VARIANTS = {  # name: (run directory, --set)
    "seq-KD (CE on teacher sequences)": ("ce", ["stages.distill.kd_weight=0.0"]),
    "seq-KD + word-level top-32": ("ce-topk", ["stages.distill.sequence.logits_topk=32"]),
    "seq-KD + word-level (live teacher)": ("ce-live", []),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-dir", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--limit-train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--target", default="x86-avx2")
    ap.add_argument("--set", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-lm"))
    args = ap.parse_args()
    base = [f"teacher.path={args.teacher_dir.resolve()}", f"data.train={args.data.resolve()}",
            f"data.limit_train={args.limit_train}", f"stages.distill.epochs={args.epochs}",
            f"student.layers={args.layers}", *args.set]
    rows = {}
    for name, (folder, sets) in VARIANTS.items():
        out = args.out.resolve() / folder
        state = pipeline.run(load_recipe("lm-seqkd", [*base, *sets]), load_target(args.target), out, quiet=True)
        r = state.records
        lat = {f"{a['role']} {a['kind']}": b["latency_ms"]["p50"]
               for a, b in zip(r["export"]["artifacts"], r["bench"]["artifacts"])}
        spec, spec_ort = r["bench"]["speculative"], r["bench"]["speculative_onnx"]
        rows[name] = {
            "teacher": {k: r["teacher"][k] for k in ("accuracy", "perplexity", "params")},
            "student": {k: r["distill"][k] for k in ("accuracy", "perplexity", "params", "agreement_with_teacher",
                                                     "generation_agreement")},
            "student_before": {k: r["student"][k] for k in ("accuracy", "perplexity")},
            "sequence_kd": r["distill"]["sequence_kd"], "ms_per_token": lat,
            "onnx_accuracy": {f"{a['role']} {a['kind']}": b["accuracy"]
                              for a, b in zip(r["export"]["artifacts"], r["bench"]["artifacts"])},
            "size_bytes": {f"{a['role']} {a['kind']}": a["size_bytes"] for a in r["export"]["artifacts"]},
            "speculative": spec, "speculative_onnx": spec_ort, "wall_s": {k: v.get("wall_s") for k, v in r.items()},
        }
        s = rows[name]["student"]
        print(f"{name}: ppl {s['perplexity']:.1f} (teacher {r['teacher']['perplexity']:.1f}, before "
              f"{r['student']['perplexity']:.1f}), next-token {100 * s['accuracy']:.2f}%, greedy agreement "
              f"{100 * s['generation_agreement']:.1f}%, ms/token {lat}, speculative acceptance "
              f"{spec['acceptance_rate']:.2f} speed-up {spec['speedup']:.2f}x (torch), acceptance "
              f"{spec_ort['acceptance_rate']:.2f} speed-up {spec_ort['speedup']:.2f}x (ORT: teacher fp32, student "
              f"int8 drafting)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
