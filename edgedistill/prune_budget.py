"""Pruning budgets and the modules a recipe keeps: shared by width pruning and block (depth) pruning."""

from __future__ import annotations

from torch import nn

from edgedistill.errors import UserError


def within_budget(counts: tuple[int, int], max_macs: float | None, max_params: float | None) -> bool:
    macs, params = counts
    return (max_macs is None or macs <= max_macs) and (max_params is None or params <= max_params)


def budget_text(max_macs: float | None, max_params: float | None) -> str:
    return ", ".join(f"{v:,.0f} {k}" for k, v in (("MACs", max_macs), ("params", max_params)) if v is not None)


def check_ignore(model: nn.Module, ignore) -> None:
    modules = dict(model.named_modules())
    unknown = [n for n in ignore if n not in modules]
    if unknown:
        raise UserError(f"stages.prune.ignore: no module named {unknown[0]!r}; names look like "
                        f"{', '.join(n for n in list(modules)[1:6])}")
