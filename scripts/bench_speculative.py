"""Benchmark: speculative decoding on ONNX Runtime with the files a `lm-seqkd` run exported.

    python scripts/bench_speculative.py RUN_DIR [--data PATH/sst2.npz] [--k 1 2 3 4 6] [--threads 1 2]
                                        [--prompts 20] [--out runs/bench-speculative.json]

The teacher's fp32 KV-cache model verifies; the student's fp32 and int8 files take turns drafting k tokens per
teacher pass, on bare onnxruntime sessions fed their caches by hand (edgedistill.generative.speculative).
Prompts: the run's own held-out prompts (its recipe's data, or --data where the file has moved; the bench
stage's selection), each continued for the recipe's max_new_tokens (or --new-tokens), stopping at EOS unless
--no-eos. Every speculative output is checked against the teacher's own greedy
decoding; timings are wall time over all prompts after one warm-up, the teacher alone timed the same way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgedistill.data import load_data
from edgedistill.generative import corpus, kv_onnx, speculative
from edgedistill.generative.lm import load_tokenizer
from edgedistill.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, help="the run's data.train, where it has moved since")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=None, help="default: the recipe's max_new_tokens")
    ap.add_argument("--no-eos", action="store_true", help="decode every new token instead of stopping at EOS")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-speculative.json"))
    args = ap.parse_args()
    export = args.run_dir / "07-export"
    recipe = load_recipe(args.run_dir / "recipe.resolved.yaml", [f"data.train={args.data.resolve()}"] if args.data else [])
    data = load_data(recipe.data, recipe.seed, export / "teacher.onnx-kv")
    prompt_ids, _ = corpus.leading_prompts(data.x_test, data.y_test, recipe.stages.distill.sequence.prompt_tokens,
                                           args.prompts)
    prompts = [p.tolist() for p in prompt_ids]
    tokenizer = load_tokenizer(export / "teacher.onnx-kv")
    eos = None if args.no_eos else tokenizer.eos_token_id
    new_tokens = args.new_tokens or recipe.stages.distill.sequence.max_new_tokens
    rows = []
    for threads in args.threads:
        target = kv_onnx.OrtGreedy(export / "teacher.onnx-kv" / kv_onnx.FP32_FILE, threads)
        for precision, name in (("int8", kv_onnx.INT8_FILE), ("fp32", kv_onnx.FP32_FILE)):
            draft = kv_onnx.OrtGreedy(export / "student.onnx-kv" / name, threads)
            for k in args.k:
                r = speculative.measure(target, draft, prompts, new_tokens, k=k, eos_token_id=eos)
                rows.append({"threads": threads, "draft": precision, **r})
                print(f"{threads} thr, student {precision} drafts k={k}: acceptance {r['acceptance_rate']:.3f}, "
                      f"{r['tokens_per_target_call']:.2f} tokens/teacher pass, teacher alone "
                      f"{r['target_ms_per_token']:.3f} ms/token, speculative {r['speculative_ms_per_token']:.3f} "
                      f"ms/token, {r['speedup']:.2f}x, identical {r['identical']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run_dir": str(args.run_dir), "prompts": len(prompts), "new_tokens": new_tokens,
                                    "eos": eos, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
