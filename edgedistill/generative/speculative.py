"""Speculative decoding with a distilled draft (Leviathan et al., 2023), greedy acceptance, batch size 1.

Each round the draft proposes k tokens greedily, the target scores all of them in one forward pass, and the
longest prefix on which the target's own argmax agrees is kept, plus the target's token after it (its
correction, or a bonus token when all k agree). The output is therefore the target's greedy decoding token
for token; what the draft buys is fewer sequential target passes.

Target and draft are each a torch model (a transformers DynamicCache) or a kv_onnx.OrtGreedy (an exported
model on an ONNX Runtime session, the cache fed back by hand as an app does). Either cache is cropped back to
the accepted tokens after each round. Invariant: both caches hold every token of the sequence but the last
(`pending`), which the next forward pass feeds first."""

from __future__ import annotations

import statistics
import time

import torch

from edgedistill.generative.decoding import Incremental, backend, greedy_tokens


def _prompt(input_ids) -> list[int]:
    ids = torch.as_tensor(input_ids)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be (1, P) (batch size 1), got {tuple(ids.shape)}")
    return ids[0].tolist()


def greedy_cached(model, input_ids, max_new_tokens: int, eos_token_id: int | None = None) -> torch.Tensor:
    """Plain greedy decoding with the KV cache, one target pass per token (the baseline speculative decoding is
    timed against): decoding.greedy_tokens at batch size 1. `model`: a torch causal LM or an OrtGreedy.
    Returns (1, P + n), n up to and including `eos_token_id` when the model produces it."""
    seq = _prompt(input_ids)
    new = greedy_tokens(backend(model), [seq], max_new_tokens=max(max_new_tokens, 0),
                        eos_token_id=eos_token_id)[0].tolist()
    if eos_token_id in new:  # the loop stopped there; the rest is padding
        new = new[: new.index(eos_token_id) + 1]
    return torch.tensor([seq + new])


def speculative_greedy(target, draft, input_ids, max_new_tokens: int, k: int = 4,
                       eos_token_id: int | None = None) -> tuple[torch.Tensor, dict]:
    """The target's greedy continuation of `input_ids` (1, P), computed with `draft` proposing k tokens per
    target pass; each a torch causal LM or an OrtGreedy. Stops after max_new_tokens, or after `eos_token_id`
    when given. Returns (ids (1, P + n), stats: drafted, accepted, acceptance_rate = accepted / drafted,
    target_calls (verification passes), tokens (new tokens))."""
    seq = _prompt(input_ids)
    if k < 1:
        raise ValueError("k must be at least 1")
    t_lm, d_lm = Incremental(backend(target)), Incremental(backend(draft))
    prompt_len = len(seq)
    if prompt_len > 1:
        t_lm(seq[:-1])
        d_lm(seq[:-1])
    drafted = accepted = calls = 0
    while len(seq) - prompt_len < max_new_tokens and not (eos_token_id is not None and len(seq) > prompt_len
                                                            and seq[-1] == eos_token_id):
        n_draft = min(k, max_new_tokens - (len(seq) - prompt_len) - 1)
        proposal: list[int] = []
        if n_draft:
            feed = seq[len(d_lm):]  # the pending token, plus one left over after a full accept
            for _ in range(n_draft):
                token = d_lm(feed)[-1]
                proposal.append(token)
                feed = [token]
                if token == eos_token_id:
                    break
        scored = t_lm([seq[-1], *proposal])
        calls += 1
        n = 0
        while n < len(proposal) and proposal[n] == scored[n]:
            n += 1
        kept = proposal[:n] + [scored[n]]
        if eos_token_id is not None and eos_token_id in kept:
            kept = kept[: kept.index(eos_token_id) + 1]
        drafted, accepted = drafted + len(proposal), accepted + n
        seq.extend(kept)
        # The caches may hold only tokens the sequence kept, all but the new pending one.
        t_lm.crop(len(seq) - 1)
        if len(d_lm) > len(seq) - 1:
            d_lm.crop(len(seq) - 1)
    stats = {"drafted": drafted, "accepted": accepted, "acceptance_rate": accepted / drafted if drafted else 0.0,
             "target_calls": calls, "tokens": len(seq) - prompt_len}
    return torch.tensor([seq]), stats


def measure(target, draft, prompts, max_new_tokens: int, k: int = 4, threads: int | None = None,
            eos_token_id: int | None = None) -> dict:
    """Wall time of target-alone greedy decoding (greedy_cached) vs speculative decoding over `prompts`
    (each a (1, P) tensor or a list of token ids), after one warm-up of each. Target and draft: torch causal
    LMs or OrtGreedy runners (whose sessions carry their own thread count; `threads` sets torch's). Returns
    both times, the speed-up, mean acceptance rate, mean tokens per target pass and whether every output
    matched."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        prompts = [torch.as_tensor(p, dtype=torch.long).reshape(1, -1) for p in prompts]
        greedy_cached(target, prompts[0], max_new_tokens, eos_token_id)
        speculative_greedy(target, draft, prompts[0], max_new_tokens, k, eos_token_id)
        t0 = time.perf_counter()
        plain = [greedy_cached(target, p, max_new_tokens, eos_token_id) for p in prompts]
        target_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        spec = [speculative_greedy(target, draft, p, max_new_tokens, k, eos_token_id) for p in prompts]
        speculative_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    stats = [s for _, s in spec]
    tokens = sum(s["tokens"] for s in stats)
    return {"prompts": len(prompts), "max_new_tokens": max_new_tokens, "k": k, "threads": threads or previous,
            "target_s": target_s, "speculative_s": speculative_s,
            "speedup": target_s / speculative_s, "target_ms_per_token": 1000 * target_s / max(tokens, 1),
            "speculative_ms_per_token": 1000 * speculative_s / max(tokens, 1),
            "acceptance_rate": statistics.mean(s["acceptance_rate"] for s in stats),
            "tokens_per_target_call": tokens / max(sum(s["target_calls"] for s in stats), 1),
            "identical": all(torch.equal(a, b) for a, (b, _) in zip(plain, spec))}
