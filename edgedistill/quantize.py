"""Int8 quantization: torchao PT2E quantization-aware training (fake-quant in the graph, trained under the
teacher) in the scheme the target's runtime runs fastest (SCHEMES), ONNX Runtime static or NNCF post-training
quantization as baselines when QAT is off, and ONNX Runtime dynamic quantization for transformers."""

from __future__ import annotations

import logging
import os
from operator import attrgetter
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.errors import RefusedError
from edgedistill.models import ModelSpec

# torchao's bundled .so files hold CUDA kernels for other schemes than PT2E; loading them on a CPU-only
# machine only logs failures.
if not torch.cuda.is_available():
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")

logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao registers an enum the old way

MAX_BATCH = 65536


# Int8 schemes by target runtime. ONNX Runtime (x86 and ARM alike) fuses U8 asymmetric activations with S8
# per-channel symmetric weights into QLinearConv/QGemm; with S8 activations its x86 kernels leave the convs in
# float. Core ML's activation quantization is symmetric int8 only (coremltools' linear_symmetric), the form the
# Neural Engine runs W8A8 in, so Core ML targets train with that. ExecuTorch and LiteRT both run int8 through
# XNNPACK (S8 asymmetric activations, S8 per-channel weights in -127..127), so their targets train with
# XNNPACK's own quantizer: its Q/DQ pattern is what XNNPACK's partitioner and LiteRT's converter lower to integer
# kernels. (litert-torch's own QAT annotation fails under torch 2.13: it hands a function to torch.export.)
SCHEMES = {
    "onnxruntime-u8s8": "u8 asymmetric activations, s8 per-channel symmetric weights",
    "coreml-w8a8": "s8 symmetric activations, s8 per-channel symmetric weights",
    "xnnpack-s8": "XNNPACK's quantizer: s8 asymmetric activations, s8 per-channel symmetric weights",
}
RUNTIME_SCHEMES = {"coreml": "coreml-w8a8", "executorch": "xnnpack-s8", "litert": "xnnpack-s8"}


def scheme_for(target) -> str:
    return RUNTIME_SCHEMES.get(target.runtime, "onnxruntime-u8s8") if target is not None else "onnxruntime-u8s8"


FULL_RANGE = (-128, 127)


def _seven_bit(weight_range: tuple[int, int]) -> bool:
    """ONNX Runtime's and NNCF's quantizers know one reduced weight range: 7 bits (edgedistill.int8_arithmetic)."""
    return tuple(weight_range) != FULL_RANGE


def _with_weight_range(config, weight_range: tuple[int, int]):
    """`config` with its weights in `weight_range`: training sees exactly the weight grid the file will hold."""
    import dataclasses

    if not _seven_bit(weight_range):
        return config
    weight = dataclasses.replace(config.weight, quant_min=weight_range[0], quant_max=weight_range[1])
    return dataclasses.replace(config, weight=weight)


def _quantization_config(scheme: str, weight_range: tuple[int, int] = FULL_RANGE):
    import dataclasses

    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import get_default_x86_inductor_quantization_config

    config = _with_weight_range(get_default_x86_inductor_quantization_config(is_qat=True), weight_range)
    if scheme == "coreml-w8a8":
        act = dataclasses.replace(config.input_activation, dtype=torch.int8, quant_min=-128, quant_max=127,
                                  qscheme=torch.per_tensor_symmetric)
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return config


def scheme_missing(scheme: str) -> str | None:
    """Why this machine cannot train in `scheme`, or None."""
    import importlib.util

    if scheme == "xnnpack-s8" and importlib.util.find_spec("executorch") is None:
        return ("XNNPACK's quantizer (int8 scheme xnnpack-s8), part of ExecuTorch, is not installed; bash "
                "scripts/setup.sh installs it (see pyproject.toml's executorch extra)")
    return None


def _qat_quantizer(scheme: str, weight_range: tuple[int, int], fp32_blocks):
    from edgedistill.qdq_annotation import in_blocks, make_quantizer

    if scheme != "xnnpack-s8":
        return make_quantizer(_quantization_config(scheme, weight_range), fp32_blocks)
    if why := scheme_missing(scheme):
        raise RefusedError(f"qat: {why}")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                        get_symmetric_quantization_config)

    config = _with_weight_range(get_symmetric_quantization_config(is_per_channel=True, is_qat=True), weight_range)
    return XNNPACKQuantizer().set_global(config).set_filter_function(lambda node: not in_blocks(node, fp32_blocks))


def prepare_qat(module: nn.Module, spec: ModelSpec, scheme: str = "onnxruntime-u8s8",
                fp32_blocks: list[str] = (), weight_range: tuple[int, int] = FULL_RANGE) -> torch.fx.GraphModule:
    """Export the fp32 model (batch dimension dynamic: the last batch of an epoch is smaller) and insert
    fake-quant in the target's int8 scheme (SCHEMES) with weights in `weight_range` (the target's
    int8_weight_range), except in `fp32_blocks` (module paths a precision plan keeps in float). BatchNorm stays
    trainable in the graph and is folded into the convs at `convert`."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    device = next(module.parameters()).device
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = spec.example_input(2).to(device)
    nudge_zero_bn_weights(module)
    graph = torch.export.export(module.train(), (example,), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_qat_pt2e(graph, _qat_quantizer(scheme, weight_range, fp32_blocks))
    setattr(prepared, BN_LITERALS, {f"{name}.running_var": (0.1 if m.momentum is None else m.momentum, m.eps)
                                    for name, m in module.named_modules()
                                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None})
    restore_batch_norm_literals(prepared)
    if not any(name.startswith("activation_post_process") for name, _ in prepared.named_children()):
        # Seen with torch 2.11 + torchao 0.18: the quantizer's patterns match nothing and QAT would
        # silently train a float model.
        raise RefusedError(f"qat: the int8 quantizer found no layer to quantize with torch {torch.__version__}; "
                           "run the qat stage with torch 2.13 (the earlier stages resume from the run directory)")
    return prepared


BN_LITERALS = "batch_norm_literals"  # prepared-graph attribute: running_var's name -> (momentum, eps)


def restore_batch_norm_literals(prepared: torch.fx.GraphModule) -> int:
    """Give each BatchNorm of a prepared graph its own module's momentum and eps again; returns how many ops changed.

    torchao rewrites BatchNorms from patterns with momentum 0.1 and eps 1e-5 baked in: the QAT conv-BN fusion
    (it copies the conv's literal arguments, not the BatchNorm's) and every train/eval switch. torchvision's
    MobileNetV3 uses eps 1e-3: with 1e-5 its near-constant channels grew up to 10x per layer, and the eval-mode
    logits came out 1000x the fp32 ones. The fused pattern reads eps twice: running_var + eps (the weight
    scale) and batch_norm's own."""
    literals = getattr(prepared, BN_LITERALS, {})
    changed = 0
    for node in prepared.graph.nodes:
        if node.op != "call_function" or node.target not in (torch.ops.aten.batch_norm.default, torch.ops.aten.add.Tensor):
            continue
        bn = node.target is torch.ops.aten.batch_norm.default
        var = node.args[4] if bn else node.args[0]
        if not (isinstance(var, torch.fx.Node) and var.op == "get_attr" and var.target in literals):
            continue
        momentum, eps = literals[var.target]
        if bn:  # input, weight, bias, running mean, running var, training, momentum, eps, cudnn_enabled
            args = (*node.args[:6], momentum, eps, *node.args[8:])
        elif len(node.args) == 2 and isinstance(node.args[1], float):  # the fused pattern's running_var + eps
            args = (var, eps)
        else:
            continue
        changed += args != tuple(node.args)
        node.args = args
    if changed:
        prepared.recompile()
    return changed


ZERO_BN_WEIGHT = 1e-6


def nudge_zero_bn_weights(module: nn.Module) -> int:
    """Set BatchNorm weights that are exactly 0 to ZERO_BN_WEIGHT (in place); returns how many.

    QAT's conv-BN fusion runs conv(x, w * gamma / std) / (gamma / std): a zero gamma (timm's ResNets zero-init
    the last BN of each residual block) makes it 0 / 0, NaN everywhere downstream. 1e-6 times a normalized
    activation is far below any int8 step, so the block still starts as the identity."""
    count = 0
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                zero = m.weight == 0
                count += int(zero.sum())
                m.weight[zero] = ZERO_BN_WEIGHT
    return count


def set_mode(model: nn.Module, training: bool) -> None:
    """Prepared graphs refuse .train()/.eval(); these swap the BatchNorm/dropout ops instead."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if training else move_exported_model_to_eval)(model)
    restore_batch_norm_literals(model)  # the switch rewrote them to torchao's defaults


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Fold BN, freeze the quantization parameters and store the weights as int8 (in place).

    torchao's BN folding traces pattern graphs for conv1d/conv2d/conv_transpose1d/2d alike, a fixed ~15-30 s
    on 2 cores; when the model has only 2-D convs we restrict it to conv2d (same result, ~4x faster)."""
    import torch.nn.functional as F
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    set_mode(prepared, False)
    drop_batch_counters(prepared)
    targets = {str(n.target) for n in prepared.graph.nodes if n.op == "call_function"}
    only_conv2d = not any(t in targets for t in ("aten.conv1d.default", "aten.conv_transpose1d.default",
                                                   "aten.conv_transpose2d.input", "aten.conv3d.default"))
    try:
        import torchao.quantization.pt2e.qat_utils as qat_utils

        original = qat_utils._fold_conv_bn_qat_helper
    except (ImportError, AttributeError):
        only_conv2d = False
    if not only_conv2d:
        return round_biases(convert_pt2e(prepared))
    qat_utils._fold_conv_bn_qat_helper = (
        lambda m, conv_fn, *a, **k: original(m, conv_fn, *a, **k) if conv_fn is F.conv2d else m
    )
    try:
        return round_biases(convert_pt2e(prepared))
    finally:
        qat_utils._fold_conv_bn_qat_helper = original


def round_biases(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Round each integer conv's and linear layer's bias to its int32 accumulator's step (input scale x
    weight scale), as the exported file stores it (exporters.onnx.fuse_friendly_qdq) and integer kernels add
    it: the torch int8 model then computes what the file does. In a network that amplifies small changes
    (a barely trained one), the float bias alone put ONNX Runtime's outputs 10-30% of a logit away."""
    dq_tensor = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    dq_channel = torch.ops.quantized_decomposed.dequantize_per_channel.default
    layers = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
    for node in converted.graph.nodes:
        if node.op != "call_function" or node.target not in layers or len(node.args) < 3:
            continue
        act, weight, bias = node.args[:3]
        if not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr" and isinstance(act, torch.fx.Node)
                and act.target == dq_tensor and isinstance(weight, torch.fx.Node) and weight.target == dq_channel
                and isinstance(act.args[1], float) and weight.args[1].op == "get_attr"):
            continue
        w_scale = attrgetter(weight.args[1].target)(converted)  # a get_attr target may be a dotted path
        step = (torch.tensor(act.args[1], dtype=torch.float32) * w_scale.float()).to(torch.float32)
        b = attrgetter(bias.target)(converted)
        q = torch.round(b.detach().float() / step).clamp(-2**31, 2**31 - 1)
        with torch.no_grad():
            b.copy_((q * step).to(b.dtype))
    return converted


def drop_batch_counters(graph_module: torch.fx.GraphModule) -> int:
    """Remove the in-place `num_batches_tracked += 1` that a training-mode export keeps for BatchNorms which
    count batches themselves (timm's BatchNormAct2d); returns how many. Nothing reads the counter once the
    momentum is fixed, but Core ML converts a buffer mutation into model state, which needs iOS 18."""
    graph, dropped = graph_module.graph, 0
    for node in list(graph.nodes):
        counter = node.args[0] if node.op == "call_function" and node.args else None
        if (node.target is torch.ops.aten.add_.Tensor and not node.users and isinstance(counter, torch.fx.Node)
                and counter.op == "get_attr" and str(counter.target).endswith("num_batches_tracked")):
            graph.erase_node(node)
            dropped += 1
    if dropped:
        graph.eliminate_dead_code()
        graph_module.recompile()
    return dropped


def _feeds(model, calibration: np.ndarray, batch_size: int) -> list[dict]:
    """Calibration batches as input feeds for the ONNX model's (single) input."""
    name = model.graph.input[0].name
    return [{name: np.ascontiguousarray(calibration[i : i + batch_size], dtype=np.float32)}
            for i in range(0, len(calibration), batch_size)]


def ptq_onnx(fp32_path: Path, out_path: Path, calibration: np.ndarray, batch_size: int = 32,
             nodes_to_quantize: list[str] | None = None, weight_range: tuple[int, int] = FULL_RANGE) -> None:
    """ONNX Runtime static quantization (QDQ, U8 activations, S8 per-channel weights, 7-bit when
    `weight_range` is reduced) calibrated on training inputs; `nodes_to_quantize` limits it to those nodes (a
    precision plan), None: every node.
    Runs in a temp dir: the quantizer writes intermediate models to the cwd."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(_feeds(onnx.load(str(fp32_path)), calibration, batch_size))

        def get_next(self):
            return next(self.batches, None)

    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()  # the quantizer runs elsewhere
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            quant_pre_process(str(fp32_path), "pre.onnx", skip_symbolic_shape=True)
            quantize_static("pre.onnx", "int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            nodes_to_quantize=nodes_to_quantize, reduce_range=_seven_bit(weight_range))
        finally:
            os.chdir(cwd)
        from edgedistill.io import write_bytes

        write_bytes(out_path, Path(tmp, "int8.onnx").read_bytes())


def nncf_ptq_onnx(fp32_path: Path, out_path: Path, calibration: np.ndarray, batch_size: int = 32,
                  weight_range: tuple[int, int] = FULL_RANGE) -> None:
    """NNCF post-training quantization on the ONNX model (its ONNX backend: U8 activations, S8 weights,
    fast bias correction), calibrated on training inputs. A reduced `weight_range` is NNCF's overflow fix on
    every layer (7-bit weights); otherwise it is off (NNCF's default applies it to the first layer only)."""
    import contextlib
    import io as _io

    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = onnx.load(str(fp32_path))
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):  # progress bars
        fix = OverflowFix.ENABLE if _seven_bit(weight_range) else OverflowFix.DISABLE
        quantized = nncf.quantize(model, nncf.Dataset(_feeds(model, calibration, batch_size)),
                                  subset_size=len(calibration),
                                  advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
    from edgedistill.io import write_bytes

    write_bytes(out_path, quantized.SerializeToString())


def dynamic_onnx(fp32_path: Path, out_path: Path, weight_range: tuple[int, int] = FULL_RANGE) -> None:
    """ONNX Runtime dynamic quantization for transformers: S8 weights (7-bit when `weight_range` is reduced;
    MatMul, Gemm and the embedding tables),
    activations quantized per batch at run time, so MatMuls run as integer kernels (DynamicQuantizeMatMul /
    MatMulInteger) with no calibration.
    Static QDQ on every op made a BERT 2.5x slower than fp32; dynamic made it 1.7x faster (STACK.md)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    del model.graph.value_info[:]  # the dynamo exporter's shapes make the quantizer's shape inference fail
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, str(Path(tmp, "fp32.onnx")))
        os.chdir(tmp)
        logging.disable(logging.WARNING)  # the quantizer advises pre-processing on the root logger
        try:
            # Gather too: the token embeddings are about half a small BERT's weights (SST-2 MiniLM student:
            # 53 -> 18 MB, same accuracy and latency)
            quantize_dynamic("fp32.onnx", "int8.onnx", weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm", "Gather"], reduce_range=_seven_bit(weight_range))
        finally:
            logging.disable(logging.NOTSET)
            os.chdir(cwd)
        from edgedistill.io import write_bytes

        write_bytes(out_path, Path(tmp, "int8.onnx").read_bytes())
