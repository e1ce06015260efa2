"""Tasks turn a batch into named losses. One DistillationTask supervises distillation, the recovery
after pruning and quantization-aware training alike; each returns {"loss", "task_loss", ..., "output"}."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.features import (FeatureTap, attention_loss, attention_probs_loss, fitnet_loss,
                                         projection)
from edgedistill.distill.losses import kd_loss


class SupervisedTask(nn.Module):
    """Plain cross-entropy on the labels (teacher training)."""

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx=None) -> dict[str, torch.Tensor]:
        out = model(x)
        ce = F.cross_entropy(out, y)
        return {"loss": ce, "task_loss": ce, "output": out}


def renormalizer(from_mean, from_std, to_mean, to_std):
    """Map inputs normalized for the student onto the teacher's normalization (same pixels, other stats)."""
    def shape(v):
        return torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)

    scale = shape(from_std) / shape(to_std)
    shift = (shape(from_mean) - shape(to_mean)) / shape(to_std)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return x * scale.to(x.device) + shift.to(x.device)
    return apply


class DistillationTask(nn.Module):
    """loss = ce_weight * CE(student, y) + kd_weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))
             + sum_i weight_i * feature_term_i(student.path_i, teacher.path_i)

    In Hinton et al.'s notation alpha = kd_weight and 1 - alpha = ce_weight; here the two weights are
    independent, so alpha-style recipes set them to sum to 1. The teacher runs in eval mode without
    gradients; FitNets projections are this task's own parameters (trained with the student, never exported).
    With `cache_teacher_logits`, teacher logits come from one pass over the training set (data without
    random augmentation), looked up by example index."""

    def __init__(self, teacher: nn.Module, temperature: float, kd_weight: float, ce_weight: float,
                 student: nn.Module | None = None, features: Sequence = (), example_input: torch.Tensor | None = None,
                 teacher_input=None, field: str = "features"):
        super().__init__()
        self.field = field  # the recipe field the feature terms came from, for error messages
        object.__setattr__(self, "teacher", teacher.eval())  # not a submodule: its weights are not ours to train
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight
        self.features = list(features)
        self.teacher_input = teacher_input or (lambda x: x)
        self.cached_logits: torch.Tensor | None = None
        self.projections = nn.ModuleDict()
        self._taps = None
        if self.features:
            if student is None or example_input is None:
                raise ValueError("feature terms need the student and an example input")
            self._taps = (FeatureTap(student, [(f.student, f.kind) for f in self.features], "student"),
                          FeatureTap(teacher, [(f.teacher, f.kind) for f in self.features], "teacher"))
            self._build_projections(student, example_input)

    def _key(self, f) -> str:
        return f"{f.kind}_{f.student}".replace(".", "_")

    @torch.no_grad()
    def _build_projections(self, student: nn.Module, example: torch.Tensor) -> None:
        was_training = student.training
        student.eval()
        student(example)
        self.teacher(self.teacher_input(example))
        student.train(was_training)
        s_out, t_out = self._taps[0].outputs, self._taps[1].outputs
        for i, f in enumerate(self.features):
            _check_fit(f, s_out[f.student, f.kind], t_out[f.teacher, f.kind], f"{self.field}[{i}]")
            if f.kind == "fitnet":
                self.projections[self._key(f)] = projection(s_out[f.student, f.kind],
                                                            t_out[f.teacher, f.kind]).to(example.device)

    @torch.no_grad()
    def cache_teacher_logits(self, x_train, batch_size: int = 1024, topk: int | None = None) -> dict:
        """One teacher pass over the training set. With `topk`, only the k largest logits per example are kept;
        the others become -inf, so the soft targets renormalize over the top k. Returns the cache's fidelity:
        the teacher probability mass (at this temperature) that the kept logits hold, averaged over examples."""
        if self.features:
            return {}  # feature terms need the teacher's live activations anyway
        from edgedistill.data.split import split_of

        train = split_of(x_train)  # a tensor or a TrainSplit, in its own order
        chunks = [self.teacher(self.teacher_input(x)).float()
                  for _, x in train.batches(torch.arange(len(train), device=train.device), batch_size)]
        logits = torch.cat(chunks)
        if topk is None or topk >= logits.shape[1]:
            self.cached_logits = logits
            return {"topk": None, "topk_mass": 1.0}
        values, indices = logits.topk(topk, dim=1)
        mass = torch.softmax(logits / self.temperature, dim=1).gather(1, indices).sum(1).mean()
        self.cached_logits = torch.full_like(logits, float("-inf")).scatter_(1, indices, values)
        return {"topk": topk, "topk_mass": float(mass)}

    def forward(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None):
        if self.cached_logits is not None and idx is not None:
            teacher_logits = self.cached_logits[idx]
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(self.teacher_input(x))
        out = student(x)
        ce = F.cross_entropy(out, y)
        kd = kd_loss(out, teacher_logits, self.temperature)
        losses = {"task_loss": ce, "kd_loss": kd}
        total = self.ce_weight * ce + self.kd_weight * kd
        if self._taps:
            s_out, t_out = self._taps[0].outputs, self._taps[1].outputs
            for f in self.features:
                key = self._key(f)
                s_feat, t_feat = s_out[f.student, f.kind], t_out[f.teacher, f.kind].detach()
                if f.kind == "fitnet":
                    term = fitnet_loss(s_feat, t_feat, self.projections[key])
                elif f.kind == "attention_probs":
                    term = attention_probs_loss(s_feat, t_feat)
                else:
                    term = attention_loss(s_feat, t_feat)
                losses[key] = term
                total = total + f.weight * term
        return {"loss": total, **losses, "output": out}

    def close(self) -> None:
        """Remove the forward hooks from teacher and student."""
        for tap in self._taps or ():
            tap.close()
        self._taps = None

    @classmethod
    def from_stage(cls, teacher: nn.Module, cfg, student: nn.Module | None = None,
                   example_input: torch.Tensor | None = None, teacher_input=None,
                   features: Sequence | None = None, field: str = "features") -> "DistillationTask":
        features = getattr(cfg, "features", ()) if features is None else features
        return cls(teacher, cfg.temperature, cfg.kd_weight, cfg.ce_weight, student=student, features=features,
                   example_input=example_input, teacher_input=teacher_input, field=field)


def _check_fit(f, student: torch.Tensor, teacher: torch.Tensor, field: str) -> None:
    """A feature term must compare like with like: feature maps or vectors for FitNets, feature maps for
    attention transfer, (N, heads, L, L) probabilities for attention_probs."""
    from edgedistill.errors import UserError

    shapes = f"{f.student} gives {tuple(student.shape)} and {f.teacher} gives {tuple(teacher.shape)}"
    if f.kind == "fitnet" and (student.dim() != teacher.dim() or student.dim() not in (2, 3, 4)):
        raise UserError(f"{field}: {shapes}; fitnet compares two feature maps, two vectors or two token sequences")
    if f.kind == "attention" and not (student.dim() == teacher.dim() == 4):
        raise UserError(f"{field}: {shapes}; attention transfer needs feature maps (N, C, H, W) on both sides")
    if f.kind == "attention_probs" and not (student.dim() == teacher.dim() == 4 and
                                            student.shape[-2:] == teacher.shape[-2:]):
        raise UserError(f"{field}: {shapes}; attention_probs needs self-attention modules of eager-attention "
                        "transformers on both sides, at the same sequence length")
