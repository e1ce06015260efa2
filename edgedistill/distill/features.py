"""Intermediate-layer distillation: outputs captured by module path with forward hooks (the models'
forward stays untouched), FitNets regression through learned projections, and attention transfer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureTap:
    """Keeps the latest output of each named submodule while registered."""

    def __init__(self, model: nn.Module, paths: list[str], role: str):
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            from edgedistill.errors import UserError

            names = [n for n in modules if n][:8]
            raise UserError(f"features: the {role} has no module '{missing[0]}'; module paths look like {', '.join(names)}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._keeper(p)) for p in dict.fromkeys(paths)]

    def _keeper(self, path: str):
        def hook(_module, _inputs, output):
            self.outputs[path] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def projection(student: torch.Tensor, teacher: torch.Tensor) -> nn.Module:
    """FitNets' regressor from the student's width to the teacher's: a 1x1 conv (+BN) for feature maps, a
    linear layer for vectors. Lives in the distillation task, so it never reaches the exported student."""
    cs, ct = student.shape[1], teacher.shape[1]
    if student.dim() == 4:
        return nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct))
    return nn.Linear(cs, ct)


def _same_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger of two feature maps down to the smaller one's spatial size."""
    if a.dim() == 4 and a.shape[-2:] != b.shape[-2:]:
        size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
        a, b = F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)
    return a, b


def fitnet_loss(student: torch.Tensor, teacher: torch.Tensor, proj: nn.Module) -> torch.Tensor:
    s, t = _same_size(proj(student), teacher)
    return F.mse_loss(s.float(), t.float())


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017): mean of squared activations over channels, flattened, L2-normalized."""
    return F.normalize(feature.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Squared distance of the attention maps, batch mean. The paper's beta/2 = 500 corresponds to a
    recipe weight of about 1000 with this mean over positions."""
    s, t = _same_size(student, teacher)
    return (attention_map(s) - attention_map(t)).pow(2).mean()
