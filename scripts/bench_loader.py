"""Peak memory and images/s of the streamed training split at 224 px as the folder grows 10x, with and without
the uint8 cache, against holding the same split in memory as float32 (what the pre-streaming reader did).

    python scripts/bench_loader.py --root /tmp/bench-photos --sizes 250 2500

Generates JPEGs of mixed sizes (300-500 px a side, 10 classes) under --root once; each case runs in its own
process, so its peak RSS (main process, and the largest decode worker) is its own. An epoch is one pass over
the training split in a seeded order, batch 64, with random-resized-crop + flip as training does them."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make(root: Path, n: int) -> Path:
    """n photos under root/n/<class>/ (made once; kept for later runs)."""
    from PIL import Image

    folder = root / str(n)
    if (folder / ".done").exists():
        return folder
    rng = np.random.default_rng(n)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 501, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([(xx * (i % 7 + 1)) % 256, (yy * 3) % 256, ((xx + yy) * (i % 5 + 1)) % 256], -1)
        pixels = (pixels + rng.integers(0, 40, pixels.shape)).clip(0, 255).astype(np.uint8)
        d = folder / f"c{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(d / f"{i}.jpg", quality=90)
    (folder / ".done").write_text("")
    return folder


def _rss_mib() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return round(int(line.split()[1]) / 1024)


def case(kind: str, folder: Path, workers: int, cache: Path) -> dict:
    import torch

    from edgedistill.data.folders import _cached
    from edgedistill.data.preprocess import Preprocess
    from edgedistill.data.sources import list_image_folder
    from edgedistill.data.streaming import Decode, FileImages, StreamedImages
    from edgedistill.recipe import Augment, DataConfig

    torch.set_num_threads(2)
    base = _rss_mib()
    files = list_image_folder(folder).train_files
    pre = Preprocess(size=(224, 224))
    images = FileImages(files)
    t0 = time.perf_counter()
    cfg = DataConfig(dataset="folder", path=folder, cache=cache if kind == "cache" else False, workers=workers)
    rows = _cached(cfg, pre, images, workers)
    split = StreamedImages(Decode(images, pre), pre.mean, pre.std, workers, rows=rows)
    prepare = time.perf_counter() - t0
    if kind == "memory":  # the whole split decoded into one float32 tensor, then batches are index lookups
        from edgedistill.data.split import TensorSplit

        t0 = time.perf_counter()
        split = TensorSplit(split.head(len(split)))
        prepare = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    aug = Augment(random_resized_crop=0.08, flip=True)
    t0, seen, checksum = time.perf_counter(), 0, 0.0
    for _, x in split.batches(torch.randperm(len(files), generator=g), 64, aug, g):
        seen += len(x)
        checksum += float(x[:, :, 0, 0].sum())
    epoch = time.perf_counter() - t0
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"kind": kind, "n": len(files), "workers": workers, "prepare_s": round(prepare, 2),
            "epoch_s": round(epoch, 2), "images_per_s": round(seen / epoch, 1), "base_rss_mib": base, "peak_rss_mib": round(main),
            "worker_peak_rss_mib": round(worker) if workers else None}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=Path("/tmp/edgedistill-bench-photos"))
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 2500])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.folder, args.workers, args.root / "cache")))
        return
    shutil.rmtree(args.root / "cache", ignore_errors=True)  # the first cached case builds it, the second reads it
    runs = [(kind, n) for n in args.sizes for kind in ("stream", "cache", "cache")]
    runs.append(("memory", min(args.sizes)))
    print("| images | reader | prepare s | epoch s | images/s | RSS after imports | peak RSS main | peak RSS worker |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, n in runs:
        folder = make(args.root, n)
        out = subprocess.run([sys.executable, __file__, "--case", kind, "--folder", str(folder), "--root",
                              str(args.root), "--workers", str(args.workers)], check=True, capture_output=True,
                             text=True).stdout
        r = json.loads(out.splitlines()[-1])
        label = {"stream": "stream, decode", "cache": "stream, cache", "memory": "in memory, float32"}[kind]
        worker = f"{r['worker_peak_rss_mib']} MiB" if r["worker_peak_rss_mib"] is not None else "-"
        print(f"| {r['n']:,} | {label} | {r['prepare_s']} | {r['epoch_s']} | {r['images_per_s']} | "
              f"{r['base_rss_mib']} MiB | {r['peak_rss_mib']} MiB | {worker} |", flush=True)


if __name__ == "__main__":
    main()
