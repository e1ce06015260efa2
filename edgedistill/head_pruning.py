"""Structured pruning of transformers: whole attention heads and FFN neurons are removed, the attention modules
and the config rewritten (config.pruned_heads, config.intermediate_size), so the pruned model saves with
save_pretrained, reloads with from_pretrained and exports smaller.

transformers' own prune_heads does the head surgery; FFN neurons are cut to the same count in every layer
because the config holds one intermediate_size for all layers."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from edgedistill.errors import UserError
from edgedistill.models import hf


def _group_norm(tensors: list[torch.Tensor], p: int) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors]).norm(p)


def _scores(model: hf.TextClassifier, importance: str, calibration) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, one score per remaining head and per FFN neuron: the L1/L2 norm of every weight that goes
    with it (its Q/K/V rows and output-projection columns; its FFN row and column), or with `taylor` the
    summed |weight x gradient| of the cross-entropy on a calibration batch (Molchanov et al. 2019)."""
    if importance == "bn_scale":
        raise UserError("stages.prune.importance: bn_scale needs BatchNorm layers, transformers have none; "
                        "use l2, l1 or taylor")
    taylor = importance == "taylor"
    if taylor:
        x, y = calibration
        model.zero_grad(set_to_none=True)
        model.eval()
        F.cross_entropy(model(x), y).backward()

    def value(w: torch.Tensor) -> torch.Tensor:
        return (w * w.grad).detach() if taylor else w.detach()

    p = 1 if importance in ("l1", "taylor") else 2
    heads, neurons = [], []
    for layer in hf.layers(model.hf):
        att, d = layer.attention.self, layer.attention.self.attention_head_size
        out = layer.attention.output.dense
        per_head = []
        for h in range(att.num_attention_heads):
            rows = slice(h * d, (h + 1) * d)
            parts = [value(lin.weight)[rows] for lin in (att.query, att.key, att.value)]
            per_head.append(_group_norm([*parts, value(out.weight)[:, rows]], p))
        heads.append(torch.stack(per_head))
        inter, down = layer.intermediate.dense, layer.output.dense
        w_in, w_out = value(inter.weight), value(down.weight)
        neurons.append(w_in.abs().pow(p).sum(1) + w_out.abs().pow(p).sum(0))
    model.zero_grad(set_to_none=True)
    return heads, neurons


def prune_copy(model: hf.TextClassifier, ratio: float, *, importance: str, round_to: int, global_pruning: bool,
               calibration=None) -> hf.TextClassifier:
    """A copy with about `ratio` of the heads and FFN neurons removed (each layer keeps at least one head;
    the FFN width is rounded up to `round_to`). Global: heads ranked across layers by their score relative
    to their layer's mean; per layer: the same share from every layer."""
    m = copy.deepcopy(model)
    heads, neurons = _scores(m, importance, calibration)
    cut: dict[int, list[int]] = {}
    if global_pruning:
        ranked = sorted((float(s / scores.mean().clamp_min(1e-12)), i, h)
                        for i, scores in enumerate(heads) for h, s in enumerate(scores))
        left = [len(s) for s in heads]
        for _, i, h in ranked[: round(ratio * len(ranked))]:
            if left[i] > 1:
                cut.setdefault(i, []).append(h)
                left[i] -= 1
    else:
        for i, scores in enumerate(heads):
            n = min(round(ratio * len(scores)), len(scores) - 1)
            cut[i] = scores.argsort()[:n].tolist()
    layers = hf.layers(m.hf)
    original = {}  # transformers numbers heads as in the unpruned model
    for i, positions in cut.items():
        att = layers[i].attention
        alive = [h for h in range(att.self.num_attention_heads + len(att.pruned_heads)) if h not in att.pruned_heads]
        original[i] = [alive[p] for p in positions]
    hf.prune_heads(m, original)
    width = neurons[0].numel()
    keep = min(width, max(round_to, math.ceil((1 - ratio) * width / round_to) * round_to))
    if keep < width:
        hf.keep_ffn(m, {i: s.topk(keep).indices for i, s in enumerate(neurons)})
    return m
