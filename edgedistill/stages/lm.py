"""Export and bench for causal language models: ONNX with a KV cache, per-token latency and speculative
decoding."""

from __future__ import annotations

import copy

import numpy as np
import torch

from edgedistill import int8_arithmetic, io
from edgedistill.errors import RefusedError
from edgedistill.generative import kv_onnx, lm
from edgedistill.tasks.causal_lm import eos as _eos
from edgedistill.tasks.causal_lm import next_token
from edgedistill.tasks.causal_lm import prompts as _prompts

FP32_MIN_MATCH = 0.99  # greedy tokens an fp32 export must decode as torch does (a near-tie may flip one)


def export(ctx, state, stage_dir) -> dict:
    """teacher.onnx-kv/ and student.onnx-kv/: optimum directories with a KV cache (student with its dynamic
    int8 twin), each checked against torch on a bare ONNX Runtime session: fp32 by greedy decoding, int8 by
    teacher-forced next tokens."""
    cfg = ctx.recipe.stages.export
    tokenizer = lm.load_tokenizer(ctx.recipe.teacher.path)
    p_ids, _ = _prompts(ctx.recipe, ctx.data.x_test.cpu(), ctx.data.y_test.cpu(), 16)
    artifacts, parity = [], []
    rel = lambda p: str(p.relative_to(ctx.out))  # noqa: E731
    for role in ("teacher", "student"):
        module = copy.deepcopy(getattr(state, role).module).cpu().eval()
        directory = kv_onnx.export(module, tokenizer, stage_dir / f"{role}.onnx-kv", cfg.opset, int8=role == "student",
                                   weight_range=ctx.target.int8_weight_range)
        files = [("onnx-fp32", kv_onnx.FP32_FILE, "fp32")] + ([("onnx-int8", kv_onnx.INT8_FILE, "int8")] if role == "student" else [])
        for kind, name, precision in files:
            # fp32: greedy decoding must match torch token for token. int8: greedy tokens drift once a near-tie
            # flips (and then the rest of the sequence differs), so it is judged teacher-forced, per token.
            if precision == "fp32":
                match, measure = kv_onnx.check_matches_torch(module, directory, p_ids, file_name=name), "greedy tokens"
            else:
                ids, lengths = ctx.data.x_test[:200].cpu(), ctx.data.y_test[:200].cpu()
                # in the target's int8 arithmetic (edgedistill.int8_arithmetic)
                reference = not int8_arithmetic.host_matches(ctx.target)
                match = float((onnx_next_tokens(directory / name, ids, lengths, reference)
                               == next_token(module, ids, lengths)[0]).float().mean())
                measure = "teacher-forced next tokens" + (" (reference execution)" if reference else "")
            floor = FP32_MIN_MATCH if precision == "fp32" else cfg.int8_min_agreement
            if match < floor:
                key = "stages.export.int8_min_agreement " if precision == "int8" else ""
                refused = io.set_aside(directory)  # the whole directory: optimum loads it by its name
                raise RefusedError(f"parity: {rel(directory / name)} agrees with the torch {role} on {match:.1%} of "
                                   f"{measure} (< {key}{floor}); not trusted, kept as {rel(refused)}")
            parity.append({"from": f"{role} fp32 (torch)", "to": f"{role} {precision} (onnx, KV cache)",
                           "top1_agreement": match, "max_abs": None, "measure": measure})
            artifacts.append({"role": role, "kind": kind, "path": rel(directory / name), "precision": precision,
                              "size_bytes": io.dir_size(directory / name), "directory": rel(directory),
                              "loader": "optimum.onnxruntime.ORTModelForCausalLM.from_pretrained(directory"
                                        + (f", file_name='{name}')" if name != kv_onnx.FP32_FILE else ")"),
                              **({"quantization": "dynamic-ort"} if precision == "int8" else {})})
            ctx.log(f"    wrote {artifacts[-1]['path']} ({artifacts[-1]['size_bytes']:,} bytes)")
    skipped = [f for f in cfg.formats if f in ("ort", "coreml", "hf-onnx")]
    return {"name": "export", "artifacts": artifacts, "parity": parity,
            "usage": {"inputs": ["input_ids", "attention_mask", "position_ids", "past_key_values.<layer>.key/value"],
                      "outputs": ["logits", "present.<layer>.key/value"], "pad_id": ctx.data.spec.pad_id},
            **({"skipped": {f: "causal language models are exported as ONNX with a KV cache only" for f in skipped}}
               if skipped else {})}


def onnx_next_tokens(onnx, ids: torch.Tensor, lengths: torch.Tensor, reference: bool = False) -> torch.Tensor:
    """Teacher-forced next-token predictions of an exported file (its path, or an OrtGreedy on it) through ONNX
    Runtime (empty cache, whole rows), in next_token's order: the same figures as the stages', from the file an
    app loads. `reference`: in the file's own int8 arithmetic, not this CPU's kernels'."""
    runner = kv_onnx.open_runner(onnx, reference=reference)
    preds = []
    for row, n in zip(ids.numpy(), lengths.tolist()):
        x = row[None, :n].astype(np.int64)
        logits, _ = runner.step(x, np.ones_like(x), runner.empty_cache(1))
        preds.append(torch.from_numpy(logits[0, :-1].argmax(-1)))
    return torch.cat(preds)


def bench(ctx, state, threads: int, kind: str) -> dict:
    """Per generated token latency (KV cache, batch 1) and held-out next-token accuracy of every file, and the
    student drafting for the teacher in speculative decoding (acceptance rate and measured speed-up)."""
    from edgedistill.generative import speculative

    cfg = ctx.recipe.stages.bench
    x, lengths = ctx.data.x_test.cpu(), ctx.data.y_test.cpu()
    p_ids, _ = _prompts(ctx.recipe, x, lengths, cfg.speculative_prompts)
    new = ctx.recipe.stages.distill.sequence.max_new_tokens
    targets = torch.cat([row[1:n] for row, n in zip(x, lengths.tolist())])
    arts = state.records["export"]["artifacts"]
    files = {(a["role"], a["precision"]): kv_onnx.OrtGreedy(ctx.out / a["path"], threads) for a in arts}
    results = []
    for art in arts:
        runner = files[(art["role"], art["precision"])]  # one session per file for every figure below
        ms = kv_onnx.time_per_token(runner, p_ids[0], new_tokens=new)
        acc = float((onnx_next_tokens(runner, x, lengths) == targets).float().mean())
        results.append({"path": art["path"], "accuracy": acc,
                        "latency_ms": {"p50": ms, "kind": kind, "threads": threads, "batch": 1,
                                       "runtime": "onnxruntime-cpu", "per": "generated token (KV cache)"}})
        ctx.log(f"    {art['role']:<7} {art['kind']:<9} next-token acc {acc:.4f}  {ms:.3f} ms/token ({kind}, "
                f"{threads} thr)  {art['size_bytes']:,} B")
    # Speculative decoding twice: torch eager, and the shipped files on ONNX Runtime (the teacher's fp32 file
    # verifying, the student's smallest file drafting), where per-call overhead is far lower.
    runtimes = {"torch": tuple(copy.deepcopy(h.module).cpu().eval() for h in (state.teacher, state.student)),
                "onnxruntime": (files[("teacher", "fp32")], files.get(("student", "int8"), files[("student", "fp32")]))}
    eos, spec = _eos(state.teacher.module), {}
    for runtime, (target, draft) in runtimes.items():
        spec[runtime] = speculative.measure(target, draft, list(p_ids), new, k=cfg.speculative_k, threads=threads,
                                            eos_token_id=eos)
        ctx.log(f"    speculative decoding on {runtime} (student drafts {cfg.speculative_k}): acceptance "
                f"{spec[runtime]['acceptance_rate']:.2f}, {spec[runtime]['tokens_per_target_call']:.2f} tokens per "
                f"teacher pass, {spec[runtime]['speedup']:.2f}x vs the teacher alone ({threads} thr)")
    return {"artifacts": results, "speculative": spec["torch"], "speculative_onnx": spec["onnxruntime"]}
