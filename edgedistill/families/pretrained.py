"""Families of named image classifiers from a model library (timm, torchvision): `arch: <family>:<name>`, built
with the data's class count, never downloaded. A teacher comes from a state_dict file (weights only): one
trained on the data's classes is used as it is; one with another head (an ImageNet checkpoint) keeps its
backbone and is fine-tuned with a new head by the teacher stage. A student is any named model of any family
(a ResNet-50 teacher can distill into a MobileNetV3), or the teacher itself (`student.from_teacher`)."""

from __future__ import annotations

import difflib
import importlib.util

from torch import nn

from edgedistill.errors import UserError
from edgedistill.families import ModelFamily, read_state_dict


class PretrainedVision(ModelFamily):
    library = ""  # the package the models come from
    finetunes = True  # a checkpoint with another head: backbone kept, head new, fine-tuned

    # ------------------------------------------------------------ the library's side
    def names(self) -> list[str]:
        raise NotImplementedError

    def create(self, name: str, num_classes: int, in_chans: int) -> nn.Module:
        raise NotImplementedError

    def classifier(self, module: nn.Module) -> str:
        """The classifier's module name: its weights are the ones a checkpoint with other classes replaces."""
        return [n for n, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]

    # ------------------------------------------------------------ the family's side
    @staticmethod
    def model_name(arch: str) -> str:
        return arch.split(":", 1)[1] if ":" in arch else ""

    def check(self, arch: str, cfg) -> None:
        if importlib.util.find_spec(self.library) is None:
            raise ValueError(f"arch '{arch}' needs {self.library}, which is not installed; "
                             "pip install 'edgedistill[vision]'")
        name = self.model_name(arch)
        if not name:
            raise ValueError(f"arch '{arch}': name a model, e.g. '{self.name}:{self.example}'")
        known = self.names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{self.name}:{close[0]}'? " if close else ""
            raise ValueError(f"arch '{arch}': {self.library} has no model '{name}'; {hint}"
                             f"see {self.library}'s model list")
        if cfg.channels is not None:
            raise ValueError(f"arch '{arch}' has the widths {self.library} gives it; remove channels "
                             "(the prune stage narrows it)")

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        return self.create(self.model_name(cfg.arch), spec.num_classes, spec.input_shape[0])

    def needs_training(self, cfg, spec) -> bool:
        fits = cfg.checkpoint is not None and self._head_fits(cfg, spec)
        return self.fine_tunes(cfg, fits, f"teacher.checkpoint has no head for the data's {spec.num_classes} classes")

    def trained_from(self, cfg) -> str:
        if cfg.checkpoint is None:
            return "trained"
        return f"fine-tuned from {cfg.checkpoint}"

    def _head_fits(self, cfg, spec) -> bool:
        module = self.build(cfg, spec)
        head = self.classifier(module)
        state = read_state_dict(cfg.checkpoint, "teacher.checkpoint")
        own = module.state_dict()
        return all(tuple(state[k].shape) == tuple(v.shape) for k, v in own.items()
                   if k.startswith(head + ".") and k in state)

    def load_checkpoint(self, handle, path, field: str):
        """Load a state_dict; a classifier of another class count is left as built (fine-tuned next)."""
        state = read_state_dict(path, field)
        own = handle.module.state_dict()
        head = self.classifier(handle.module) + "."
        other_head = [k for k in own if k.startswith(head) and k in state and state[k].shape != own[k].shape]
        keep = {k: v for k, v in state.items() if k not in other_head}
        missing = [k for k in own if k not in keep and k not in other_head]
        unexpected = [k for k in keep if k not in own]
        wrong = [k for k in keep if k in own and tuple(keep[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            raise UserError(f"{field}: {path} does not fit arch '{handle.arch}' (missing {missing[:2]}, unexpected "
                            f"{unexpected[:2]}, other shapes {wrong[:2]}); give a state_dict of that model")
        handle.module.load_state_dict({**own, **keep})
        return handle

    def rebuild(self, description: dict, spec) -> nn.Module:
        return self.create(self.model_name(description["arch"]), spec.num_classes, spec.input_shape[0])

