"""Model architectures by name, and the handle that carries a model with what it needs downstream."""

from edgedistill.models.handle import ModelHandle, ModelSpec, count_macs_params
from edgedistill.models.zoo import build_model

__all__ = ["ModelHandle", "ModelSpec", "build_model", "count_macs_params"]
