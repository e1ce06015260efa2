"""Intermediate-layer distillation: outputs captured by module path with forward hooks (the models'
forward stays untouched), FitNets regression through learned projections, attention transfer for CNNs and
attention-probability matching for transformers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureTap:
    """Keeps the latest output of each named submodule while registered, keyed by (path, kind).

    For kind "attention_probs" the path names a self-attention module (eager attention): the tap reads the
    input of its attention dropout, i.e. the probabilities before dropout, or else the module's second output."""

    def __init__(self, model: nn.Module, taps: list[tuple[str, str]], role: str):
        modules = dict(model.named_modules())
        missing = [p for p, _ in taps if p not in modules]
        if missing:
            from edgedistill.errors import UserError

            names = [n for n in modules if n][:8]
            raise UserError(f"features: the {role} has no module '{missing[0]}'; module paths look like {', '.join(names)}")
        self.outputs: dict[tuple[str, str], torch.Tensor] = {}
        self._handles = []
        for path, kind in dict.fromkeys(taps):
            dropout = modules.get(f"{path}.dropout")
            if kind == "attention_probs" and isinstance(dropout, nn.Dropout):
                self._handles.append(dropout.register_forward_hook(self._keeper((path, kind), from_input=True)))
            else:
                self._handles.append(modules[path].register_forward_hook(self._keeper((path, kind))))

    def _keeper(self, key: tuple[str, str], from_input: bool = False):
        index = 1 if key[1] == "attention_probs" else 0

        def hook(_module, inputs, output):
            found = inputs[0] if from_input else output
            self.outputs[key] = found[index] if isinstance(found, (tuple, list)) else found
        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def projection(student: torch.Tensor, teacher: torch.Tensor) -> nn.Module:
    """FitNets' regressor from the student's width to the teacher's: a 1x1 conv (+BN) for feature maps, a
    linear layer for vectors. Lives in the distillation task, so it never reaches the exported student."""
    if student.dim() == 4:
        cs, ct = student.shape[1], teacher.shape[1]
        return nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct))
    return nn.Linear(student.shape[-1], teacher.shape[-1])  # vectors, or a transformer's (N, L, H) states


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


def attention_probs_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of self-attention probabilities (N, heads, L, L), per attention row, averaged
    over examples, heads and rows (TinyBERT matches each head; MiniLM uses this KL form). With different
    head counts the head-averaged maps are compared."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    s, t = student.float().clamp_min(1e-9), teacher.float().clamp_min(1e-9)
    return (t * (t.log() - s.log())).sum(-1).mean()


def transformer_layer_terms(match, student: nn.Module, teacher: nn.Module, field: str) -> list:
    """TinyBERT's layer mapping as feature terms: the embeddings' output and each student layer's hidden
    states (FitNets, projected where widths differ) and attention probabilities, against the teacher layer
    mapping[i] (uniform: the last layer of each of L_s equal blocks of the teacher, (i+1)*L_t/L_s - 1)."""
    from edgedistill.errors import UserError
    from edgedistill.models import hf
    from edgedistill.recipe import FeatureMatch

    if not (isinstance(student, hf.TextClassifier) and isinstance(teacher, hf.TextClassifier)):
        raise UserError(f"{field}.layer_match: applies to Hugging Face models (arch hf); use features for others")
    n_s, n_t = len(hf.layers(student.hf)), len(hf.layers(teacher.hf))
    mapping = [(i + 1) * n_t // n_s - 1 for i in range(n_s)] if match.mapping == "uniform" else list(match.mapping)
    if len(mapping) != n_s or any(not 0 <= j < n_t for j in mapping):
        raise UserError(f"{field}.layer_match.mapping: {mapping} needs one teacher layer (0..{n_t - 1}) for each "
                        f"of the student's {n_s} layers")
    terms = []
    if match.hidden_weight:
        terms.append(FeatureMatch(student=hf.embeddings_path(student), teacher=hf.embeddings_path(teacher),
                                  kind="fitnet", weight=match.hidden_weight))
        terms += [FeatureMatch(student=hf.layer_path(student, i), teacher=hf.layer_path(teacher, j), kind="fitnet",
                               weight=match.hidden_weight) for i, j in enumerate(mapping)]
    if match.attention_weight:
        terms += [FeatureMatch(student=hf.layer_path(student, i, "attention.self"),
                               teacher=hf.layer_path(teacher, j, "attention.self"), kind="attention_probs",
                               weight=match.attention_weight) for i, j in enumerate(mapping)]
    return terms
