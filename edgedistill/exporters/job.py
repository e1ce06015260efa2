"""What one export run shares between its exporters."""

from __future__ import annotations

import copy
from functools import cached_property
from pathlib import Path

from edgedistill.exporters import INT8_PRECISIONS, Artifact


class ExportJob:
    """What one export run shares between its exporters: the context, the models as CPU copies, held-out
    outputs computed once, and the artifacts written so far (a converter finds its source among them)."""

    def __init__(self, ctx, state, stage_dir: Path):
        self.ctx, self.state, self.stage_dir = ctx, state, stage_dir
        self.cfg, self.target, self.spec = ctx.recipe.stages.export, ctx.target, ctx.data.spec
        self.out = ctx.out
        self.x = ctx.data.x_test.cpu()
        self.artifacts: list[Artifact] = []
        self._outputs: dict = {}

    def log(self, message: str) -> None:
        self.ctx.log(message)

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.out))

    @cached_property
    def modules(self) -> dict:
        """fp32 teacher and student as CPU copies: the artifacts run on CPUs, and a GPU reference (TF32
        convolutions) would differ from them."""
        return {role: copy.deepcopy(getattr(self.state, role).module).cpu().eval() for role in ("teacher", "student")}

    @cached_property
    def quantized(self):
        """The QAT stage's int8 module as a CPU copy, or None."""
        return copy.deepcopy(self.state.quantized).cpu() if self.state.quantized is not None else None

    @property
    def qat_scheme(self) -> str | None:
        """The int8 scheme the qat stage trained in (quantize.SCHEMES), or None when it did not run."""
        from edgedistill.quantize import scheme_for

        return scheme_for(self.target) if self.state.quantized is not None else None

    @property
    def ships_int8(self) -> bool:
        """The target's precision is int8 and the precision plan did not find that int8 does not pay there."""
        return self.target.precision in INT8_PRECISIONS and not self.state.all_fp32

    def torch_logits(self, role: str):
        if role not in self._outputs:
            from edgedistill.training import predict

            self._outputs[role] = predict(self.modules[role], self.x).numpy()
        return self._outputs[role]

    def file_logits(self, path: Path, reference: bool = False):
        """Held-out logits of an ONNX file, once per file and arithmetic."""
        from edgedistill.runtimes import onnxruntime as ortr

        if (path, reference) not in self._outputs:
            self._outputs[path, reference] = ortr.logits(ortr.session(path, ortr.host_threads(2), reference=reference),
                                                         self.x.numpy(), pad_id=self.spec.pad_id or 0)
        return self._outputs[path, reference]

    @cached_property
    def int8_weights(self) -> tuple:
        """(fp32 student, where its weights came from) for exporters that quantize with their own runtime's
        quantizer: the QAT stage's fine-tuned weights when it ran (its saved prepared graph holds them under the
        student's own parameter names), else the fp32 student's."""
        import torch

        from edgedistill import io

        student = copy.deepcopy(self.modules["student"])
        saved = next(iter(sorted(self.out.glob("*-qat/model.pt"))), None)
        if self.quantized is None or saved is None:
            return student, "the fp32 student (no QAT stage)"
        own = student.state_dict()
        tuned = {k: v for k, v in io.load_torch(saved).items() if k in own and v.shape == own[k].shape}
        if not any(k.endswith("weight") for k in tuned):
            return student, "the fp32 student (the QAT weights did not match its parameters)"
        with torch.no_grad():
            student.load_state_dict(tuned, strict=False)
        return student.eval(), f"the QAT-fine-tuned student ({len(tuned)} of {len(own)} tensors)"

    def calibration(self, n: int = 512):
        """The head of the training split (a data-free run: its transfer set), as the model takes it."""
        from edgedistill.data.split import split_of
        from edgedistill.tasks.fitting import training_data

        return split_of(training_data(self.ctx, self.state).x_train).head(n).cpu().float()

    def find(self, kind: str, role: str = "student") -> Artifact | None:
        return next((a for a in self.artifacts if a.kind == kind and a.role == role), None)
