"""Structured pruning with torch-pruning's dependency graph: whole channels and neurons are removed (conv ->
BN -> next conv -> linear stay consistent), so the exported model really holds fewer weights."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from edgedistill.errors import UserError
from edgedistill.models import ModelSpec, count_macs_params
from edgedistill.prune_budget import budget_text, check_ignore, within_budget


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if kind == "l1" else 2)


def _prune_copy(model: nn.Module, spec: ModelSpec, ratio: float, *, importance: str, round_to: int,
                ignore: list[str], global_pruning: bool, calibration) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model)
    modules = dict(m.named_modules())
    device = next(m.parameters()).device
    if importance == "taylor":  # first-order Taylor: |weight * gradient| of the loss on a calibration batch
        x, y = calibration
        m.zero_grad(set_to_none=True)
        m.eval()
        torch.nn.functional.cross_entropy(m(x), y).backward()
    # cls tokens and position embeddings are pruned along the residual width, as they must be
    warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
    pruner = tp.pruner.MetaPruner(
        m, example_inputs=spec.example_input().to(device), importance=_importance(importance),
        pruning_ratio=ratio, ignored_layers=[modules[n] for n in ignore], round_to=round_to if round_to > 1 else None,
        global_pruning=global_pruning,  # one threshold across layers lands closer to a budget than a uniform ratio
    )
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m


def prune_step(model: nn.Module, spec: ModelSpec, cfg, *, round_to: int, calibration, keep: list[str] = (),
               max_macs: float | None = None, max_params: float | None = None) -> nn.Module:
    """A copy of `model` pruned to the budgets by the prune stage's settings (`cfg`): whole channels, heads and
    neurons (`structure: channels`, widths rounded to `round_to`) or whole residual blocks / encoder layers
    (`structure: blocks`). `keep`: layers whose outputs the model's family says must keep their width."""
    if cfg.structure == "blocks":
        from edgedistill.depth_pruning import prune_blocks

        return prune_blocks(model, spec, max_macs=max_macs, max_params=max_params, ignore=cfg.ignore,
                            calibration=calibration)
    return prune_to_budget(model, spec, max_macs=max_macs, max_params=max_params, importance=cfg.importance,
                           round_to=round_to, ignore=[*cfg.ignore, *keep], global_pruning=cfg.scope == "global",
                           calibration=calibration)[0]


def prune_to_budget(model: nn.Module, spec: ModelSpec, *, max_macs: float | None = None,
                    max_params: float | None = None, importance: str = "l2", round_to: int = 1,
                    ignore: list[str] = (), global_pruning: bool = True, calibration=None,
                    grid: float = 0.05, iters: int = 8, depth: int = 0) -> tuple[nn.Module, float]:
    """The least-pruned copy of `model` with at most `max_macs` MACs and `max_params` parameters.

    torch-pruning takes a channel ratio, not a budget, and MACs are not monotone in that ratio (a layer
    that would keep 0 channels is silently left at full width), so a plain bisection can go wrong: scan the
    ratio upward on a grid to the first feasible point, then bisect inside that last interval.
    Returns (pruned copy, channel ratio of the last pruning pass); the input model is untouched."""
    if spec.is_text:  # attention heads and FFN neurons
        from edgedistill import head_pruning

        if ignore:
            raise UserError("stages.prune.ignore: not supported for transformers (heads and FFN widths are "
                            "pruned in every layer); remove it")

        def prune(m: nn.Module, ratio: float) -> nn.Module:
            return head_pruning.prune_copy(m, ratio, importance=importance, round_to=round_to,
                                           global_pruning=global_pruning, calibration=calibration)
    else:
        check_ignore(model, ignore)
        if importance == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise UserError("stages.prune.importance: bn_scale needs BatchNorm layers, this model has none; use l2 or taylor")
        # The classifier's outputs are the classes: never prune them.
        classifier = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        kw = dict(importance=importance, round_to=round_to, ignore=[classifier, *ignore],
                  global_pruning=global_pruning, calibration=calibration)

        def prune(m: nn.Module, ratio: float) -> nn.Module:
            return _prune_copy(m, spec, ratio, **kw)
    if importance == "taylor" and calibration is None:
        raise ValueError("taylor importance needs a calibration batch")
    was_training = model.training

    def within(counts: tuple[int, int]) -> bool:
        return within_budget(counts, max_macs, max_params)

    model_counts = count_macs_params(model, spec)
    if within(model_counts):
        return copy.deepcopy(model), 0.0
    lo, best, hi, smallest = 0.0, None, None, None
    for step in range(1, int(0.95 / grid) + 1):
        ratio = step * grid
        candidate = prune(model, ratio)
        counts = count_macs_params(candidate, spec)  # once per candidate: feasibility and the smallest seen
        if within(counts):
            best, hi = candidate, ratio
            break
        lo = ratio
        if smallest is None or counts[0] < smallest[0]:
            smallest = (counts[0], candidate)
    if best is None and depth < 3 and smallest and smallest[0] < model_counts[0]:
        # Rounding can stall a one-shot ratio short of the budget (a layer rounded to 0 channels stays whole,
        # so higher ratios undo earlier cuts): prune the smallest copy again, as iterative pruning would.
        model.train(was_training)
        smallest[1].train(was_training)
        return prune_to_budget(smallest[1], spec, max_macs=max_macs, max_params=max_params, importance=importance,
                               round_to=round_to, ignore=ignore, global_pruning=global_pruning,
                               calibration=calibration, grid=grid, iters=iters, depth=depth + 1)
    if best is None:
        raise UserError(f"stages.prune: the budget ({budget_text(max_macs, max_params)}) cannot be reached with "
                        f"channels rounded to {round_to} and these layers kept; relax the budget or lower "
                        "stages.prune.round_to")
    for _ in range(iters):  # lo is infeasible (or 0), hi feasible
        mid = (lo + hi) / 2
        candidate = prune(model, mid)
        if within(count_macs_params(candidate, spec)):
            best, hi = candidate, mid
        else:
            lo = mid
    model.train(was_training)
    best.train(was_training)  # building a pruner leaves the model in eval mode
    return best, hi


def prune_to_macs(model: nn.Module, spec: ModelSpec, keep_ratio: float, **kw) -> tuple[nn.Module, float]:
    """prune_to_budget with a MACs budget relative to the model's own MACs."""
    if keep_ratio >= 1:
        return copy.deepcopy(model), 0.0
    return prune_to_budget(model, spec, max_macs=keep_ratio * count_macs_params(model, spec)[0], **kw)


def widths(model: nn.Module) -> list[int]:
    """Output channels/features of each conv and linear layer, the classifier last; for transformers, the
    heads of each layer and the FFN width."""
    from edgedistill.models import hf

    if isinstance(model, hf.TextClassifier):
        shape = hf.shape(model)
        return [*shape["heads"], shape["intermediate_size"], model.hf.config.num_labels]
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reshape_to(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink a freshly built (unpruned) model to the blocks and shapes in a pruned state_dict, then load it
    strictly.

    This restores a pruned model from plain tensors (weights_only), where torch-pruning's own
    tp.state_dict pickles whole modules."""
    from edgedistill.models import hf

    if isinstance(model, hf.TextClassifier):  # heads and FFN widths, through transformers' own surgery
        hf.reshape_to(model, state_dict)
        model.load_state_dict(state_dict, strict=True)
        return model
    from edgedistill.depth_pruning import drop_absent

    drop_absent(model, state_dict)  # whole blocks first, then the widths of what is left
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
            if mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels:  # depthwise stays depthwise
                mod.groups = mod.weight.shape[0]
            mod.out_channels, mod.in_channels = mod.weight.shape[0], mod.weight.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            mod.num_features = mod.weight.shape[0] if mod.weight is not None else mod.running_mean.shape[0]
    model.load_state_dict(state_dict, strict=True)
    return model
