"""Causal language modelling (data.dataset lm, arch hf-lm): held-out next-token accuracy and perplexity,
agreement with the teacher's greedy generations, and sequence-level distillation. Pruning, precision and
QAT do not apply yet; export writes ONNX with a KV cache."""

from __future__ import annotations

import torch

from edgedistill import io
from edgedistill.errors import UserError
from edgedistill.generative import corpus, lm, seqkd
from edgedistill.tasks import TASKS, Task
from edgedistill.tasks.fitting import train

NOT_APPLICABLE = "not applicable to causal language models yet: export quantizes their MatMuls dynamically"


def next_token(model, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64):
    """Teacher-forced predictions at every position that has a next token: (argmax (M,), targets (M,), NLL sum)."""
    return lm.next_tokens(model, ids, corpus.mask_of(lengths, ids.shape[1]), batch_size)


def prompts(recipe, ids: torch.Tensor, lengths: torch.Tensor, n: int | None = None):
    return corpus.leading_prompts(ids, lengths, recipe.stages.distill.sequence.prompt_tokens, n)


def eos(model) -> int | None:
    """The model's (first) end-of-sequence id, from its generation config (set from the tokenizer at load)."""
    found = model.generation_config.eos_token_id
    return found[0] if isinstance(found, (list, tuple)) else found


def generation_agreement(ctx, teacher, student, n: int = 100, new_tokens: int = 16) -> float:
    """Share of the teacher's greedy tokens on held-out prompts (up to its EOS) that the student, decoding
    greedily on its own, produces at the same position."""
    p_ids, _ = prompts(ctx.recipe, ctx.data.x_test, ctx.data.y_test, n)
    end = eos(teacher)
    key = ("teacher_greedy", id(teacher))
    if key not in ctx.cache:
        ctx.cache[key] = lm.greedy(teacher, p_ids, max_new_tokens=new_tokens, eos_token_id=end)
    want, got = ctx.cache[key], lm.greedy(student, p_ids, max_new_tokens=new_tokens, eos_token_id=end)
    ended = (want == end).long() if end is not None else torch.zeros_like(want)
    valid = (ended.cumsum(1) - ended) == 0  # up to and including the teacher's EOS
    return float((want == got)[valid].float().mean())


@TASKS.register("text-generation")
class CausalLM(Task):
    name = "text-generation"
    datasets = ("lm",)

    def load(self, cfg, seed: int, teacher_path, preprocess=None):  # text: no images to size
        from edgedistill.data import load_data

        return load_data(cfg, seed, tokenizer_dir=teacher_path)

    def skips(self, stage: str) -> str | None:
        return NOT_APPLICABLE if stage in ("prune", "precision", "qat") else None

    def preflight_skip(self) -> str | None:
        return "causal language models are checked at export"

    def evaluate(self, handle, ctx, state=None) -> dict:
        """Held-out next-token top-1 accuracy and perplexity (the report's accuracy column for a language
        model), size, and with the pipeline state how close it is to the teacher: the share of next tokens the
        teacher would pick too, and of greedily generated tokens it decodes as the teacher does."""
        from edgedistill.families import size

        preds, targets, nll = next_token(handle.module, ctx.data.x_test, ctx.data.y_test)
        record = {"accuracy": float((preds == targets).float().mean()), "perplexity": lm.perplexity_from(nll, len(targets)),
                  **size(handle)}
        if state is not None:
            key = ("teacher_next_tokens", id(state.teacher.module))
            if key not in ctx.cache:
                ctx.cache[key] = next_token(state.teacher.module, ctx.data.x_test, ctx.data.y_test)[0]
            record["agreement_with_teacher"] = float((preds == ctx.cache[key]).float().mean())
            record["generation_agreement"] = generation_agreement(ctx, state.teacher.module, handle.module)
        return record

    def supervised(self):
        raise UserError("teacher: a causal language model teacher is used as it is, never trained here")

    def _check_positions(self, ctx, teacher) -> None:
        seq = ctx.recipe.stages.distill.sequence
        limit = getattr(teacher.config, "max_position_embeddings", None)
        if limit is not None and seq.prompt_tokens + seq.max_new_tokens > limit:
            raise UserError(f"stages.distill.sequence: prompt_tokens + max_new_tokens = "
                            f"{seq.prompt_tokens + seq.max_new_tokens} but the teacher has {limit} positions; lower them")

    def distill(self, ctx, state, stage_dir) -> dict:
        """Sequence-level KD: the teacher's continuations of the training prompts (made once, kept in the stage
        directory for a resume), then the student trained on them with the shared training loop."""
        from edgedistill.data import DataBundle

        cfg, teacher = ctx.recipe.stages.distill, state.teacher.module
        seq = cfg.sequence
        self._check_positions(ctx, teacher)
        path = stage_dir / "sequences.pt"
        if path.exists():
            sequences = io.load_torch(path)
        else:
            p_ids, p_mask = prompts(ctx.recipe, ctx.data.x_train, ctx.data.y_train)
            ctx.log(f"    teacher continues {len(p_ids):,} prompts")
            sequences = seqkd.teacher_sequences(teacher, p_ids, p_mask, seq.max_new_tokens, do_sample=seq.sample,
                                                top_k=seq.top_k, num_beams=seq.num_beams, seed=ctx.recipe.seed,
                                                logits_topk=seq.logits_topk if cfg.kd_weight else None)
            io.save_torch(path, sequences)
        task = seqkd.SeqKDTask(teacher, sequences, cfg.temperature, cfg.kd_weight, cfg.ce_weight,
                               include_prompt=seq.include_prompt)
        device = ctx.device
        data = DataBundle(sequences["input_ids"].to(device), sequences["prompt_lengths"].to(device),
                          ctx.data.x_test, ctx.data.y_test, ctx.data.spec)
        history = train(ctx, state, "distill", state.student.module, task, stage_dir, data=data,
                        evaluate=lambda m: self.evaluate(state.student, ctx)["accuracy"])
        new = sequences["attention_mask"].sum(1) - sequences["prompt_lengths"]
        info = {"sequences": len(new), "mean_new_tokens": float(new.float().mean()),
                "decoding": "sampled" if seq.sample else f"beam {seq.num_beams}" if seq.num_beams > 1 else "greedy"}
        if "topk_mass" in sequences:
            info["topk_mass"] = float(sequences["topk_mass"])
        return {"temperature": cfg.temperature, "kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight,
                "history": history, "sequence_kd": info}
