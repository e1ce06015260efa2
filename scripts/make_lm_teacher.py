"""Build a benchmark teacher for causal-LM distillation: a GPT-2 trained from scratch on SST-2's sentences.

    .venv/bin/python scripts/make_lm_teacher.py --out runs/lm-teacher [--data ../shared/datasets/sst2/sst2.npz]
        [--layers 6 --width 256 --heads 4] [--epochs 3] [--max-steps N] [--threads 2]

Trains a byte-level BPE tokenizer (--vocab, default 4096) on the training sentences, then the model as a
language model on them (each sentence then EOS, batches of whole sentences padded to the longest, AdamW,
linear warm-up then cosine decay, fp32 on CPU), reports perplexity on the test split, and saves an HF
directory (model, tokenizer with a pad token, lm_teacher.json with the figures) to --out, atomically.
The data is read where it lies, never copied."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from edgedistill.generative import corpus, lm
from edgedistill.io import atomic_path, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "sst2" / "sst2.npz"


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "lm-teacher")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--positions", type=int, default=64, help="n_positions: the longest sequence, prompt included")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (a smoke test)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=200, help="warm-up steps (capped at a tenth of the run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    train = corpus.load_sentences(args.data, "train", field="--data")
    test = corpus.load_sentences(args.data, "test", field="--data")
    tokenizer = corpus.train_tokenizer(train, args.vocab)
    ids, mask = corpus.encode(tokenizer, train, args.positions)
    test_ids, test_mask = corpus.encode(tokenizer, test, args.positions)
    print(f"{len(train)} train / {len(test)} test sentences, vocab {len(tokenizer)}, "
          f"{int(mask.sum())} training tokens ({time.perf_counter() - t0:.1f} s)", flush=True)

    from transformers import GPT2Config, GPT2LMHeadModel

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.positions, n_embd=args.width,
                        n_layer=args.layers, n_head=args.heads, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = pad
    steps_per_epoch = math.ceil(len(ids) / args.batch)
    total = args.epochs * steps_per_epoch
    total = total if args.max_steps is None else min(args.max_steps, total)
    warmup = max(1, min(args.warmup, total // 10))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]  # biases and norms
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
    print(f"GPT-2 {args.layers}x{args.width}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"{total} steps", flush=True)

    step, t_train, running = 0, time.perf_counter(), []
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        for i in range(0, len(order), args.batch):
            if step >= total:
                break
            rows = order[i : i + args.batch]
            keep = int(mask[rows].sum(1).max())  # batch of whole sentences, padded to its longest
            x, m = ids[rows, :keep], mask[rows, :keep]
            loss = model(input_ids=x, attention_mask=m, labels=x.masked_fill(m == 0, -100)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running.append(float(loss.detach()))
            if step % 100 == 0 or step == total:
                print(f"step {step}/{total} epoch {epoch + 1} loss {sum(running) / len(running):.3f} "
                      f"lr {scheduler.get_last_lr()[0]:.2e} {time.perf_counter() - t_train:.0f} s", flush=True)
                running = []
    train_s = time.perf_counter() - t_train

    model.eval()
    ppl = lm.perplexity(model, test_ids, test_mask, batch_size=128)
    metrics = {"test_perplexity": ppl, "steps": step, "epochs": args.epochs, "train_seconds": train_s,
               "params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
               "layers": args.layers, "width": args.width, "heads": args.heads, "n_positions": args.positions,
               "batch": args.batch, "lr": args.lr, "threads": torch.get_num_threads(), "seed": args.seed,
               "data": str(args.data), "train_sentences": len(train), "test_sentences": len(test)}
    with atomic_path(args.out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "lm_teacher.json", metrics)
    print(json.dumps(metrics, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
