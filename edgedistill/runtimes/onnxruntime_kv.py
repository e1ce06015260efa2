"""ONNX Runtime on a causal LM's files with their KV cache (edgedistill.generative.kv_onnx): held-out
next-token accuracy teacher-forced, latency per generated token (batch 1), and over the run the student
drafting for the teacher in speculative decoding (acceptance rate and measured speed-up)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from edgedistill.io import dir_size
from edgedistill.runtimes import RUNTIMES, Runtime


def next_tokens(onnx, ids: torch.Tensor, lengths: torch.Tensor, reference: bool = False) -> torch.Tensor:
    """Teacher-forced next-token predictions of an exported file (its path, or an OrtGreedy on it) through ONNX
    Runtime (empty cache, whole rows), in tasks.causal_lm.next_token's order: the same figures as the stages', from
    the file an app loads. `reference`: in the file's own int8 arithmetic, not this CPU's kernels'."""
    from edgedistill.generative import kv_onnx

    runner = kv_onnx.open_runner(onnx, reference=reference)
    preds = []
    for row, n in zip(ids.numpy(), lengths.tolist()):
        x = row[None, :n].astype(np.int64)
        logits, _ = runner.step(x, np.ones_like(x), runner.empty_cache(1))
        preds.append(torch.from_numpy(logits[0, :-1].argmax(-1)))
    return torch.cat(preds)


@RUNTIMES.register("onnxruntime-kv")
class OnnxRuntimeKV(Runtime):
    name, label = "onnxruntime-kv", "onnxruntime-cpu"

    def _runner(self, artifact, job):
        """One session per file for every figure (kept in the job for bench_run)."""
        from edgedistill.generative import kv_onnx

        runners = job.cache.setdefault(self.name, {})
        if (artifact.role, artifact.precision) not in runners:
            runners[artifact.role, artifact.precision] = kv_onnx.OrtGreedy(artifact.file, job.threads)
        return runners[artifact.role, artifact.precision]

    def outputs(self, artifact, x, spec, threads=1):
        raise NotImplementedError("a causal LM's file is run token by token: see next_tokens")

    def bench(self, artifact, job):
        from edgedistill.generative import kv_onnx
        from edgedistill.tasks.causal_lm import prompts as _prompts

        data = job.ctx.data
        x, lengths = data.x_test.cpu(), data.y_test.cpu()
        p_ids, _ = _prompts(job.ctx.recipe, x, lengths, job.cfg.speculative_prompts)
        targets = torch.cat([row[1:n] for row, n in zip(x, lengths.tolist())])
        runner = self._runner(artifact, job)
        ms = kv_onnx.time_per_token(runner, p_ids[0], new_tokens=job.ctx.recipe.stages.distill.sequence.max_new_tokens)
        acc = float((next_tokens(runner, x, lengths) == targets).float().mean())
        job.ctx.log(f"    {artifact.role:<7} {artifact.kind:<9} next-token acc {acc:.4f}  {ms:.3f} ms/token "
                    f"({job.kind}, {job.threads} thr)  {dir_size(artifact.path):,} B")
        return {"accuracy": acc, "latency_ms": {"p50": ms, "kind": job.kind, "threads": job.threads, "batch": 1,
                                                "runtime": self.label, "per": "generated token (KV cache)"}}

    def bench_run(self, job):
        """Speculative decoding twice: torch eager, and the shipped files on ONNX Runtime (the teacher's fp32 file
        verifying, the student's smallest file drafting), where per-call overhead is far lower."""
        from edgedistill.generative import speculative
        from edgedistill.tasks.causal_lm import eos as _eos
        from edgedistill.tasks.causal_lm import prompts as _prompts

        runners, state, cfg, ctx = job.cache.get(self.name, {}), job.state, job.cfg, job.ctx
        if ("teacher", "fp32") not in runners:
            return {}
        p_ids, _ = _prompts(ctx.recipe, ctx.data.x_test.cpu(), ctx.data.y_test.cpu(), cfg.speculative_prompts)
        new = ctx.recipe.stages.distill.sequence.max_new_tokens
        pairs = {"torch": tuple(copy.deepcopy(h.module).cpu().eval() for h in (state.teacher, state.student)),
                 "onnxruntime": (runners["teacher", "fp32"],
                                 runners.get(("student", "int8"), runners.get(("student", "fp32"))))}
        eos, spec = _eos(state.teacher.module), {}
        for runtime, (target, draft) in pairs.items():
            spec[runtime] = speculative.measure(target, draft, list(p_ids), new, k=cfg.speculative_k,
                                                threads=job.threads, eos_token_id=eos)
            ctx.log(f"    speculative decoding on {runtime} (student drafts {cfg.speculative_k}): acceptance "
                    f"{spec[runtime]['acceptance_rate']:.2f}, {spec[runtime]['tokens_per_target_call']:.2f} tokens "
                    f"per teacher pass, {spec[runtime]['speedup']:.2f}x vs the teacher alone ({job.threads} thr)")
        return {"speculative": spec["torch"], "speculative_onnx": spec["onnxruntime"]}
