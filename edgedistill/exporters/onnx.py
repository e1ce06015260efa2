"""ONNX export with the dynamo exporter, and the post-pass that lets ONNX Runtime fuse an int8 QDQ graph
into integer kernels end to end."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import RefusedError
from edgedistill.io import atomic_path
from edgedistill.models import ModelSpec

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(module: nn.Module, spec: ModelSpec, path: Path, opset: int, *, int8: bool = False) -> None:
    """Write `module` as a single-file ONNX with a dynamic batch dimension (weights inline: the .ort
    converter cannot read external data)."""
    import onnx

    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    device = next(iter(module.parameters()), torch.zeros(0)).device
    example = spec.example_input(2).to(device)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=True, external_data=False, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            )
        except Exception as e:
            raise RefusedError(f"export {path.name}: the ONNX exporter failed: {exporter_failure(e)}") from None
        model = onnx.load(str(tmp))
        if int8:
            model = fuse_friendly_qdq(model)
        strip_metadata(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))


def exporter_failure(error: BaseException, fmt: str = "ONNX") -> str:
    """One line naming what failed: the operator with no `fmt` translation when an exporter's chained errors
    name one (its own first line is generic advice), else the first line of the error."""
    import re

    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(re.sub(r"\x1b\[[0-9;]*m", "", str(e)))
        e = e.__cause__ or e.__context__
    text = "\n".join(chain)
    op = re.search(r"OpOverload\(op='([\w.]+)'", text) or re.search(r"target=torch\.ops\.([\w.]+)", text)
    if op:
        return f"operator {op.group(1)} has no {fmt} translation; replace it in the model or register a translation"
    first = chain[0].strip().splitlines()
    return first[0] if first else error.__class__.__name__


def strip_metadata(model) -> None:
    """Drop the exporter's per-node stack traces: about half the bytes of a small int8 file."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def fuse_friendly_qdq(model):
    """Rewrite an exported PT2E QDQ graph so ONNX Runtime fuses every layer into integer kernels.

    - ReduceMean over H, W -> GlobalAveragePool: ORT has no quantized ReduceMean, but fuses
      DQ -> GlobalAveragePool -> Q into QLinearGlobalAveragePool.
    - Float Conv/Gemm biases -> int32 + DequantizeLinear (scale = activation scale * weight scale): the QDQ
      Gemm fusion needs a DQ on all three inputs (else the classifier stays float), and the bias DQ that ORT
      inserts for convs on its own lacks a zero point, which breaks the .ort converter's runtime style.
    - Conv -> Div(constant) -> BatchNormalization, the QAT form of a conv that a precision plan keeps in
      float, folded into the conv's weights and bias (ORT folds neither op: two extra passes per layer).
    """
    import onnx
    from onnx import helper, numpy_helper

    _fold_float_conv_bn(model)
    init = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    new_nodes = []
    for n in model.graph.node:
        if n.op_type == "ReduceMean" and len(n.input) == 2 and n.input[1] in init and rank.get(n.input[0]) == 4:
            axes = sorted(int(a) % 4 for a in numpy_helper.to_array(init[n.input[1]]))
            keepdims = [a.i for a in n.attribute if a.name == "keepdims"]
            if axes == [2, 3] and keepdims in ([], [1]):
                n.op_type = "GlobalAveragePool"
                del n.input[1]
                del n.attribute[:]
        if n.op_type in ("Gemm", "Conv") and len(n.input) == 3 and n.input[2] in init:
            act, weight = producer.get(n.input[0]), producer.get(n.input[1])
            if not (act and weight and act.op_type == weight.op_type == "DequantizeLinear"):
                continue
            if act.input[1] not in init or weight.input[1] not in init:
                continue
            scale = (numpy_helper.to_array(init[act.input[1]]) * numpy_helper.to_array(init[weight.input[1]])).astype(np.float32)
            if scale.ndim > 1:
                continue
            bias = numpy_helper.to_array(init[n.input[2]])
            name = n.input[2] + "_int32"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.round(bias / scale).astype(np.int32), name),
                numpy_helper.from_array(scale, name + "_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int32), name + "_zero_point"),
            ])
            new_nodes.append(helper.make_node("DequantizeLinear", [name, name + "_scale", name + "_zero_point"],
                                              [name + "_dq"], axis=0))
            n.input[2] = name + "_dq"
    for k, node in enumerate(new_nodes):  # constant-only nodes: at the front, topological order holds
        model.graph.node.insert(k, node)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def _fold_float_conv_bn(model) -> None:
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    for mul in [n for n in model.graph.node if n.op_type == "Mul" and all(t in init for t in n.input)]:
        a, b = (numpy_helper.to_array(init[t]) for t in mul.input)  # a weight scaled by a constant
        model.graph.initializer.append(numpy_helper.from_array((a * b).astype(a.dtype), mul.output[0]))
        init[mul.output[0]] = model.graph.initializer[-1]
        model.graph.node.remove(mul)
    users: dict[str, list] = {}
    for n in model.graph.node:
        for t in n.input:
            users.setdefault(t, []).append(n)
    drop = []
    for conv in model.graph.node:
        if conv.op_type != "Conv" or conv.input[1] not in init or (len(conv.input) > 2 and conv.input[2] not in init):
            continue
        div = users.get(conv.output[0], [None])
        if len(div) != 1 or div[0] is None or div[0].op_type != "Div" or div[0].input[1] not in init:
            continue
        div = div[0]
        bn = users.get(div.output[0], [])
        if len(bn) != 1 or bn[0].op_type != "BatchNormalization" or not all(t in init for t in bn[0].input[1:5]):
            continue
        bn = bn[0]
        gamma, beta, mean, var = (numpy_helper.to_array(init[t]).astype(np.float64) for t in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        w = numpy_helper.to_array(init[conv.input[1]]).astype(np.float64)
        c = np.broadcast_to(numpy_helper.to_array(init[div.input[1]]).astype(np.float64).reshape(-1), gamma.shape)
        b = numpy_helper.to_array(init[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 else 0.0
        k = gamma / (c * np.sqrt(var + eps))
        weight = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        bias = (k * (b - mean * c) + beta).astype(np.float32)
        model.graph.initializer.extend([numpy_helper.from_array(weight, conv.output[0] + "_folded_w"),
                                        numpy_helper.from_array(bias, conv.output[0] + "_folded_b")])
        del conv.input[1:]
        conv.input.extend([conv.output[0] + "_folded_w", conv.output[0] + "_folded_b"])
        conv.output[0] = bn.output[0]  # the conv now produces what the BatchNormalization did
        drop += [div, bn]
    for n in drop:
        model.graph.node.remove(n)


def weight_bytes(path: Path) -> int:
    """Bytes of the initializers (the weights) in an ONNX file."""
    import onnx
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer))
