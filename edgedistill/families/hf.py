"""Hugging Face sequence classifiers (the BERT family, edgedistill.models.hf): the teacher is a local
directory (fine-tuned by the teacher stage when it has no head for the data's classes), the student a
shallower or narrower copy; pruning removes attention heads, FFN neurons and layers; int8 is dynamic."""

from __future__ import annotations

import json

from torch import nn

from edgedistill.families import FAMILIES, HuggingFaceFamily


@FAMILIES.register("hf")
class HuggingFaceClassifier(HuggingFaceFamily):
    name = "hf"
    task = "text-classification"
    finetunes = True

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        from edgedistill.models import hf

        if teacher is None:
            return hf.load_classifier(cfg.path, spec.labels, spec.pad_id)
        return hf.build_student(teacher.module, num_layers=cfg.layers, init_layers=cfg.init_layers,
                                hidden_size=cfg.hidden_size, heads=cfg.heads, intermediate_size=cfg.intermediate_size)

    def needs_training(self, cfg, spec) -> bool:
        from edgedistill.models import hf

        classes, wanted = hf.head_classes(cfg.path), spec.num_classes
        has = f"a head for {classes} classes" if classes else "no classification head"
        return self.fine_tunes(cfg, classes == wanted, f"{cfg.path} has {has} and the data has {wanted} classes "
                                                       "(it would start from a random head)")

    def trained_from(self, cfg) -> str:
        return f"fine-tuned from {cfg.path}"

    def describe(self, module) -> dict:
        from edgedistill.models import hf

        return {"transformer": hf.shape(module)}

    def rebuild_args(self, handle) -> dict:
        return {"config": json.loads(handle.module.hf.config.to_json_string(use_diff=False)),
                "pad_id": handle.module.pad_id}

    def rebuild(self, description: dict, spec) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        from edgedistill.models import hf

        model = AutoModelForSequenceClassification.from_config(self.config_of(description), attn_implementation="eager")
        return hf.TextClassifier(model, description["pad_id"])
