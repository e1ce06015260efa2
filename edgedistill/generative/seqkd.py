"""Sequence-level knowledge distillation (Kim & Rush, 2016): the student learns the teacher's own outputs.

The teacher decodes continuations of training prompts once (greedy by default: Kim & Rush's beam-search
mode seeking, at beam 1); the student is trained with token cross-entropy on those sequences, optionally
plus word-level KD (a KL to the teacher's per-token distribution at temperature T), either from sparse
top-k teacher logits cached with the sequences or from a live teacher.

Sequence set layout (a dict of tensors; torch.save-able, loads with weights_only=True), N rows, L columns:
  input_ids      (N, L) int64  prompt, then the teacher's continuation (ending with EOS when it stopped),
                               then the pad id: right-padded, whatever the prompts' padding was
  attention_mask (N, L) int64  1 on prompt and continuation
  prompt_lengths (N,)   int64  row i's prompt is input_ids[i, :prompt_lengths[i]]
with logits_topk=k, aligned with the model's outputs (position t predicts token t + 1):
  topk_values    (N, L, k) float16  the teacher's k largest logits at every position t with token t + 1
                                    in the row (prompt positions too), 0 elsewhere
  topk_indices   (N, L, k) int32    their token ids
  topk_mass      ()        float32  the teacher probability (T = 1) those k logits hold, mean over the
                                    continuation's tokens: the fidelity of the cache"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.losses import kd_loss
from edgedistill.generative.decoding import positions


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else set(eos if isinstance(eos, (list, tuple)) else [eos])


def _pad_id(model) -> int:
    config = model.generation_config
    for pad in (config.pad_token_id, config.eos_token_id):
        if pad is not None:
            return pad if isinstance(pad, int) else pad[0]
    return 0


def _left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    return ids, mask


def _cut(continuation: torch.Tensor, eos: set[int]) -> torch.Tensor:
    """The continuation up to and including its first EOS (generate pads finished rows after it)."""
    for j, token in enumerate(continuation.tolist()):
        if token in eos:
            return continuation[: j + 1]
    return continuation


@torch.no_grad()
def teacher_sequences(teacher: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      max_new_tokens: int, *, do_sample: bool = False, top_k: int | None = None,
                      temperature: float = 1.0, num_beams: int = 1, batch_size: int = 64, seed: int = 0,
                      logits_topk: int | None = None) -> dict[str, torch.Tensor]:
    """The teacher's continuations of the prompts (any padding: the mask says which tokens are prompt),
    as a sequence set (layout in the module docstring). Greedy by default; beam search with num_beams > 1,
    sampling with do_sample (top_k, temperature), seeded without touching the caller's RNG."""
    teacher.eval()
    device = next(teacher.parameters()).device
    pad, eos = _pad_id(teacher), _eos_ids(teacher)
    prompts = [row[m.bool()] for row, m in zip(prompt_ids.cpu(), prompt_mask.cpu())]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    sampling = {"do_sample": True, "top_k": top_k, "temperature": temperature} if do_sample else \
               {"do_sample": False, "top_k": None, "temperature": None}
    rows = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            ids, mask = _left_pad(prompts[i : i + batch_size], pad)  # generation appends on the right
            out = teacher.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=max_new_tokens, num_beams=num_beams, pad_token_id=pad,
                                   top_p=None, **sampling).cpu()
            for prompt, generated in zip(prompts[i : i + batch_size], out[:, ids.shape[1]:]):
                rows.append(torch.cat([prompt, _cut(generated, eos)]))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)], attention_mask[i, : len(r)] = r, 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask,
           "prompt_lengths": torch.tensor([len(p) for p in prompts], dtype=torch.long)}
    if logits_topk:
        out.update(_topk_cache(teacher, out, logits_topk, batch_size))
    return out


def target_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor, include_prompt: bool) -> torch.Tensor:
    """(N, L - 1) bool: which output positions t are trained (token t + 1 is real and, unless include_prompt,
    is part of the teacher's continuation)."""
    real = attention_mask[:, 1:].bool()
    if include_prompt:
        return real
    t = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)
    return real & (t[None, :] >= prompt_lengths[:, None])


def _topk_cache(teacher: nn.Module, seqs: dict, k: int, batch_size: int) -> dict[str, torch.Tensor]:
    device = next(teacher.parameters()).device
    n, width = seqs["input_ids"].shape
    k = min(k, teacher.get_output_embeddings().weight.shape[0])
    values = torch.zeros((n, width, k), dtype=torch.float16)
    indices = torch.zeros((n, width, k), dtype=torch.int32)
    mass, count = 0.0, 0
    for i in range(0, n, batch_size):
        ids, mask = seqs["input_ids"][i : i + batch_size], seqs["attention_mask"][i : i + batch_size]
        keep = int(mask.sum(1).max())
        ids, mask = ids[:, :keep].to(device), mask[:, :keep].to(device)
        logits = teacher(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits.float()
        real = torch.zeros_like(mask, dtype=torch.bool)
        real[:, :-1] = mask[:, 1:].bool()  # position t has a next token
        v, j = logits.topk(k, dim=-1)
        v, j = v * real[..., None], j * real[..., None]
        values[i : i + len(ids), :keep], indices[i : i + len(ids), :keep] = v.half().cpu(), j.int().cpu()
        generated = target_mask(mask.cpu(), seqs["prompt_lengths"][i : i + len(ids)], False)
        if generated.any():
            m = _mass(logits[:, :-1][generated.to(device)], k, 1.0)
            mass, count = mass + float(m.sum()), count + len(m)
    return {"topk_values": values, "topk_indices": indices,
            "topk_mass": torch.tensor(mass / max(count, 1), dtype=torch.float32)}


def _mass(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return probs.topk(min(k, probs.shape[-1]), dim=-1).values.sum(-1)


def topk_mass(logits: torch.Tensor, k: int, temperature: float = 1.0, mask: torch.Tensor | None = None) -> float:
    """The teacher probability mass (at `temperature`) that its k largest logits hold, averaged over the
    positions in `mask` (all when None): what a top-k cache keeps of the soft targets."""
    if mask is not None:
        logits = logits[mask.bool()]
    return float(_mass(logits.reshape(-1, logits.shape[-1]), k, temperature).mean())


def sparse_logits(values: torch.Tensor, indices: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Dense logits from a top-k cache: -inf off the top k, so the soft targets renormalise over the k."""
    dense = torch.full((*values.shape[:-1], vocab_size), float("-inf"), device=values.device)
    return dense.scatter_(-1, indices.long(), values.float())


class SeqKDTask(nn.Module):
    """loss = ce_weight * CE(student, teacher's tokens) + kd_weight * T^2 * KL(p_teacher/T || p_student/T),
    per token over the continuation (and the prompt with include_prompt), never over padding.

    Called as task(student, x, y, idx) like DistillationTask: x = rows of the set's input_ids, idx = their
    row numbers in it (the masks and cached logits are looked up by them), y unused. The word-level term
    uses the set's top-k logits when it has them (use_cache), else a live teacher forward; with kd_weight 0
    the teacher is never run. Neither the teacher nor the set is state of this module (checkpoints stay small)."""

    def __init__(self, teacher: nn.Module | None, sequences: dict[str, torch.Tensor], temperature: float = 1.0,
                 kd_weight: float = 1.0, ce_weight: float = 1.0, include_prompt: bool = False,
                 use_cache: bool = True):
        super().__init__()
        cached = use_cache and "topk_values" in sequences
        if kd_weight and teacher is None and not cached:
            raise ValueError("word-level KD needs the teacher or a sequence set with top-k logits")
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: its weights are not ours to train
        self.sequences = sequences
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight
        self.include_prompt, self.cached = include_prompt, cached
        self._on: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _rows(self, idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._on:  # one copy per device, not one transfer per step
            self._on[device] = {k: v.to(device) for k, v in self.sequences.items() if v.dim() > 0}
        on = self._on[device]
        idx = idx.to(device)
        return {k: v[idx] for k, v in on.items()}

    def forward(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if idx is None:
            raise ValueError("SeqKDTask needs idx, the rows' numbers in the sequence set")
        rows = self._rows(idx, x.device)
        mask = rows["attention_mask"]
        keep = max(int(mask.sum(1).max()), 2)  # columns that are padding in every row change nothing
        x, mask = x[:, :keep], mask[:, :keep]
        logits = student(input_ids=x, attention_mask=mask, position_ids=positions(mask)).logits
        sel = target_mask(mask, rows["prompt_lengths"], self.include_prompt)
        s_logits = logits[:, :-1][sel]
        ce = F.cross_entropy(s_logits.float(), x[:, 1:][sel])
        if self.kd_weight:
            if self.cached:
                t_logits = sparse_logits(rows["topk_values"][:, : keep - 1][sel],
                                         rows["topk_indices"][:, : keep - 1][sel], logits.shape[-1])
            else:
                with torch.no_grad():
                    t_logits = self.teacher(input_ids=x, attention_mask=mask,
                                            position_ids=positions(mask)).logits[:, :-1][sel]
            kd = kd_loss(s_logits, t_logits, self.temperature)
        else:
            kd = ce.new_zeros(())
        return {"loss": self.ce_weight * ce + self.kd_weight * kd, "task_loss": ce, "kd_loss": kd,
                "output": logits}
