"""Speculative decoding with a distilled draft (Leviathan et al., 2023), greedy acceptance, batch size 1.

Each round the draft proposes k tokens greedily, the target scores all of them in one forward pass, and the
longest prefix on which the target's own argmax agrees is kept, plus the target's token after it (its
correction, or a bonus token when all k agree). The output is therefore the target's greedy decoding token
for token; what the draft buys is fewer sequential target passes. Both models keep a transformers
DynamicCache, cropped back to the accepted tokens after each round.

Invariant: both caches hold every token of the sequence but the last (`pending`), which the next forward
pass feeds first."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def _forward(model: nn.Module, ids: torch.Tensor, cache) -> torch.Tensor:
    """Logits (S, V) for the new tokens `ids` (1, S) after the cached ones."""
    start = cache.get_seq_length()
    cache_position = torch.arange(start, start + ids.shape[1], device=ids.device)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, cache_position=cache_position,
                position_ids=cache_position[None])
    return out.logits[0]


def _cache(model: nn.Module):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _check(input_ids: torch.Tensor) -> None:
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must be (1, P) (batch size 1), got {tuple(input_ids.shape)}")


@torch.no_grad()
def greedy_cached(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                  eos_token_id: int | None = None) -> torch.Tensor:
    """Plain greedy decoding with a DynamicCache, one target pass per token (the baseline speculative decoding
    is timed against: the same loop style, without generate's per-step overhead). Returns (1, P + n)."""
    _check(input_ids)
    model.eval()
    cache = _cache(model)
    seq = input_ids[0].tolist()
    logits = _forward(model, input_ids, cache)
    for _ in range(max_new_tokens):
        token = int(logits[-1].argmax())
        seq.append(token)
        if token == eos_token_id or len(seq) - input_ids.shape[1] == max_new_tokens:
            break
        logits = _forward(model, input_ids.new_tensor([[token]]), cache)
    return input_ids.new_tensor([seq])


@torch.no_grad()
def speculative_greedy(target: nn.Module, draft: nn.Module, input_ids: torch.Tensor, max_new_tokens: int,
                       k: int = 4, eos_token_id: int | None = None) -> tuple[torch.Tensor, dict]:
    """The target's greedy continuation of `input_ids` (1, P), computed with `draft` proposing k tokens per
    target pass. Stops after max_new_tokens, or after `eos_token_id` when given. Returns (ids (1, P + n),
    stats: drafted, accepted, acceptance_rate = accepted / drafted, target_calls (verification passes),
    tokens (new tokens))."""
    _check(input_ids)
    if k < 1:
        raise ValueError("k must be at least 1")
    target.eval()
    draft.eval()
    t_cache, d_cache = _cache(target), _cache(draft)
    seq = input_ids[0].tolist()
    prompt_len = len(seq)
    if prompt_len > 1:
        context = input_ids[:, :-1]
        _forward(target, context, t_cache)
        _forward(draft, context, d_cache)
    drafted = accepted = calls = 0
    while len(seq) - prompt_len < max_new_tokens and not (eos_token_id is not None and len(seq) > prompt_len
                                                            and seq[-1] == eos_token_id):
        n_draft = min(k, max_new_tokens - (len(seq) - prompt_len) - 1)
        proposal: list[int] = []
        if n_draft:
            feed = seq[d_cache.get_seq_length():]  # the pending token, plus one left over after a full accept
            for _ in range(n_draft):
                token = int(_forward(draft, input_ids.new_tensor([feed]), d_cache)[-1].argmax())
                proposal.append(token)
                feed = [token]
                if token == eos_token_id:
                    break
        scored = _forward(target, input_ids.new_tensor([[seq[-1], *proposal]]), t_cache).argmax(-1).tolist()
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
        t_cache.crop(len(seq) - 1)
        if d_cache.get_seq_length() > len(seq) - 1:
            d_cache.crop(len(seq) - 1)
    stats = {"drafted": drafted, "accepted": accepted, "acceptance_rate": accepted / drafted if drafted else 0.0,
             "target_calls": calls, "tokens": len(seq) - prompt_len}
    return input_ids.new_tensor([seq]), stats


def measure(target: nn.Module, draft: nn.Module, prompts, max_new_tokens: int, k: int = 4,
            threads: int | None = None, eos_token_id: int | None = None) -> dict:
    """Wall time of target-alone greedy decoding (greedy_cached) vs speculative decoding over `prompts`
    (each a (1, P) tensor or a list of token ids), after one warm-up of each. Returns both times, the
    speed-up, mean acceptance rate, mean tokens per target pass and whether every output matched."""
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
