"""Which tensors QAT fake-quantizes: those ONNX Runtime's QDQ fusions need to run each layer as an integer kernel.

ORT turns DQ -> Conv/Gemm -> Q into QLinearConv/QGemm, DQ, DQ -> Add/Mul -> Q into QLinearAdd/QLinearMul,
DQ -> GlobalAveragePool/AveragePool/Sigmoid -> Q into their QLinear kernels, and drops a Relu or Clip in front of
a Q whose range already clips. It needs the Q right after the conv: torchao's X86 quantizer puts it after the
conv's activation instead (inductor fuses conv + HardSwish/SiLU/GELU), which left those convs in float with
conversions around them, 1.3-3.4x slower than fp32 on MobileNetV3 / EfficientNet / ConvNeXt. So, node by node
on the exported aten graph (no module patterns: torchvision's shared ReLU module and timm's BatchNormAct2d break
those):
- conv / linear: activation and per-channel weight in; the output quantized after its BatchNorm and a
  following ReLU / ReLU6 / clamp (ORT folds them into the kernel). A classifier that feeds the graph output
  stays float-out (QGemm writes float).
- HardSwish, SiLU, GELU, hardsigmoid, sigmoid, ...: output quantized, so the next layer reads int8 and the
  float op sits between a DQ and a Q (ORT has no int8 HardSwish; Sigmoid fuses to QLinearSigmoid).
- residual add, squeeze-excitation mul (two activations, not a parameter), global / average pools: inputs and
  output quantized; max pool, flatten and reshapes share their input's quantization (ORT runs them on int8).
"""

from __future__ import annotations

import torch
import torch.fx

aten = torch.ops.aten
MATMULS = {aten.conv1d.default, aten.conv2d.default, aten.linear.default}
BATCH_NORMS = {aten.batch_norm.default, aten._native_batch_norm_legit.default,
               aten._native_batch_norm_legit_no_training.default, aten.cudnn_batch_norm.default}
CLIPS = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
         aten.clamp.default, aten.clamp_.default}  # ORT drops these in front of a Q whose range clips
ACTIVATIONS = {aten.hardswish.default, aten.hardswish_.default, aten.silu.default, aten.silu_.default,
               aten.gelu.default, aten.gelu_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default,
               aten.sigmoid.default, aten.sigmoid_.default, aten.mish.default, aten.mish_.default,
               aten.tanh.default, aten.leaky_relu.default, aten.leaky_relu_.default, *CLIPS}
BINARY = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor}
POOLS = {aten.adaptive_avg_pool2d.default, aten.avg_pool2d.default, aten.mean.dim}
SHARING = {aten.max_pool2d.default, aten.flatten.using_ints, aten.reshape.default, aten.view.default}
KEY = "quantization_annotation"


def make_quantizer(config, fp32_blocks=()):
    """A torchao PT2E quantizer that annotates as above with `config` (a QuantizationConfig), leaving the nodes
    of the modules named in `fp32_blocks` in float."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class OrtQDQQuantizer(Quantizer):
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            split_silu(model)
            return model

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotate(model.graph, config, fp32_blocks)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return OrtQDQQuantizer()


def split_silu(model: torch.fx.GraphModule) -> None:
    """SiLU -> x * sigmoid(x), the form ORT runs in int8 (QLinearSigmoid, a lookup table, and QLinearMul): as one
    float op between a DQ and a Q it made EfficientNet-B0's int8 1.3x slower than ORT's own static PTQ."""
    graph = model.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (aten.silu.default, aten.silu_.default):
            with graph.inserting_before(node):
                gate = graph.call_function(aten.sigmoid.default, (node.args[0],))
                product = graph.call_function(aten.mul.Tensor, (node.args[0], gate))
            for new in (gate, product):
                new.meta.update({k: v for k, v in node.meta.items() if k != "quantization_annotation"})
            node.replace_all_uses_with(product)
            graph.erase_node(node)
    model.recompile()


def in_blocks(node: torch.fx.Node, blocks) -> bool:
    if not blocks:
        return False
    names = [path.removeprefix("L['self'].") for path, _ in node.meta.get("nn_module_stack", {}).values()]
    return any(name == b or name.startswith(b + ".") for name in names for b in blocks)


def _from_float_layer(arg, blocks) -> bool:
    """`arg` is a float conv/linear layer's output (a precision plan's fp32 block), through its BatchNorm and
    activations. A Q there would sandwich that layer between a DQ and a Q, and ONNX Runtime then quantizes its
    weights itself (its WeightBiasQuantization pass): the layer would not stay float."""
    while isinstance(arg, torch.fx.Node) and arg.op == "call_function":
        if arg.target in MATMULS:
            return in_blocks(arg, blocks)
        if arg.target not in BATCH_NORMS and arg.target not in ACTIVATIONS:
            return False
        arg = arg.args[0]
    return False


def _is_activation(arg) -> bool:
    """A float tensor computed from the input, not a parameter, buffer or scalar."""
    if not isinstance(arg, torch.fx.Node) or arg.op not in ("call_function", "placeholder"):
        return False
    value = arg.meta.get("val")
    return isinstance(value, torch.Tensor) and value.is_floating_point() and not _is_param(arg)


def _is_param(node: torch.fx.Node) -> bool:
    # a lifted parameter / buffer arrives as a get_attr in the unlifted module; a placeholder is the input
    return node.op == "get_attr"


def _sole_user(node: torch.fx.Node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def annotate(graph: torch.fx.Graph, config, fp32_blocks=()) -> None:
    from torchao.quantization.pt2e.quantizer import (QuantizationAnnotation, SharedQuantizationSpec,
                                                     get_input_act_qspec, get_output_act_qspec, get_weight_qspec)

    act_in, act_out, weight = get_input_act_qspec(config), get_output_act_qspec(config), get_weight_qspec(config)

    def ann(node) -> QuantizationAnnotation:
        if KEY not in node.meta:
            node.meta[KEY] = QuantizationAnnotation(input_qspec_map={}, _annotated=True)
        return node.meta[KEY]

    def quantized_out(node) -> bool:
        return KEY in node.meta and node.meta[KEY].output_qspec is not None

    def read_int8(node, arg) -> None:
        """`node` reads `arg` quantized: through its producer's Q when there is one, else its own."""
        if not quantized_out(arg):
            ann(node).input_qspec_map[arg] = act_in

    def quantize_out(node) -> None:
        if not any(u.op == "output" for u in node.users):  # logits stay float
            ann(node).output_qspec = act_out

    nodes = [n for n in graph.nodes if n.op == "call_function" and not in_blocks(n, fp32_blocks)]
    for node in nodes:  # the integer kernels first: their outputs decide where the Qs go
        if node.target not in MATMULS or not isinstance(node.args[1], torch.fx.Node):
            continue
        inputs = ann(node).input_qspec_map
        inputs[node.args[0]] = act_in
        inputs[node.args[1]] = weight
        end = node
        nxt = _sole_user(end)
        if nxt is not None and nxt.target in BATCH_NORMS and nxt.args[0] is end:
            end = nxt
            nxt = _sole_user(end)
        if nxt is not None and nxt.target in CLIPS and not in_blocks(nxt, fp32_blocks):
            end = nxt
        quantize_out(end)
    for node in nodes:
        if any(_from_float_layer(a, fp32_blocks) for a in node.args[:2]):
            continue  # reads a float layer: stays float too
        if node.target in ACTIVATIONS and _is_activation(node.args[0]) and not quantized_out(node):
            if node.target not in CLIPS or quantized_out(node.args[0]):  # a bare ReLU needs no Q of its own
                quantize_out(node)
        elif node.target in BINARY and all(_is_activation(a) for a in node.args[:2]):
            for arg in node.args[:2]:
                read_int8(node, arg)
            nxt = _sole_user(node)
            quantize_out(nxt if nxt is not None and nxt.target in CLIPS else node)
        elif node.target in POOLS and _is_activation(node.args[0]) and _spatial(node):
            read_int8(node, node.args[0])
            quantize_out(node)
        elif node.target in SHARING and isinstance(node.args[0], torch.fx.Node) and quantized_out(node.args[0]):
            ann(node).output_qspec = SharedQuantizationSpec(node.args[0])


def _spatial(node: torch.fx.Node) -> bool:
    """A mean over H and W of an NCHW tensor (GlobalAveragePool once exported); any pooling op is."""
    if node.target is not aten.mean.dim:
        return True
    rank = node.args[0].meta["val"].dim()
    return rank == 4 and sorted(d % rank for d in node.args[1]) == [2, 3]
