"""Hugging Face causal language models (GPT-2, Llama-style; edgedistill.generative.lm): the teacher is a
local directory used as it is, the student a shallower or narrower copy that starts from the teacher's
layers. Not pruned or quantization-aware trained yet; export quantizes its MatMuls dynamically."""

from __future__ import annotations

import json

from torch import nn

from edgedistill.families import FAMILIES, HuggingFaceFamily


@FAMILIES.register("hf-lm")
class HuggingFaceCausalLM(HuggingFaceFamily):
    name = "hf-lm"
    task = "text-generation"

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        from edgedistill.generative import lm

        if teacher is None:
            return lm.load_causal_lm(cfg.path)[0]
        return lm.build_student(teacher.module, num_layers=cfg.layers, init_layers=cfg.init_layers,
                                hidden_size=cfg.hidden_size, heads=cfg.heads, intermediate_size=cfg.intermediate_size)

    def needs_training(self, cfg, spec) -> bool:
        return False  # used as it is

    def reshape_to(self, module, state: dict):
        module.load_state_dict(state, strict=True)
        return module

    def rebuild_args(self, handle) -> dict:
        m = handle.module
        return {"config": json.loads(m.config.to_json_string(use_diff=False)),
                "generation_config": m.generation_config.to_dict()}

    def rebuild(self, description: dict, spec) -> nn.Module:
        from transformers import AutoModelForCausalLM, GenerationConfig

        model = AutoModelForCausalLM.from_config(self.config_of(description), attn_implementation="eager")
        model.generation_config = GenerationConfig.from_dict(description["generation_config"])
        return model.eval()
