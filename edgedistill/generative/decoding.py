"""Greedy decoding with a KV cache: one loop for a torch causal LM and for an exported model on an ONNX Runtime
session, so that the tokens compared between them come from the same decoding rule.

A backend is anything with
  empty_cache(batch) -> cache
  step(ids (N, S), mask (N, past + S): int64 numpy arrays, cache) -> (logits (N, S, V), cache)
  crop(cache, n) -> cache holding only the first n positions
TorchLM wraps a torch model (a transformers DynamicCache); kv_onnx.OrtGreedy is the ONNX Runtime one (its
cache is the present.* arrays, fed back by hand as an app does)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side (left-padded rows start at 0 at their first token)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _int64(x) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.int64, copy=False)


def _argmax(logits) -> np.ndarray:
    """The argmax over the vocabulary, taken in the backend's own arrays. The token bookkeeping around it is
    numpy: an ONNX Runtime step then pays for no torch call, and time_per_token measures the session."""
    top = logits.argmax(-1)
    return top.cpu().numpy() if isinstance(top, torch.Tensor) else top


class TorchLM:
    """A torch causal LM as a decoding backend. Position ids come from the mask, so left-padded rows start at
    position 0 at their first token, as in generate."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def empty_cache(self, batch: int):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def step(self, ids, mask, cache):
        # Without padding the mask is the causal one the model builds anyway; handed a mask, transformers
        # also builds a padding mask, which costs more than a small model's decoding step.
        padded = not bool(mask.all())
        ids, mask = torch.as_tensor(ids, device=self.device), torch.as_tensor(mask, device=self.device)
        past = mask.shape[1] - ids.shape[1]
        out = self.model(input_ids=ids, attention_mask=mask if padded else None,
                         position_ids=positions(mask)[:, past:],
                         past_key_values=cache, use_cache=True,
                         cache_position=torch.arange(past, mask.shape[1], device=self.device))
        return out.logits, out.past_key_values

    def crop(self, cache, n: int):
        cache.crop(n)
        return cache


def backend(model):
    """A torch model wrapped as a TorchLM; anything else (an OrtGreedy) is a backend already."""
    return TorchLM(model) if isinstance(model, nn.Module) else model


def greedy_tokens(lm, input_ids, attention_mask=None, max_new_tokens: int = 32, eos_token_id: int | None = None,
                  pad_token_id: int = 0) -> np.ndarray:
    """Greedy continuation of (left-padded) prompts (N, P) on a backend `lm`: the new tokens only,
    (N, max_new_tokens) int64. With `eos_token_id` a row stops after it and the rest is `pad_token_id` (fed
    back like a token, as generate does, while other rows go on); None generates every token."""
    ids = _int64(input_ids)
    mask = np.ones_like(ids) if attention_mask is None else _int64(attention_mask)
    out = np.full((len(ids), max_new_tokens), pad_token_id, dtype=np.int64)
    done = np.zeros(len(ids), dtype=bool)
    cache = lm.empty_cache(len(ids))
    for t in range(max_new_tokens):
        logits, cache = lm.step(ids, mask, cache)
        token = np.where(done, pad_token_id, _argmax(logits[:, -1]))
        out[:, t] = token
        if eos_token_id is not None:
            done |= token == eos_token_id
            if done.all():
                break
        ids = token[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((len(ids), 1), np.int64)], axis=1)
    return out


class Incremental:
    """Batch-1 decoding fed a few tokens at a time: the argmax after each fed token, and crop, with which
    speculative decoding rolls back the drafted tokens the target rejected."""

    def __init__(self, lm):
        self.lm, self.cache, self.n = lm, lm.empty_cache(1), 0

    def __len__(self) -> int:
        return self.n

    def __call__(self, ids: list[int]) -> list[int]:
        self.n += len(ids)
        logits, self.cache = self.lm.step(np.asarray([ids], np.int64), np.ones((1, self.n), np.int64), self.cache)
        return _argmax(logits[0]).tolist()

    def crop(self, n: int) -> None:
        self.cache, self.n = self.lm.crop(self.cache, n), n
