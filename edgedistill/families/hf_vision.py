"""Hugging Face image classifiers (ViT, DeiT, MobileViT, ConvNeXt, ResNet, ... : any
`AutoModelForImageClassification`): `arch: hf-vision` with `teacher.path`, a local model directory and its
image processor, which gives the preprocessing. A directory without a head for the data's classes is
fine-tuned by the teacher stage. An `hf-vision` student is the teacher's own model, for the prune and QAT
stages to shrink; a smaller student of another family (timm:, torchvision:, the zoo) is distilled as usual."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from edgedistill.data.preprocess import Preprocess
from edgedistill.errors import UserError
from edgedistill.families import FAMILIES, HuggingFaceFamily, ModelFamily

# PIL's resampling numbers, as image processors store them.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class ImageClassifier(nn.Module):
    """Pixels (N, C, H, W), normalized -> class logits (the exporters and the losses want a plain tensor)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits


def _labels(labels) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def _sides(size) -> tuple[int, int]:
    size = size if isinstance(size, dict) else {"height": size, "width": size}
    edge = size.get("shortest_edge")
    return int(size.get("height") or edge), int(size.get("width") or edge)


def _geometry(p: dict) -> tuple[tuple[int, int], float, str]:
    """(size, crop_pct, crop mode) of an image processor's config, in timm's terms."""
    edge = p["size"].get("shortest_edge") if isinstance(p.get("size"), dict) else None
    if p.get("do_center_crop") and p.get("crop_size"):  # shorter side to `size`, center crop to crop_size
        crop = _sides(p["crop_size"])
        return crop, min(1.0, crop[0] / edge) if edge else 1.0, "center"
    if edge:  # ConvNeXt's processor: shorter side to edge / crop_pct, center crop
        return (edge, edge), float(p.get("crop_pct") or 1.0), "center"
    return _sides(p.get("size") or 224), 1.0, "squash"  # resized to height x width whatever the aspect ratio


@FAMILIES.register("hf-vision")
class HuggingFaceVision(ModelFamily):
    name = "hf-vision"
    loads_from_path = True
    finetunes = True
    student_needs_teacher = True  # a student is the teacher's model

    def check(self, arch: str, cfg) -> None:
        if cfg.channels is not None:
            raise ValueError(f"arch '{arch}' takes its widths from the model's config; remove channels")
        narrower = [k for k in ("layers", "init_layers", "hidden_size", "heads", "intermediate_size")
                    if getattr(cfg, k, None) is not None]
        if narrower:
            raise ValueError(f"an '{arch}' student is the teacher's model, narrowed by the prune stage; remove "
                             f"{narrower[0]}")

    def preprocessing(self, cfg) -> Preprocess:
        path = Path(cfg.path)
        try:
            p = json.loads((path / "preprocessor_config.json").read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"teacher.path: {path} has no readable preprocessor_config.json ({e.__class__.__name__});"
                            " save the model's image processor there (processor.save_pretrained)") from None
        if p.get("do_flip_channel_order"):
            raise UserError(f"teacher.path: {path}'s image processor feeds BGR images, which is not supported; "
                            "convert the model to RGB input")

        size, crop_pct, mode = _geometry(p)
        mean = tuple(p.get("image_mean") or (0.5, 0.5, 0.5)) if p.get("do_normalize", True) else (0.0,) * 3
        std = tuple(p.get("image_std") or (0.5, 0.5, 0.5)) if p.get("do_normalize", True) else (1.0,) * 3
        return Preprocess(size=size, crop_pct=crop_pct, interpolation=_RESAMPLE.get(p.get("resample", 2), "bilinear"),
                          mean=mean, std=std, crop_mode=mode)

    def prune_keep(self, module: nn.Module) -> list[str]:
        # Attention splits the query/key/value outputs into heads of a size fixed in the config: their widths
        # stay; the residual width and the MLP neurons are pruned.
        return [n for n, m in module.named_modules() if isinstance(m, nn.Linear)
                and n.rsplit(".", 1)[-1] in ("query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv")]

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        if teacher is not None:
            if not isinstance(teacher.module, ImageClassifier):
                raise UserError("student.arch: an 'hf-vision' student is the teacher's own model; with another "
                                "teacher, name a student of any family (timm:, torchvision:, cnn ...)")
            return copy.deepcopy(teacher.module)
        from transformers import AutoModelForImageClassification

        from edgedistill.models.hf import _quiet, check_dir

        _quiet()
        check_dir(cfg.path, "teacher.path")
        try:
            hf = AutoModelForImageClassification.from_pretrained(
                str(cfg.path), num_labels=spec.num_classes, **_labels(spec.labels), ignore_mismatched_sizes=True,
                local_files_only=True)
        except Exception as e:
            raise UserError(f"teacher.path: {cfg.path} does not load as an image classifier "
                            f"({str(e).splitlines()[0][:160]})") from None
        return ImageClassifier(hf)

    def needs_training(self, cfg, spec) -> bool:
        config = json.loads((Path(cfg.path) / "config.json").read_text())
        fits = len(config.get("id2label") or {}) == spec.num_classes and config.get("architectures") and \
            any("ForImageClassification" in a for a in config["architectures"])
        return self.fine_tunes(cfg, bool(fits), f"{cfg.path} has no head for the data's {spec.num_classes} classes")

    def trained_from(self, cfg) -> str:
        return f"fine-tuned from {cfg.path}"

    def rebuild_args(self, handle) -> dict:
        return {"config": json.loads(handle.module.hf.config.to_json_string(use_diff=False))}

    def rebuild(self, description: dict, spec) -> nn.Module:
        from transformers import AutoModelForImageClassification

        return ImageClassifier(AutoModelForImageClassification.from_config(HuggingFaceFamily.config_of(description)))
