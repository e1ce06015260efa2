"""A Hugging Face ONNX directory: model.onnx (inputs input_ids, attention_mask, token_type_ids), its int8
twin model_quantized.onnx, config.json and the tokenizer, written by optimum's exporter, so that
`ORTModelForSequenceClassification.from_pretrained(path)` loads it (file_name="model_quantized.onnx" for int8)."""

from __future__ import annotations

import contextlib
import io as _io
import logging
import tempfile
import warnings
from pathlib import Path

from edgedistill.errors import RefusedError
from edgedistill.exporters import EXPORTERS, FP32_MODULE, Artifact, Exporter
from edgedistill.exporters.onnx import exporter_failure
from edgedistill.io import atomic_path

FP32_FILE, INT8_FILE = "model.onnx", "model_quantized.onnx"


def export(module, tokenizer_dir: Path, path: Path, opset: int, weight_range: tuple[int, int] = (-128, 127)) -> None:
    """Save `module` (a TextClassifier) with the teacher's tokenizer and export the directory atomically."""
    from edgedistill.models.hf import load_tokenizer

    export_directory(module.hf, load_tokenizer(tokenizer_dir), path, "text-classification", opset,
                     weight_range=weight_range)


def export_directory(model, tokenizer, path: Path, task: str, opset: int, int8: bool = True,
                     check=None, weight_range: tuple[int, int] = (-128, 127)) -> None:
    """A Hugging Face model and its tokenizer through optimum's exporter for `task`, atomically: model.onnx
    and, with int8, its dynamic-int8 twin (weights in `weight_range`, the target's). `check(directory)` may
    refuse the export before it is kept."""
    from optimum.exporters.onnx import main_export

    from edgedistill import quantize

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = Path(tmp) / "model"
        model.save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        try:
            with contextlib.redirect_stdout(_io.StringIO()):
                main_export(str(saved), output=str(out), task=task, opset=opset, device="cpu",
                            do_validation=False, local_files_only=True)
        except Exception as e:
            raise RefusedError(f"export {path.name}: optimum's ONNX exporter failed: {exporter_failure(e)}") from None
        if check is not None:
            check(out)
        if int8:
            quantize.dynamic_onnx(out / FP32_FILE, out / INT8_FILE, weight_range)



@EXPORTERS.register("hf-onnx")
class HfOnnx(Exporter):
    """The student as an optimum-loadable directory (fp32 and int8 files, config, tokenizer), both files checked
    against the torch student; a refusal renames the whole directory."""

    name = "hf-onnx"
    format, kinds, suffix, runtime = "hf-onnx", ("hf-onnx",), ".hf-onnx", "onnxruntime"
    tasks, needs = ("text-classification",), (FP32_MODULE,)

    def export(self, job):
        from edgedistill import parity

        cfg = job.cfg
        path = job.stage_dir / "student.hf-onnx"
        export(job.modules["student"], job.ctx.recipe.teacher.path, path, cfg.opset, job.target.int8_weight_range)
        reference = job.torch_logits("student")
        fp32 = parity.compare(reference, job.file_logits(path / FP32_FILE),
                              ("student fp32 (torch)", "student fp32 (hf-onnx)"))
        parity.check_fp32(fp32, path, cfg, job.out)
        int8 = parity.int8_rung(job.ctx, reference, path / INT8_FILE, ("student fp32 (torch)", "student int8 (hf-onnx)"),
                                (cfg.int8_min_agreement, None), job.file_logits, path)
        yield Artifact("student", "hf-onnx", "fp32+int8", path, self.name, self.runtime, loads=FP32_FILE,
                       parity=[fp32, int8], fields={
                           "files": {"fp32": FP32_FILE, "int8": INT8_FILE},
                           "loader": "optimum.onnxruntime.ORTModelForSequenceClassification.from_pretrained(path)"})

    def restore(self, record, out, earlier):
        artifact = super().restore(record, out, earlier)
        artifact.loads = record["files"]["fp32"]
        return artifact
