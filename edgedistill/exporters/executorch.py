"""ExecuTorch: .pte programs lowered to XNNPACK (Android and iOS CPUs), fp32 and int8, and for iOS targets one
lowered to the Core ML delegate. int8 is XNNPACK's own PT2E scheme (symmetric per-channel weights): the qat
stage's model when it trained in that scheme (ExecuTorch and LiteRT targets), else XNNPACK's post-training
quantizer on the student's weights (QAT-fine-tuned for another runtime, whose Q/DQ placement XNNPACK would not
fuse), calibrated on the training split's head. Programs take batch 1, as an app calls them."""

from __future__ import annotations

import warnings

import torch

from edgedistill import io
from edgedistill.errors import RefusedError
from edgedistill.exporters import EXPORTERS, FP32_MODULE, INT8_MODULE
from edgedistill.exporters.mobile import MobileExporter
from edgedistill.exporters.onnx import exporter_failure

COMPUTE_TARGETS = ("aten.convolution.default", "aten.conv2d.default", "aten.linear.default", "aten.addmm.default",
                   "aten.mm.default", "aten.bmm.default", "aten.matmul.default")
GLUE = ("getitem",)  # tuple indexing around a delegate call: not an operator of the model


def xnnpack_int8(module: torch.nn.Module, example: torch.Tensor, calibration: torch.Tensor):
    """`module` quantized by XNNPACK's PT2E quantizer (symmetric per-channel int8), calibrated on `calibration`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                        get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(module, (torch.cat([example, example]),),  # batch 1 would specialize
                                dynamic_shapes=({0: batch},)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(0, len(calibration), 64):
            prepared(calibration[i : i + 64])
    return convert_pt2e(prepared)


def integer_compute(program) -> tuple[int, int]:
    """(compute ops, those whose every tensor input is dequantized int8) in an exported program's graph."""
    compute = integer = 0
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target) in COMPUTE_TARGETS:
            compute += 1
            inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            integer += bool(inputs) and all("dequantize" in str(a.target) for a in inputs)
    return compute, integer


def lower(module: torch.nn.Module, example: torch.Tensor, partitioner, path, delegate: str) -> dict:
    """Export, lower to `partitioner`'s backend, write `path` atomically; returns the "graph" record."""
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from edgedistill.mobile_graphs import composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, (example,))
            compute, integer = integer_compute(program)
            edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
            info = get_delegation_info(edge.exported_program().graph_module)
            buffer = edge.to_executorch().buffer
        except Exception as e:
            raise RefusedError(f"export {path.name}: ExecuTorch lowering failed: "
                               f"{exporter_failure(e, 'ExecuTorch')}") from None
    io.write_bytes(path, buffer)
    table = info.get_operator_delegation_dataframe()
    rows = [r for r in table.to_dict("records") if r["op_type"] not in (*GLUE, "Total")]
    left = {r["op_type"]: int(r["occurrences_in_non_delegated_graphs"]) for r in rows
            if r["occurrences_in_non_delegated_graphs"]}
    delegated = sum(int(r["occurrences_in_delegated_graphs"]) for r in rows)
    return composition(delegated + sum(left.values()), compute, integer, delegated, info.num_delegated_subgraphs,
                       delegate, left)


def _coreml_partitioner(target):
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from edgedistill.targets import CoreMLSettings

    settings = target.coreml or CoreMLSettings()
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=getattr(ct.target, settings.minimum_deployment_target),
        compute_precision=ct.precision.FLOAT16, compute_unit=getattr(ct.ComputeUnit, settings.compute_units))
    return CoreMLPartitioner(compile_specs=specs)


@EXPORTERS.register("executorch")
class ExecuTorchProgram(MobileExporter):
    """student.fp32.pte and student.int8.pte (XNNPACK), `for_target` on the precision the target asks for;
    student.coreml.pte (Core ML delegate, fp16) for iOS targets, lowered and read here, run on Apple devices."""

    name = "executorch"
    format, kinds, suffix, runtime, kind = "executorch", ("pte", "pte-coreml"), ".pte", "executorch", "pte"
    tasks, needs = ("image-classification",), (FP32_MODULE, INT8_MODULE)
    ships_to = checked_on = ("executorch",)
    scheme = "xnnpack-pt2e-ptq (symmetric per-channel int8 weights, int8 activations)"

    def write_fp32(self, module, example, path):
        return {"graph": lower(module, example, _xnnpack(), path, "XNNPACK")}

    def quantize(self, module, example, calibration):
        return xnnpack_int8(module, example, calibration), None

    def write_int8(self, quantized, handle, example, path):
        return self.write_fp32(quantized, example, path)

    def describe(self, path):
        from edgedistill.mobile_graphs import read_pte

        read = read_pte(path)
        return {"io": {"inputs": read["inputs"], "outputs": read["outputs"]}}

    def export(self, job):
        yield from super().export(job)
        if job.target.os == "ios":
            path = job.stage_dir / "student.coreml.pte"
            graph = lower(job.modules["student"], job.spec.example_input(1), _coreml_partitioner(job.target), path,
                          "CoreML")
            from edgedistill.runtimes.executorch import COREML_UNAVAILABLE

            yield self.artifact("fp16", path, None, {"graph": graph, "parity_note": COREML_UNAVAILABLE},
                                kind="pte-coreml")


def _xnnpack():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner()
