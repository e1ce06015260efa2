"""How a model wants its images: the size it sees, how a photo of any size is resized and cropped to it, and
the per-channel mean/std. A model family gives it (timm's pretrained config, a torchvision weights enum's
transforms, a Hugging Face image processor); the data reader applies it to every photo, the same way for
training, held-out evaluation and the exported files' inputs."""

from __future__ import annotations

from dataclasses import dataclass

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int]  # (H, W) the model sees
    crop_pct: float = 0.875  # evaluation: resize so that `size` is this share of the shorter side, then center-crop
    interpolation: str = "bilinear"  # one of INTERPOLATIONS
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # of pixels in [0, 1]
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3
    # "center": shorter side resized, then the center crop (timm, torchvision); "squash": resized to `size`
    # whatever the aspect ratio (Hugging Face processors without a center crop)
    crop_mode: str = "center"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation '{self.interpolation}': expected one of {', '.join(INTERPOLATIONS)}")
        if self.crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode '{self.crop_mode}': expected center or squash")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct {self.crop_pct}: expected a share in (0, 1]")

    @property
    def resize(self) -> tuple[int, int]:
        """(H, W) an image is resized to before the center crop (shorter side scaled, as timm's eval transform)."""
        return (int(self.size[0] / self.crop_pct), int(self.size[1] / self.crop_pct))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "channels": self.channels, "crop_mode": self.crop_mode}
