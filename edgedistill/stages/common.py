"""Helpers the stages share: evaluation records and state_dict files."""

from __future__ import annotations

from pathlib import Path

import torch

from edgedistill import io
from edgedistill.errors import UserError
from edgedistill.models import ModelHandle, build_model
from edgedistill.training import accuracy, predict


def evaluate(handle: ModelHandle, ctx, state=None) -> dict:
    """Held-out accuracy, parameters and MACs of a model: the columns of the report's stage table; with the
    pipeline state, also its top-1 agreement with the teacher, from the same forward pass."""
    if handle.spec.is_lm:
        from edgedistill.stages import lm

        return lm.evaluate(handle, ctx, state)
    logits = predict(handle.module, ctx.data.x_test)
    record = {"accuracy": accuracy(logits, ctx.data.y_test), **handle.size()}
    if state is not None:
        record["agreement_with_teacher"] = teacher_agreement(ctx, state, logits)
    return record


def teacher_agreement(ctx, state, logits) -> float:
    """Share of held-out examples where `logits` pick the teacher's class (the teacher's predictions are
    computed once per run)."""
    key = ("teacher_test_predictions", id(state.teacher.module))
    if key not in ctx.cache:
        ctx.cache[key] = predict(state.teacher.module, ctx.data.x_test).argmax(-1)
    return float((logits.argmax(-1) == ctx.cache[key]).float().mean())


def new_handle(ctx, cfg, teacher: ModelHandle | None = None) -> ModelHandle:
    """A freshly initialised model from a recipe's teacher/student section (a Hugging Face teacher comes
    from its directory; a Hugging Face student is built from `teacher`)."""
    spec = ctx.data.spec
    own = getattr(cfg, "normalization", None)
    if own is not None and len(own.mean) != spec.input_shape[0]:
        raise UserError(f"teacher.normalization: has {len(own.mean)} channel(s) but the images have "
                        f"{spec.input_shape[0]}; give one mean/std per channel")
    if cfg.arch == "hf-lm":
        from edgedistill.generative import lm

        module = lm.load_causal_lm(cfg.path)[0] if teacher is None else lm.build_student(
            teacher.module, num_layers=cfg.layers, init_layers=cfg.init_layers, hidden_size=cfg.hidden_size,
            heads=cfg.heads, intermediate_size=cfg.intermediate_size)
        return ModelHandle(module=module.to(ctx.device), spec=spec, arch="hf-lm", channels=[])
    if cfg.arch == "hf":
        from edgedistill.models import hf

        if teacher is None:
            module = hf.load_classifier(cfg.path, spec.labels, spec.pad_id)
        else:
            module = hf.build_student(teacher.module, num_layers=cfg.layers, init_layers=cfg.init_layers,
                                      hidden_size=cfg.hidden_size, heads=cfg.heads,
                                      intermediate_size=cfg.intermediate_size)
        return ModelHandle(module=module.to(ctx.device), spec=spec, arch="hf", channels=[])
    module = build_model(cfg.arch, cfg.channels, spec.input_shape, spec.num_classes, cfg.dropout).to(ctx.device)
    return ModelHandle(module=module, spec=spec, arch=cfg.arch, channels=list(cfg.channels or []))


def save_weights(handle: ModelHandle, stage_dir: Path) -> None:
    io.save_torch(stage_dir / "model.pt", handle.module.state_dict())


def load_weights(handle: ModelHandle, path: Path, field: str) -> ModelHandle:
    """Load a state_dict (weights_only) into handle; a shape or key mismatch is the user's to fix."""
    state = io.load_torch(path, field)
    if isinstance(state, dict) and isinstance(state.get("state_dict") or state.get("model"), dict):
        state = state.get("state_dict") or state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{field}: {path} holds a {type(state).__name__}, expected a state_dict")
    own = handle.module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"{field}: {path} does not fit arch '{handle.arch}' with channels {handle.channels} "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}); set the arch and channels the checkpoint was made with"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise UserError(
                f"{field}: {path} does not fit channels {handle.channels}: {k} is {tuple(v.shape)} in the checkpoint "
                f"but {tuple(own[k].shape)} in the model; set the channels (and classes/input) it was trained with"
            )
    handle.module.load_state_dict(state)
    return handle



def make_task(ctx, state, stage: str, cfg, student_module, teacher=None):
    """The stage's DistillationTask: the teacher (re-normalizing its inputs when it expects other
    statistics), feature terms hooked on `student_module`, and teacher logits computed once per run and
    reused by every stage when the data has no random augmentation."""
    from edgedistill.distill import DistillationTask
    from edgedistill.distill.task import renormalizer

    spec, own = ctx.data.spec, ctx.recipe.teacher.normalization
    teacher = teacher if teacher is not None else state.teacher.module
    if ctx.device.type == "cuda" and len(spec.input_shape) == 3:
        teacher.to(memory_format=torch.channels_last)  # as the student's batches arrive
    teacher_input = renormalizer(spec.mean, spec.std, own.mean, own.std) if own is not None else None
    field = f"stages.{stage}"
    features = list(cfg.features)
    if getattr(cfg, "layer_match", None) is not None:
        from edgedistill.distill.features import transformer_layer_terms

        features += transformer_layer_terms(cfg.layer_match, student_module, teacher, field)
    task = DistillationTask.from_stage(teacher, cfg, student=student_module, features=features,
                                       example_input=ctx.data.x_train[:2], teacher_input=teacher_input,
                                       field=f"{field}.features")
    task.cache_info = {}
    cache = cfg.cache_teacher if cfg.cache_teacher is not None else not stage_augment(ctx, cfg).active
    if cache and not task.features:
        key = ("teacher_logits", id(teacher), cfg.cache_topk, cfg.temperature)
        if key not in ctx.cache:
            info = task.cache_teacher_logits(ctx.data.x_train, topk=cfg.cache_topk)
            ctx.cache[key] = (task.cached_logits, info)
        task.cached_logits, task.cache_info = ctx.cache[key]
    return task


def stage_augment(ctx, cfg):
    return cfg.augment if cfg.augment is not None else ctx.recipe.data.augment


def train(ctx, name: str, model, task, stage_dir: Path, checkpoint_name: str = "checkpoint.pt", cfg=None,
          **kw) -> list[dict]:
    """fit() with what every stage passes the same way: data, batch size, seed, augmentation, device
    settings, progress and the event log."""
    from edgedistill.training import fit

    cfg = cfg or getattr(ctx.recipe.stages, name)
    return fit(model, task, kw.pop("data", ctx.data), cfg, stage=name, checkpoint=stage_dir / checkpoint_name,
               batch_size=ctx.recipe.data.batch_size, seed=ctx.recipe.seed, augment=stage_augment(ctx, cfg),
               training=ctx.recipe.training, progress=ctx.progress,
               on_epoch=lambda r: ctx.event("epoch", stage=name, **r), say=ctx.log, **kw)
