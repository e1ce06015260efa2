"""Core ML: an .mlpackage an iOS app loads as is: image input (the app passes a CVPixelBuffer) or, for
text, int32 token ids at the recipe's sequence length; class labels, metadata, the profile's deployment
target. Converting works on Linux; predicting needs macOS."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import RefusedError
from edgedistill.exporters import (CLASSIFICATION, EXPORTERS, FP32_MODULE, INT8_MODULE, INT8_PRECISIONS, Artifact,
                                   Exporter, onnx_twin)
from edgedistill.exporters.onnx import exporter_failure
from edgedistill.io import atomic_path
from edgedistill.models import ModelSpec

INPUT_NAME = "image"
TEXT_INPUT_NAME = "input_ids"
OUTPUTS = ("classLabel", "classLabel_probs")


class _ImageClassifier(nn.Module):
    """Pixels in [0, 1] (Core ML scales the 8-bit image by 1/255) -> the model's normalization -> softmax.

    The per-channel normalization lives here, not in the ImageType, whose scale is one scalar for all
    channels; and ClassifierConfig adds no softmax of its own."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image):
        return torch.softmax(self.model((image - self.mean) / self.std), dim=-1)


class _TextClassifier(nn.Module):
    """int32 token ids (what Core ML passes as integers) -> the model's int64 ids -> softmax."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return torch.softmax(self.model(ids.long()), dim=-1)


def _inputs(ct, module: nn.Module, spec: ModelSpec, path: Path):
    """(wrapped module, example, Core ML input type, input description) for images or token ids."""
    if spec.is_text:
        (length,) = spec.input_shape
        example = spec.example_input(1).int()
        return (_TextClassifier(module), example, ct.TensorType(name=TEXT_INPUT_NAME, shape=(1, length), dtype=np.int32),
                f"Token ids from the model's tokenizer, {length} per text, padded with {spec.pad_id}")
    channels, height, width = spec.input_shape
    if channels not in (1, 3):
        raise RefusedError(f"export {path.name}: Core ML image inputs need 1 or 3 channels, the model has {channels}")
    image = ct.ImageType(name=INPUT_NAME, shape=(1, channels, height, width), scale=1.0 / 255,
                         color_layout=ct.colorlayout.GRAYSCALE if channels == 1 else ct.colorlayout.RGB)
    return (_ImageClassifier(module, spec.mean, spec.std), torch.rand(1, channels, height, width), image,
            f"{'Grayscale' if channels == 1 else 'RGB'} image, {width}x{height} pixels, 8 bits per channel")


def _without_aliases(program):
    """Drop `aten.alias` (a no-op view the decompositions leave, e.g. for some transformer reshapes): coremltools
    has no translation for it ("Unsupported fx node alias") and its users can read the aliased tensor itself."""
    graph = program.graph_module.graph
    output = next(n for n in graph.nodes if n.op == "output")
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default and output not in node.users:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def _decompositions() -> dict:
    """torch.export's default table, less adaptive_avg_pool2d: coremltools converts it as is, while its
    decomposition of a channels-last input (ConvNeXt's head) ends in as_strided, which it cannot convert."""
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.adaptive_avg_pool2d.default, None)
    return table


def to_coreml(module: nn.Module, spec: ModelSpec, path: Path, *, deployment_target: str, compute_units: str,
              precision: str, description: str, version: str) -> None:
    """Convert and save atomically. `precision` is "fp16", "w8a8" (a PT2E int8 graph, kept as quantize/
    dequantize ops that the Neural Engine runs in int8) or "w8" (fp16 activations, weights stored as int8)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' per-pass progress bars
    import coremltools as ct

    module = module.cpu()
    wrapped, example, input_type, input_doc = _inputs(ct, module, spec, path)
    wrapped.training = False  # not .eval(): a PT2E graph refuses it, and `module` arrives in eval mode
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = _without_aliases(torch.export.export(wrapped, (example,)).run_decompositions(_decompositions()))
            mlmodel = ct.convert(
                program,
                inputs=[input_type],
                classifier_config=ct.ClassifierConfig(list(spec.labels)),
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, deployment_target),
                compute_precision=ct.precision.FLOAT16,
                compute_units=getattr(ct.ComputeUnit, compute_units),
                skip_model_load=True,  # loading needs the Core ML runtime (macOS)
            )
            if precision == "w8":
                import coremltools.optimize.coreml as cto

                config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
                mlmodel = cto.linear_quantize_weights(mlmodel, config)
        except Exception as e:
            raise RefusedError(f"export {path.name}: Core ML conversion failed: {exporter_failure(e, 'Core ML')}") from None
    mlmodel.short_description = description
    mlmodel.version = version
    mlmodel.license = "Same license as the model it was distilled from"
    mlmodel.author = "edgedistill"
    mlmodel.input_description[input_type.name] = input_doc
    mlmodel.output_description["classLabel"] = "Most likely class"
    mlmodel.output_description["classLabel_probs"] = "Probability of each class"
    mlmodel.user_defined_metadata.update({"precision": precision, "compute_units": compute_units})
    mlmodel.user_defined_metadata.update({"pad_id": str(spec.pad_id)} if spec.is_text else
                                         {"normalization_mean": str(list(spec.mean)),
                                          "normalization_std": str(list(spec.std))})
    with atomic_path(path) as tmp:
        mlmodel.save(str(tmp))


def inspect(path: Path) -> dict:
    """What an app will see, read from the saved package without the Core ML runtime (works on Linux)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    d = spec.description
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    classify = next(o for o in ops if o.type == "classify")
    labels = [v.immediateValue.tensor.strings.values[0]
              for v in classify.inputs["classes"].arguments[0].value.immediateValue.list.values]
    first = d.input[0]
    kind = first.type.WhichOneof("Type")
    if kind == "imageType":
        shape = {"width": first.type.imageType.width, "height": first.type.imageType.height}
    else:
        array = first.type.multiArrayType
        shape = {"shape": list(array.shape), "dtype": ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)}
    return {
        "specification_version": spec.specificationVersion,
        "input": {"name": first.name, "type": kind, **shape},
        "outputs": {o.name: o.type.WhichOneof("Type") for o in d.output},
        "labels": labels,
        "ops": sorted({o.type for o in ops}),
        "metadata": {"short_description": d.metadata.shortDescription, "version": d.metadata.versionString,
                     **dict(d.metadata.userDefined)},
    }


@EXPORTERS.register("coreml")
class CoreMLPackage(Exporter):
    """student.fp16.mlpackage and an int8 one: W8A8 from the QAT graph (int8 activations on the Neural Engine),
    else int8 weights with fp16 compute ("w8"). The variant the target's precision asks for is marked
    `for_target`. Where Core ML runs (macOS) each is run on the held-out set and joins the parity ladder."""

    name = "coreml"
    format, kinds, suffix, runtime = "coreml", ("coreml",), ".mlpackage", "coreml"
    tasks, needs = CLASSIFICATION, (FP32_MODULE, INT8_MODULE)
    ships_to = checked_on = ("coreml",)

    def export(self, job):
        from edgedistill import parity
        from edgedistill.version import __version__
        from edgedistill.runtimes import RUNTIMES
        from edgedistill.targets import CoreMLSettings

        cfg, target, spec = job.cfg, job.target, job.spec
        settings = target.coreml or CoreMLSettings()
        wants_int8 = target.precision in INT8_PRECISIONS
        runtime = RUNTIMES.get(self.runtime)
        for variant in cfg.coreml_variants:
            precision = "fp16" if variant == "fp16" else "w8a8" if job.quantized is not None else "w8"
            path = job.stage_dir / f"student.{precision}.mlpackage"
            to_coreml(job.quantized if precision == "w8a8" else job.modules["student"], spec, path,
                      deployment_target=settings.minimum_deployment_target, compute_units=settings.compute_units,
                      precision=precision, version=__version__,
                      description=f"{job.ctx.recipe.name}: {spec.task} student distilled for {target.name}")
            info = inspect(path)
            if info["labels"] != list(spec.labels):
                parity.refuse(path, job.out, lambda name: f"export {name}: the package's class labels do not match the data's")
            artifact = Artifact("student", "coreml", precision, path, self.name, self.runtime,
                                for_target=(variant == "int8") == wants_int8, fields={"coreml": info})
            if runtime.available():
                probs = runtime.outputs(artifact, job.x.numpy(), spec)
                rung = parity.compare(_softmax(job.torch_logits("student")), probs,
                                      ("student fp32 (torch)", f"student {precision} (coreml)"))
                parity.check(rung, path, None, cfg.int8_min_agreement, "int8", out=job.out)
                artifact.parity.append(rung)
                artifact.fields["parity_max_abs"] = rung["max_abs"]
            else:
                artifact.fields["parity_note"] = runtime.unavailable
            yield artifact

    def usage(self, spec) -> dict:
        text = spec.task == "text-classification"
        return {"coreml_outputs": list(OUTPUTS), "coreml_input": TEXT_INPUT_NAME if text else INPUT_NAME}

    def source_among(self, role, precision, earlier):
        return onnx_twin(role, precision, earlier)

    def estimate_file(self, artifact, target):
        """Its ONNX twin's graph, for a Core ML target only."""
        return super().estimate_file(artifact, target) if target.runtime in self.ships_to else None

    def estimate_precision(self, artifact, target) -> str:
        return "int8" if artifact.int8 else "fp16"


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
