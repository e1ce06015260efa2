"""Your own `nn.Module`, handed in from Python (edgedistill.compress): `arch: module:<name>`. The module is
kept in this process under its name, which carries a hash of its class and weights, so a run's fingerprint
changes when the model does. A teacher is used as it is; pruning and QAT work on it as on any model; a
resumed run rebuilds it from the same module and its stage's weights (a recipe can never name code)."""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from edgedistill.families import FAMILIES, ModelFamily

_MODULES: dict[str, nn.Module] = {}


def register(role: str, module: nn.Module) -> str:
    """Keep `module` for this process; returns the recipe's arch for it, e.g. module:teacher-3f2a9c1b."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{role}: expected a torch.nn.Module, got {type(module).__name__}")
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes() if value.dtype != torch.bfloat16 else
                      value.detach().float().cpu().numpy().tobytes())
    name = f"{role}-{digest.hexdigest()[:8]}"
    _MODULES[name] = copy.deepcopy(module).cpu()
    return f"module:{name}"


@FAMILIES.register("module")
class UserModule(ModelFamily):
    name = "module"

    @staticmethod
    def _module(arch: str) -> nn.Module:
        key = arch.split(":", 1)[1]
        if key not in _MODULES:
            raise ValueError(f"arch '{arch}' is a module handed to edgedistill.compress() in the same Python "
                             "process; pass the module there (a recipe file cannot name one)")
        return _MODULES[key]

    def check(self, arch: str, cfg) -> None:
        self._module(arch)
        if cfg.channels is not None:
            raise ValueError(f"arch '{arch}' is your module as it is; remove channels")

    def build(self, cfg, spec, teacher=None) -> nn.Module:
        return copy.deepcopy(self._module(cfg.arch))

    def needs_training(self, cfg, spec) -> bool:
        return False  # handed in trained

    def given_as(self, cfg) -> str:
        return f"your module ({type(self._module(cfg.arch)).__name__})"

    def rebuild(self, description: dict, spec) -> nn.Module:
        return copy.deepcopy(self._module(description["arch"]))
