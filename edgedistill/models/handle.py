"""ModelHandle: a torch module plus what travels with it through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects and produces; the same for teacher and student of one task."""

    task: str  # "image-classification", "text-classification" or "text-generation" (causal LM; classes = vocabulary)
    input_shape: tuple[int, ...]  # one example, e.g. (1, 8, 8), or (max_length,) token ids
    num_classes: int
    labels: tuple[str, ...]
    mean: tuple[float, ...]  # images: inputs are (pixel/255 - mean) / std, per channel
    std: tuple[float, ...]
    pad_id: int | None = None  # text: the padding token id (the attention mask comes from it)

    @property
    def is_text(self) -> bool:
        return self.task == "text-classification"

    @property
    def is_lm(self) -> bool:
        return self.task == "text-generation"

    def example_input(self, batch: int = 1) -> torch.Tensor:
        if self.is_text:  # any token that is not padding
            return torch.full((batch, *self.input_shape), 2 if self.pad_id == 1 else 1, dtype=torch.long)
        return torch.zeros((batch, *self.input_shape))


@dataclass
class ModelHandle:
    module: nn.Module
    spec: ModelSpec
    arch: str
    channels: list[int]


def count_macs_params(module: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """Multiply-accumulates for one example, and parameter count (torch-pruning's counter; for
    transformers, an exact count at the recipe's sequence length)."""
    import torch_pruning as tp

    if spec.is_lm:  # per generated token: every weight matrix once (the attention over the cache aside)
        params = sum(p.numel() for p in module.parameters())
        matrices = (m.weight for m in module.modules()
                    if isinstance(getattr(m, "weight", None), torch.Tensor) and not isinstance(m, nn.Embedding))
        return sum(w.numel() for w in matrices if w.dim() == 2), params
    if spec.is_text:
        from edgedistill.models.hf import transformer_macs

        return transformer_macs(module, spec.input_shape[0]), sum(p.numel() for p in module.parameters())

    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    macs, params = tp.utils.count_ops_and_params(module, spec.example_input().to(device))
    module.train(was_training)
    return int(macs), int(params)
