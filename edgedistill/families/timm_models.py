"""timm's image classifiers: `arch: timm:<name>` (any `timm.create_model` name), preprocessing from the model's
pretrained config (input size, crop_pct, interpolation, mean/std), as timm's own evaluation transform."""

from __future__ import annotations

from torch import nn

from edgedistill.data.preprocess import Preprocess
from edgedistill.families import FAMILIES
from edgedistill.families.pretrained import PretrainedVision


@FAMILIES.register("timm")
class Timm(PretrainedVision):
    name, library, example = "timm", "timm", "resnet18"

    def names(self) -> list[str]:
        import timm

        return timm.list_models()

    def create(self, name: str, num_classes: int, in_chans: int) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    def classifier(self, module: nn.Module) -> str:
        return module.pretrained_cfg.get("classifier") or super().classifier(module)

    def preprocessing(self, cfg) -> Preprocess:
        import timm

        c = timm.get_pretrained_cfg(self.model_name(cfg.arch))
        c = c.to_dict() if c is not None else {}
        size = tuple(c.get("input_size") or (3, 224, 224))  # not test_input_size: train and export at one size
        return Preprocess(size=(int(size[1]), int(size[2])), crop_pct=float(c.get("crop_pct") or 0.875),
                          interpolation=c.get("interpolation") or "bicubic",
                          mean=tuple(c.get("mean") or Preprocess.mean), std=tuple(c.get("std") or Preprocess.std),
                          crop_mode="squash" if c.get("crop_mode") == "squash" else "center")
