"""Knowledge distillation: the loss terms and the task that supervises a student with its teacher."""

from edgedistill.distill.losses import kd_loss
from edgedistill.distill.task import DistillationTask, SupervisedTask

__all__ = ["DistillationTask", "SupervisedTask", "kd_loss"]
