"""Benchmark: distillation-step throughput through our data path vs the ceiling of the same step.

    python scripts/bench_distill.py --data PATH/cifar10_jpeg.npz [--teacher resnet56 --student resnet20]
                                    [--batch 512] [--epochs 3] [--out bench_distill.json]

- "pipeline": edgedistill's training loop (training.fit) on real CIFAR-10 held on the device, with random
  crop + flip done there per batch, a live teacher (eval, no grad), bf16 autocast, channels_last. Images/s
  over the timed epochs (the first epoch is warm-up and excluded).
- "ceiling": the same DistillationTask step (same models, batch, precision, layout) on one synthetic batch
  already on the GPU: no indexing, no augmentation, no bookkeeping.
Prints a table and writes JSON. Needs a CUDA GPU for meaningful figures (runs on CPU too, slowly)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgedistill.data import load_data
from edgedistill.distill import DistillationTask
from edgedistill.models import build_model
from edgedistill.recipe import Augment, DataConfig, DistillStage, Training
from edgedistill.training import fit


def ceiling(teacher, student, task, batch, steps, device):
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    student.train()
    for i in range(steps + 20):
        if i == 20:
            torch.cuda.synchronize() if device.type == "cuda" else None
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = task(student, x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize() if device.type == "cuda" else None
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench_distill.json"))
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    data = load_data(DataConfig(dataset="npz", path=args.data), seed=0).to(device)
    load_s = time.perf_counter() - t0
    teacher = build_model(args.teacher, None, (3, 32, 32), 10).to(device).to(memory_format=torch.channels_last).eval()
    student = build_model(args.student, None, (3, 32, 32), 10).to(device)
    task = DistillationTask(teacher, 4.0, 0.9, 0.1)
    cfg = DistillStage(epochs=args.epochs, lr=0.05)
    history = fit(student, task, data, cfg, stage="bench", checkpoint=Path("/tmp/bench_distill_ckpt.pt"),
                  batch_size=args.batch, seed=0, augment=Augment(crop_padding=4, flip=True), training=Training())
    Path("/tmp/bench_distill_ckpt.pt").unlink(missing_ok=True)
    pipeline = sum(h["samples_per_s"] for h in history[1:]) / max(len(history) - 1, 1)
    steps = len(data.x_train) // args.batch
    ceil = ceiling(teacher, student.to(memory_format=torch.channels_last), task, args.batch, steps, device)
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "teacher": args.teacher, "student": args.student, "batch": args.batch, "data_load_s": load_s,
              "pipeline_img_s": pipeline, "ceiling_img_s": ceil, "ratio": pipeline / ceil,
              "epochs": [{k: h[k] for k in ("epoch", "samples_per_s", "seconds")} for h in history]}
    print(f"{'path':<10} {'images/s':>10}\n{'pipeline':<10} {pipeline:>10,.0f}\n{'ceiling':<10} {ceil:>10,.0f}\n"
          f"ratio {pipeline / ceil:.1%}  ({result['device']}, batch {args.batch}, {args.teacher} -> {args.student}, "
          f"data decoded in {load_s:.1f} s)")
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
