"""Teacher vs final student, latency and size on this CPU: a timm ResNet-50 teacher compressed by the whole
pipeline (KD into a MobileNetV3-Large, pruning, QAT int8, export) at 224 px, both files timed by the bench
stage in ONNX Runtime at batch 1 with the target's thread count.

    python scripts/bench_teacher_student.py --out /tmp/bench-ts [--train 256 --test 100]

Data: a seeded random --train / --test images of the CIFAR-10 JPEG copy (../shared/datasets/cifar10), upscaled to
224 px by the teacher's timm preprocessing. Training is one short epoch per stage: accuracy here is no result,
only latency and size are (the model shapes, and so the speed, are those of a real run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10" / "cifar10_jpeg.npz"


def subset(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
    """An npz of encoded images in the same layout, holding a seeded random n of each split (the copy is sorted
    by class)."""
    rng = np.random.default_rng(0)
    with np.load(src, allow_pickle=False) as z:
        parts = {}
        for split, n in (("train", n_train), ("test", n_test)):
            offsets, blob, labels = z[f"{split}_offsets"], z[f"{split}_jpeg"], z[f"y_{split}"]
            pick = np.sort(rng.choice(len(labels), n, replace=False))
            images = [blob[offsets[i]:offsets[i + 1]] for i in pick]
            parts[f"{split}_jpeg"] = np.concatenate(images)
            parts[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in images])]).astype(np.int64)
            parts[f"y_{split}"] = labels[pick]
    np.savez(dst, **parts)
    return dst


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-teacher-student"))
    p.add_argument("--train", type=int, default=256)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--target", default="x86-avx512-vnni")
    p.add_argument("--teacher", default="timm:resnet50")
    p.add_argument("--student", default="timm:mobilenetv3_large_100")
    args = p.parse_args()
    import edgedistill

    args.out.mkdir(parents=True, exist_ok=True)
    data = subset(CIFAR, args.out / "cifar-subset.npz", args.train, args.test)
    one = {"epochs": 1, "lr": 0.0005, "optimizer": "adamw"}
    overrides = {**{f"stages.{s}.{k}": v for s in ("teacher", "distill", "qat") for k, v in one.items()},
                 "stages.prune.epochs": 1, "stages.prune.steps": 1, "stages.prune.macs_ratio": 0.6,
                 "stages.prune.measure_latency": False, "stages.export.formats": ["onnx", "ort"],
                 "stages.bench.repeats": 50, "data.batch_size": 32, "data.workers": 2,
                 # one epoch leaves a near-random MobileNetV3 whose int8 rounding differences are amplified
                 # past the parity bar; the files' speed and size are what this measures
                 "stages.export.int8_max_rel": 1.0, "stages.export.int8_min_agreement": 0.0}
    report = edgedistill.compress(teacher=args.teacher, student=args.student, data=data, recipe="photos",
                                  target=args.target, out=args.out / "run", overrides=overrides, quiet=False)
    rows = [(a["role"], a["kind"], a["precision"], a["size_bytes"], (a.get("latency_ms") or {}).get("p50"))
            for a in report["artifacts"] if a.get("latency_ms")]
    teacher = next(r for r in rows if r[0] == "teacher")
    print(f"\n{'model':10} {'file':10} {'precision':9} {'size MB':>8} {'p50 ms':>8} {'faster':>7} {'smaller':>7}")
    for role, kind, precision, size, p50 in rows:
        print(f"{role:10} {kind:10} {precision:9} {size / 1e6:8.2f} {p50:8.2f} {teacher[4] / p50:6.1f}x "
              f"{teacher[3] / size:6.1f}x")
    (args.out / "result.json").write_text(json.dumps({"rows": rows, "target": args.target}, indent=1))


if __name__ == "__main__":
    main()
