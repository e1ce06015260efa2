"""The built-in zoo (edgedistill.models.zoo): cnn and mlp sized by `channels`, and fixed CIFAR architectures
(resnet20, wrn_40_2, ...). A teacher is trained by the teacher stage unless a checkpoint is given."""

from __future__ import annotations

from torch import nn

from edgedistill.errors import UserError
from edgedistill.families import FAMILIES, ModelFamily
from edgedistill.models import zoo


@FAMILIES.register("zoo")
class Zoo(ModelFamily):
    name = "zoo"

    def arch_names(self) -> list[str]:
        return zoo.arch_names()

    def check(self, arch: str, cfg) -> None:
        zoo.check_arch(arch, cfg.channels)

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        own = getattr(cfg, "normalization", None)
        if own is not None and len(own.mean) != spec.input_shape[0]:
            raise UserError(f"teacher.normalization: has {len(own.mean)} channel(s) but the images have "
                            f"{spec.input_shape[0]}; give one mean/std per channel")
        return zoo.build_model(cfg.arch, cfg.channels, spec.input_shape, spec.num_classes, cfg.dropout)

    def rebuild_args(self, handle) -> dict:
        dropout = next((m.p for m in handle.module.modules() if isinstance(m, nn.Dropout)), 0.0)
        return {"dropout": dropout}

    def rebuild(self, description: dict, spec) -> nn.Module:
        return zoo.build_model(description["arch"], description["channels"] or None, spec.input_shape,
                               spec.num_classes, description["dropout"])
