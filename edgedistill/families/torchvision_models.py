"""torchvision's image classifiers: `arch: torchvision:<name>` (any `torchvision.models.get_model` name),
preprocessing from the transforms of the name's default weights enum (read from the enum, never downloaded)."""

from __future__ import annotations

from torch import nn

from edgedistill.data.preprocess import Preprocess
from edgedistill.errors import UserError
from edgedistill.families import FAMILIES
from edgedistill.families.pretrained import PretrainedVision

# The classifiers that also return auxiliary logits while training unless told not to.
_AUX = ("googlenet", "inception_v3")


@FAMILIES.register("torchvision")
class TorchVision(PretrainedVision):
    name, library, example = "torchvision", "torchvision", "mobilenet_v3_small"

    def names(self) -> list[str]:
        from torchvision import models

        return sorted(models.list_models(module=models))

    def create(self, name: str, num_classes: int, in_chans: int) -> nn.Module:
        from torchvision import models

        if in_chans != 3:
            raise UserError(f"torchvision:{name} takes RGB images; the data has {in_chans} channel(s)")
        extra = {"aux_logits": False, "init_weights": True} if name in _AUX else {}
        return models.get_model(name, weights=None, num_classes=num_classes, **extra)

    def preprocessing(self, cfg) -> Preprocess:
        from torchvision import models

        try:
            t = models.get_model_weights(self.model_name(cfg.arch)).DEFAULT.transforms()
        except (ValueError, AttributeError):  # a model without published weights: ImageNet's usual transform
            return Preprocess(size=(224, 224), interpolation="bilinear")
        crop, resize = t.crop_size[0], t.resize_size[0]
        return Preprocess(size=(crop, crop), crop_pct=crop / resize, interpolation=t.interpolation.value,
                          mean=tuple(t.mean), std=tuple(t.std))
