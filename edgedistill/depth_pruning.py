"""Depth pruning: whole residual blocks, or a transformer's encoder layers, removed (ModelOpt's and
Minitron's "depth" axis beside width).

A block that maps a tensor to one of the same shape inside an `nn.Sequential` (a ResNet stage's identity-
shortcut blocks) can be dropped: the stage then passes its input on. Latency falls by the block's whole cost
on every runtime, with no channel-alignment padding to eat the gain (the width pruner's widths are rounded to
the target's block so that they pay; a removed block always pays).

Which blocks go: greedily the one whose removal changes the model's own predictions least per MAC saved
(KL divergence of its softmax, with the block skipped, from the intact model's on a calibration batch),
re-scored as blocks go, because removing neighbours compounds. The removed block becomes a
`RemovedBlock` (an identity), so every other parameter keeps its name and a checkpoint restores by name. A
transformer's remaining layers are renumbered and config.num_hidden_layers set, so it reloads with
`from_pretrained`."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserError
from edgedistill.models import ModelSpec, count_macs_params


CALIBRATION = 128  # images scored per forward pass: enough to rank blocks, cheap enough to re-rank often


class RemovedBlock(nn.Identity):
    """Where a pruned block was: its input passes through (exports as no node at all)."""


def _holds_weights(module: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in module.parameters())


def _children(model: nn.Module):
    """(path, module) of every child of an `nn.Sequential` that holds conv/linear weights: the candidates."""
    for seq_name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            for child_name, child in seq.named_children():
                if _holds_weights(child):
                    yield (f"{seq_name}.{child_name}" if seq_name else child_name), child


def removable_blocks(model: nn.Module, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The candidates that map one tensor to one of the same shape, in forward order: name -> the input it
    got from one example."""
    seen: dict[str, torch.Tensor | None] = {}
    hooks = []
    for name, child in _children(model):
        def hook(_m, inputs, output, name=name):
            ok = (len(inputs) == 1 and isinstance(inputs[0], torch.Tensor)
                  and isinstance(output, torch.Tensor) and output.shape == inputs[0].shape)
            seen[name] = inputs[0] if ok else None
        hooks.append(child.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(spec.example_input().to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: x for n, x in seen.items() if x is not None}


def removed_blocks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, RemovedBlock)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def drop_absent(model: nn.Module, state_dict: dict) -> nn.Module:
    """Replace, in place, the blocks that a block-pruned `state_dict` no longer holds by RemovedBlock."""
    for name in [n for n, _ in _children(model) if not any(k.startswith(f"{n}.") for k in state_dict)]:
        _replace(model, name, RemovedBlock())
    return model


class SkippedLayer(nn.Module):
    """A transformer encoder layer's stand-in while the pruner ranks layers: the hidden states pass through
    (the encoder reads a layer's output as a tuple). The kept layers are rebuilt without it afterwards."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


def _layers(model: nn.Module, spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """A transformer's encoder layers: path -> (MACs, params) each."""
    from edgedistill.models import hf

    return {hf.layer_path(model, i): (hf.layer_macs(layer, spec.input_shape[0]), sum(p.numel() for p in layer.parameters()))
            for i, layer in enumerate(hf.layers(model.hf))}


@torch.no_grad()
def _damage(model: nn.Module, name: str, x: torch.Tensor, reference: torch.Tensor, stand_in: type) -> float:
    """KL(intact || with `name` skipped) of the softmax outputs, averaged over the calibration batch."""
    block = model.get_submodule(name)
    _replace(model, name, stand_in())
    try:
        logp = F.log_softmax(model(x).float(), dim=-1)
    finally:
        _replace(model, name, block)
    return float(F.kl_div(logp, reference, log_target=True, reduction="batchmean"))


def prune_blocks(model: nn.Module, spec: ModelSpec, *, max_macs: float | None = None, max_params: float | None = None,
                 ignore=(), calibration=None) -> nn.Module:
    """A copy of `model` with residual blocks (a transformer's encoder layers) removed, cheapest damage per MAC
    first, until at most `max_macs` MACs and `max_params` parameters remain. The input model is untouched."""
    if calibration is None:
        raise ValueError("block pruning needs a calibration batch")
    import torch_pruning as tp

    from edgedistill.prune_budget import budget_text, check_ignore, within_budget

    check_ignore(model, ignore)
    m = copy.deepcopy(model)
    was_training = m.training
    m.eval()
    if spec.is_text:
        every, stand_in = _layers(m, spec), SkippedLayer
    else:  # a block's cost does not depend on which others go: count each once, on the input it gets
        every = {n: tp.utils.count_ops_and_params(m.get_submodule(n), inp)
                 for n, inp in removable_blocks(m, spec).items()}
        stand_in = RemovedBlock
    cost = {n: c for n, c in every.items() if not any(n == i or n.startswith(f"{i}.") for i in ignore)}
    if not cost:
        raise UserError("stages.prune.structure: blocks found no removable block (a shape-preserving block with "
                        "weights inside an nn.Sequential, e.g. a ResNet stage); use structure: channels")
    keep_one = int(spec.is_text and len(cost) == len(every))  # an encoder keeps one layer at least

    def score(name: str) -> float:
        return _damage(m, name, x, reference, stand_in) / max(cost[name][0], 1)

    x = calibration[0][:CALIBRATION].to(next(m.parameters()).device)
    with torch.no_grad():
        reference = F.log_softmax(m(x).float(), dim=-1)
    macs, params = count_macs_params(m, spec)
    scores = {n: score(n) for n in cost}
    while not within_budget((macs, params), max_macs, max_params):
        if len(scores) <= keep_one:
            raise UserError(f"stages.prune: the budget ({budget_text(max_macs, max_params)}) cannot be reached by "
                            f"removing blocks ({macs:,} MACs with every removable block gone); relax the budget or "
                            "use structure: channels")
        # Lazy greedy: scores only grow as the network gets shallower (mostly), so re-score the best stale one
        # until it stays best; a few forward passes per removal instead of one per candidate.
        fresh = set()
        while (best := min(scores, key=scores.get)) not in fresh:
            scores[best] = score(best)
            fresh.add(best)
        _replace(m, best, stand_in())
        del scores[best]
        macs, params = macs - cost[best][0], params - cost[best][1]
    if spec.is_text:  # the encoder keeps its other layers, renumbered, and the config says how many
        from edgedistill.models import hf

        hf.keep_layers(m, [i for i, layer in enumerate(hf.layers(m.hf)) if not isinstance(layer, SkippedLayer)])
    m.train(was_training)
    return m
