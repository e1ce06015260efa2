"""Structured pruning with torch-pruning's dependency graph: whole channels and neurons are removed (conv ->
BN -> next conv -> linear stay consistent), so the exported model really holds fewer weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgedistill.errors import UserError
from edgedistill.models import ModelSpec, count_macs_params


def _prune_copy(model: nn.Module, spec: ModelSpec, ratio: float, *, p: int, round_to: int,
                ignore: list[str]) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model)
    modules = dict(m.named_modules())
    device = next(m.parameters()).device
    pruner = tp.pruner.MetaPruner(
        m, example_inputs=spec.example_input().to(device), importance=tp.importance.GroupMagnitudeImportance(p=p),
        pruning_ratio=ratio, ignored_layers=[modules[n] for n in ignore], round_to=round_to if round_to > 1 else None,
        global_pruning=True,  # one threshold across layers: lands closer to the budget than a uniform ratio
    )
    pruner.step()
    return m


def prune_to_macs(model: nn.Module, spec: ModelSpec, keep_ratio: float, *, importance: str = "l2",
                  round_to: int = 1, ignore: list[str] = (), grid: float = 0.05, iters: int = 8) -> tuple[nn.Module, float]:
    """The least-pruned copy of `model` whose MACs are at most keep_ratio of the original.

    torch-pruning takes a channel ratio, not a MACs budget, and MACs are not monotone in that ratio (a layer
    that would keep 0 channels is silently left at full width), so a plain bisection can go wrong: scan the
    ratio upward on a grid to the first feasible point, then bisect inside that last interval.
    Returns (pruned copy, channel ratio used); the input model is untouched."""
    modules = dict(model.named_modules())
    unknown = [n for n in ignore if n not in modules]
    if unknown:
        raise UserError(f"stages.prune.ignore: no module named {unknown[0]!r}; names look like "
                        f"{', '.join(n for n in list(modules)[1:6])}")
    # The classifier's outputs are the classes: never prune them.
    classifier = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    kw = dict(p=1 if importance == "l1" else 2, round_to=round_to, ignore=[classifier, *ignore])
    budget = keep_ratio * count_macs_params(model, spec)[0]
    was_training = model.training
    if keep_ratio >= 1:
        return copy.deepcopy(model), 0.0
    lo, best, hi = 0.0, None, None
    for step in range(1, int(0.95 / grid) + 1):
        ratio = step * grid
        candidate = _prune_copy(model, spec, ratio, **kw)
        if count_macs_params(candidate, spec)[0] <= budget:
            best, hi = candidate, ratio
            break
        lo = ratio
    if best is None:
        raise UserError(f"stages.prune.macs_ratio: {keep_ratio} cannot be reached with channels rounded to "
                        f"{round_to}; raise macs_ratio or lower stages.prune.round_to")
    for _ in range(iters):  # lo is infeasible (or 0), hi feasible
        mid = (lo + hi) / 2
        candidate = _prune_copy(model, spec, mid, **kw)
        if count_macs_params(candidate, spec)[0] <= budget:
            best, hi = candidate, mid
        else:
            lo = mid
    model.train(was_training)
    best.train(was_training)  # building a pruner leaves the model in eval mode
    return best, hi


def widths(model: nn.Module) -> list[int]:
    """Output channels/features of each conv and linear layer, the classifier last."""
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reshape_to(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink a freshly built (unpruned) model to the shapes in a pruned state_dict, then load it strictly.

    This restores a pruned model from plain tensors (weights_only), where torch-pruning's own
    tp.state_dict pickles whole modules."""
    for prefix, mod in model.named_modules():
        pre = f"{prefix}." if prefix else ""
        for name, p in list(mod.named_parameters(recurse=False)):
            t = state_dict.get(pre + name)
            if t is not None and p.shape != t.shape:
                setattr(mod, name, nn.Parameter(torch.empty_like(t, device=p.device), requires_grad=p.requires_grad))
        for name, b in list(mod.named_buffers(recurse=False)):
            t = state_dict.get(pre + name)
            if b is not None and t is not None and b.shape != t.shape:
                mod.register_buffer(name, torch.empty_like(t, device=b.device))
        if isinstance(mod, nn.modules.conv._ConvNd):
            mod.out_channels, mod.in_channels = mod.weight.shape[0], mod.weight.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            mod.num_features = mod.weight.shape[0] if mod.weight is not None else mod.running_mean.shape[0]
    model.load_state_dict(state_dict, strict=True)
    return model
