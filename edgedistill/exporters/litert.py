"""LiteRT (TensorFlow Lite): .tflite flatbuffers, fp32 and int8, converted by litert-torch and run by the LiteRT
interpreter with its default XNNPACK delegate, as an Android app runs them. int8 is the qat stage's own model
when it trained in XNNPACK's scheme (ExecuTorch and LiteRT targets), else litert-torch's PT2E scheme (symmetric
per-channel weights, int8 activations) on the student's weights, calibrated on the training split's head; its
file takes and returns int8 tensors, with their scales in the file. Batch 1, as an app calls it."""

from __future__ import annotations

import contextlib
import io as _io
import warnings

import torch

from edgedistill.errors import RefusedError
from edgedistill.exporters import EXPORTERS, FP32_MODULE, INT8_MODULE
from edgedistill.exporters.mobile import MobileExporter
from edgedistill.exporters.onnx import exporter_failure
from edgedistill.io import atomic_path

UNAVAILABLE = "litert-torch is not installed; bash scripts/setup.sh installs it (see pyproject.toml's litert extra)"


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert"))


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress line per conversion step; its converter logs natively."""
    from edgedistill.mobile_graphs import quiet_native

    with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()), \
            contextlib.redirect_stderr(_io.StringIO()), quiet_native():
        warnings.simplefilter("ignore")
        yield


def convert(module: torch.nn.Module, example: torch.Tensor, path, quantizer=None) -> None:
    """Write `module` (a PT2E-converted graph when `quantizer` is given) as a .tflite, atomically."""
    import litert_torch

    with _quiet():
        try:
            config = None
            if quantizer is not None:
                from litert_torch.quantize.quant_config import QuantConfig

                config = QuantConfig(pt2e_quantizer=quantizer)
            module.training = False  # a PT2E graph refuses .eval(); the converter warns on a training-mode module
            model = litert_torch.convert(module, (example,), quant_config=config)
            with atomic_path(path) as tmp:
                model.export(str(tmp))
        except Exception as e:
            raise RefusedError(f"export {path.name}: LiteRT conversion failed: "
                               f"{exporter_failure(e, 'LiteRT')}") from None


def converter_quantizer():
    """litert-torch's static int8 quantizer: its converter reads from it how the graph was quantized."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def litert_int8(module: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor):
    """(PT2E-converted module, its quantizer): litert-torch's static int8 scheme, calibrated on `calibration`."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = converter_quantizer()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet():
        graph = torch.export.export(module, (torch.cat([example, example]),),  # batch 1 would specialize
                                dynamic_shapes=({0: batch},)).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for i in range(0, len(calibration), 64):
                prepared(calibration[i : i + 64])
        return convert_pt2e(prepared, fold_quantize=False), quantizer


def unfold_weights(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of a PT2E-converted graph whose int8 constants are float constants quantized in the graph again:
    LiteRT's converter reads a weight's quantization from its quantize op and refuses a bare int8 tensor
    (torchao folds those ops into int8 constants). Requantizing the dequantized values gives the same integers."""
    import copy
    from operator import attrgetter

    ops = torch.ops.quantized_decomposed  # registered by torchao, which the converted graph came from
    quantize_of = {ops.dequantize_per_channel.default: ops.quantize_per_channel.default,
                   ops.dequantize_per_tensor.default: ops.quantize_per_tensor.default}
    graph_module = copy.deepcopy(converted)
    graph = graph_module.graph
    for node in list(graph.nodes):
        source = node.args[0] if node.op == "call_function" and node.target in quantize_of else None
        if not (isinstance(source, torch.fx.Node) and source.op == "get_attr"):
            continue
        values = [attrgetter(a.target)(graph_module) if isinstance(a, torch.fx.Node) else a for a in node.args]
        name = f"{source.target.replace('.', '_')}_float"
        graph_module.register_buffer(name, node.target(*values))
        with graph.inserting_before(node):
            weight = graph.get_attr(name)
            quantized = graph.call_function(quantize_of[node.target], (weight, *node.args[1:]))
        node.replace_input_with(source, quantized)
        if not source.users:  # the int8 constant leaves the copy with its node (torchao folds to top-level names)
            graph.erase_node(source)
            delattr(graph_module, source.target)
    graph_module.recompile()
    return graph_module


def composition(path) -> tuple[dict, dict]:
    """(the "graph" record, the file's inputs/outputs) of a .tflite: delegated ops by the XNNPACK delegate's
    op list in deployability.yaml."""
    from edgedistill.deployability import rules
    from edgedistill.mobile_graphs import composition as record, read_tflite

    read = read_tflite(path)
    xnnpack = {f"tflite::{op}" for op in rules()["litert"]["tflite"]["accelerators"]["cpu"]["ops"]["tflite"]}
    left = {op.split("::")[1]: n for op, n in read["operators"].items() if op not in xnnpack}
    ops = sum(read["operators"].values())
    graph = record(ops, read["compute_ops"], read["integer_compute_ops"], ops - sum(left.values()),
                   read["partitions"], "XNNPACK", left)
    return graph, {"inputs": read["inputs"], "outputs": read["outputs"]}


@EXPORTERS.register("litert")
class LiteRTModel(MobileExporter):
    """student.fp32.tflite and student.int8.tflite, `for_target` on the precision the target asks for."""

    name = "litert"
    format, kinds, suffix, runtime, kind = "litert", ("tflite",), ".tflite", "litert", "tflite"
    tasks, needs = ("image-classification",), (FP32_MODULE, INT8_MODULE)
    ships_to = checked_on = ("litert",)
    scheme = "litert-pt2e-ptq (symmetric per-channel int8 weights, int8 activations and I/O)"

    def write_fp32(self, module, example, path):
        convert(module, example, path)
        return {}

    def quantize(self, module, example, calibration):
        return litert_int8(module, example, calibration)

    def from_qat(self, quantized):
        return unfold_weights(quantized), converter_quantizer()

    def write_int8(self, quantized, handle, example, path):
        convert(quantized, example, path, handle)
        return {}

    def describe(self, path):
        graph, tensors = composition(path)
        return {"graph": graph, "io": tensors}
