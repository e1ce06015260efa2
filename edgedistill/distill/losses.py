"""Distillation loss terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015) soft-target loss: T^2 * KL(p_teacher || p_student) at temperature T, batch mean.

    The T^2 factor keeps the gradient scale of the soft targets independent of T, so `kd_weight` and
    `ce_weight` keep their meaning when the temperature changes."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    # Sparse (top-k) teacher logits are -inf elsewhere: p_teacher is 0 there and contributes nothing.
    terms = torch.exp(log_p_teacher) * (log_p_teacher - log_p_student)
    terms = torch.where(torch.isinf(log_p_teacher), torch.zeros_like(terms), terms)
    return terms.sum(-1).mean() * (t * t)
