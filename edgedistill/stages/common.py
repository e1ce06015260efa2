"""Helpers the stages share: evaluation records and state_dict files."""

from __future__ import annotations

from pathlib import Path

from edgedistill import io
from edgedistill.errors import UserError
from edgedistill.models import ModelHandle, build_model
from edgedistill.training import accuracy, predict


def evaluate(handle: ModelHandle, ctx) -> dict:
    """Held-out accuracy, parameters and MACs of a model: the columns of the report's stage table."""
    logits = predict(handle.module, ctx.data.x_test)
    return {"accuracy": accuracy(logits, ctx.data.y_test), **handle.size()}


def agreement(a: ModelHandle, b: ModelHandle, ctx) -> float:
    """Share of held-out examples where two models predict the same class."""
    return float((predict(a.module, ctx.data.x_test).argmax(-1) == predict(b.module, ctx.data.x_test).argmax(-1)).float().mean())


def new_handle(ctx, arch: str, channels: list[int]) -> ModelHandle:
    spec = ctx.data.spec
    module = build_model(arch, channels, spec.input_shape, spec.num_classes).to(ctx.device)
    return ModelHandle(module=module, spec=spec, arch=arch, channels=list(channels))


def save_weights(handle: ModelHandle, stage_dir: Path) -> None:
    io.save_torch(stage_dir / "model.pt", handle.module.state_dict())


def load_weights(handle: ModelHandle, path: Path, field: str) -> ModelHandle:
    """Load a state_dict (weights_only) into handle; a shape or key mismatch is the user's to fix."""
    state = io.load_torch(path)
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

