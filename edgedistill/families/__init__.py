"""Model families: where a recipe's `arch` comes from, and everything the pipeline needs to know about it.

A family builds teacher and student, saves them to a stage's own files and loads them back from there alone
(a resumed run never rebuilds a model from the recipe), says how its models are pruned and quantized, counts
their MACs, and gives the record fields that describe a model's shape. The stages ask the family; they never
test an arch name. Adding a family is one module with `@FAMILIES.register("name")` plus its line in the
registry's built-ins (or an entry point of another package)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from edgedistill import io
from edgedistill.data.preprocess import Preprocess
from edgedistill.errors import UserError
from edgedistill.models.handle import ModelHandle, ModelSpec
from edgedistill.registry import Registry

FAMILIES: Registry["ModelFamily"] = Registry(
    "family", builtins=("edgedistill.families.zoo", "edgedistill.families.hf", "edgedistill.families.hf_lm",
                        "edgedistill.families.module", "edgedistill.families.timm_models",
                        "edgedistill.families.torchvision_models", "edgedistill.families.hf_vision"))
WEIGHTS, DESCRIPTION = "model.pt", "model.json"


class ModelFamily:
    name = ""
    task = "image-classification"  # the task its models serve (edgedistill.tasks)
    # "static": QAT and static PTQ quantize its convolutions and linear layers; "dynamic": integer MatMuls
    # with activations quantized at run time (transformers), so precision and QAT do not apply
    int8 = "static"
    convolutional = True  # widths run in the CPU's conv blocks (the prune stage warns about padded widths)
    layered = False  # its depth is one of its widths (a transformer's layer count), not a list of removed blocks
    student_needs_teacher = False  # a student is built from the teacher's layers (student.layers, heads...)
    loads_from_path = False  # the teacher is a model directory (teacher.path), not a state_dict checkpoint
    finetunes = False  # a teacher directory without a head for the data's classes is fine-tuned (teacher.finetune)

    # ------------------------------------------------------------ recipe
    def arch_names(self) -> list[str]:
        """The `arch` values it answers to."""
        return [self.name]

    def check(self, arch: str, cfg) -> None:
        """ValueError unless the recipe's teacher/student section can be built (shown against the field)."""

    def preprocessing(self, cfg) -> Preprocess | None:
        """How a teacher of this family wants its images (size, resize and crop, mean/std), or None: the data
        decides (its own size; data.normalization or the training split's statistics)."""
        return None

    # ------------------------------------------------------------ building
    def build(self, cfg, spec: ModelSpec, teacher: ModelHandle | None = None) -> nn.Module:
        """A freshly initialised model from a recipe's teacher (teacher is None) or student section."""
        raise NotImplementedError

    def handle(self, module: nn.Module, cfg, spec: ModelSpec, device) -> ModelHandle:
        return ModelHandle(module=module.to(device), spec=spec, arch=cfg.arch, channels=list(cfg.channels or []))

    def new(self, cfg, spec: ModelSpec, device, teacher: ModelHandle | None = None) -> ModelHandle:
        return self.handle(self.build(cfg, spec, teacher), cfg, spec, device)

    def load_checkpoint(self, handle: ModelHandle, path: Path, field: str) -> ModelHandle:
        """Weights from a user's state_dict file (teacher.checkpoint, student.checkpoint)."""
        return load_state_dict(handle, path, field)

    def needs_training(self, cfg, spec: ModelSpec) -> bool:
        """Whether the teacher stage trains the teacher (an untrained zoo teacher) or uses it as given."""
        return cfg.checkpoint is None

    def trained_from(self, cfg) -> str:
        return "trained"

    @staticmethod
    def fine_tunes(cfg, fits: bool, refusal: str) -> bool:
        """teacher.finetune decides; unset, a teacher whose head does not fit the data's classes is fine-tuned.
        `refusal`: why finetune: false cannot stand when it does not fit."""
        if cfg.finetune is False and not fits:
            raise UserError(f"teacher.finetune: false, but {refusal}; set teacher.finetune: true or give a "
                            "classifier trained on these labels")
        return cfg.finetune if cfg.finetune is not None else not fits

    def given_as(self, cfg) -> str:
        """Where a teacher used as it is came from (the teacher record's "source")."""
        return str(cfg.checkpoint or cfg.path)

    def describe(self, module: nn.Module) -> dict:
        """Record fields that describe the model's shape beyond params and MACs (a transformer's heads)."""
        return {}

    def macs_params(self, module: nn.Module, spec: ModelSpec) -> tuple[int, int]:
        """MACs of one example (a transformer's at the data's sequence length, a causal LM's per generated
        token) and parameters."""
        from edgedistill.models.handle import count_macs_params

        return count_macs_params(module, spec)

    # ------------------------------------------------------------ pruning
    def widths(self, module: nn.Module) -> list[int]:
        from edgedistill.pruning import widths

        return widths(module)

    def prune_keep(self, module: nn.Module) -> list[str]:
        """Layers whose output width channel pruning must not change (beyond the classifier)."""
        return []

    def reshape_to(self, module: nn.Module, state: dict) -> nn.Module:
        """A freshly built model shrunk to a pruned state_dict's shapes, loaded strictly."""
        from edgedistill.pruning import reshape_to

        return reshape_to(module, state)

    # ------------------------------------------------------------ the stage's own files
    def rebuild_args(self, handle: ModelHandle) -> dict:
        """What `rebuild` needs besides the weights (JSON)."""
        return {}

    def rebuild(self, description: dict, spec: ModelSpec) -> nn.Module:
        """An unpruned model of the saved description (its weights come next)."""
        raise NotImplementedError

    def save(self, handle: ModelHandle, stage_dir: Path) -> None:
        """model.pt (state_dict) and model.json (how to rebuild it): all `load` needs."""
        io.save_torch(stage_dir / WEIGHTS, handle.module.state_dict())
        io.write_json(stage_dir / DESCRIPTION, {"family": self.name, "arch": handle.arch,
                                                 "channels": handle.channels, **self.rebuild_args(handle)})

    def load(self, stage_dir: Path, spec: ModelSpec, device) -> ModelHandle:
        description = json.loads((stage_dir / DESCRIPTION).read_text())
        module = self.rebuild(description, spec)
        self.reshape_to(module, io.load_torch(stage_dir / WEIGHTS, str(stage_dir / WEIGHTS)))
        return ModelHandle(module=module.to(device), spec=spec, arch=description["arch"],
                           channels=list(description["channels"]))


class HuggingFaceFamily(ModelFamily):
    """Models from a local Hugging Face directory: widths from their config (saved in model.json), students built
    from the teacher's layers, int8 as dynamic integer MatMuls."""

    int8 = "dynamic"
    convolutional = False
    layered = True
    student_needs_teacher = True
    loads_from_path = True

    def check(self, arch: str, cfg) -> None:
        if cfg.channels is not None:
            raise ValueError(f"arch '{arch}' takes its widths from the model's config; remove channels")

    @staticmethod
    def config_of(description: dict):
        """The transformers config saved by rebuild_args (JSON keys are strings: pruned_heads' layer numbers
        become ints again, as transformers replays them)."""
        from transformers import AutoConfig

        from edgedistill.models.hf import _quiet

        _quiet()
        config = dict(description["config"])
        config["pruned_heads"] = {int(k): v for k, v in (config.get("pruned_heads") or {}).items()}
        return AutoConfig.for_model(config.pop("model_type"), **config)


def family_of(arch: str) -> ModelFamily:
    """The family an `arch` belongs to: `family:name` (e.g. timm:resnet18), a family's own name, or one of the
    names a family answers to (the built-in zoo's cnn, resnet20, ...)."""
    prefix = arch.split(":", 1)[0] if ":" in arch else None
    if prefix is not None:
        return FAMILIES.get(prefix)
    for family in FAMILIES:
        if arch in family.arch_names():
            return family
    import difflib

    known = [n for f in FAMILIES for n in f.arch_names()]
    close = difflib.get_close_matches(arch, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown arch '{arch}'; {hint}known: {', '.join(known)}")


def read_state_dict(path: Path, field: str) -> dict:
    """A user's state_dict file (weights only), also as saved inside {"state_dict": ...} or {"model": ...}."""
    state = io.load_torch(path, field)
    if isinstance(state, dict) and isinstance(state.get("state_dict") or state.get("model"), dict):
        state = state.get("state_dict") or state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{field}: {path} holds a {type(state).__name__}, expected a state_dict")
    return state


def load_state_dict(handle: ModelHandle, path: Path, field: str) -> ModelHandle:
    """Load a user's state_dict (weights_only) into handle; a shape or key mismatch is the user's to fix."""
    state = read_state_dict(path, field)
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


def size(handle: ModelHandle) -> dict:
    macs, params = family_of(handle.arch).macs_params(handle.module, handle.spec)
    return {"params": params, "macs": macs}


