"""Tasks turn a batch into named losses. One DistillationTask supervises distillation, the recovery
after pruning and quantization-aware training alike; each returns {"loss", "task_loss", ..., "output"}."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.losses import kd_loss


class SupervisedTask:
    """Plain cross-entropy on the labels (teacher training)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(x)
        ce = F.cross_entropy(out, y)
        return {"loss": ce, "task_loss": ce, "output": out}


class DistillationTask:
    """loss = ce_weight * CE(student, y) + kd_weight * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    In the papers' notation (Hinton et al.), alpha = kd_weight and 1 - alpha = ce_weight; here the two
    weights are independent, so alpha-style recipes set them to sum to 1. The teacher runs in eval mode
    without gradients."""

    def __init__(self, teacher: nn.Module, temperature: float, kd_weight: float, ce_weight: float):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.kd_weight = kd_weight
        self.ce_weight = ce_weight

    def __call__(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        out = student(x)
        ce = F.cross_entropy(out, y)
        kd = kd_loss(out, teacher_logits, self.temperature)
        return {"loss": self.ce_weight * ce + self.kd_weight * kd, "task_loss": ce, "kd_loss": kd, "output": out}

    @classmethod
    def from_stage(cls, teacher: nn.Module, cfg) -> "DistillationTask":
        return cls(teacher, cfg.temperature, cfg.kd_weight, cfg.ce_weight)
