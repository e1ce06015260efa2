"""Latency estimated for a device this machine cannot stand in for: a per-layer roofline over the ONNX graph.

Each compute node costs max(arithmetic time, memory time) at the target's datasheet peaks scaled by
efficiency factors, plus a fixed dispatch overhead per node:

    t_node = max(2 * MACs / (peak_ops * compute_eff), bytes_moved / (bandwidth * memory_eff)) + overhead

bytes_moved = weights + input and output activations at the precision's width. The efficiency factors are
the fraction of datasheet peak that small-batch inference typically reaches (nn-Meter and the vendors'
published benchmarks land between 20% and 60% for CPUs and NPUs at batch 1); they are rough, and every
figure this module makes is labelled "estimated", never "measured"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Fraction of peak reached at batch 1, and per-node dispatch cost, by compute unit.
EFFICIENCY = {
    "cpu": {"compute": 0.35, "memory": 0.6, "overhead_us": 4.0},
    "gpu": {"compute": 0.25, "memory": 0.6, "overhead_us": 10.0},
    "ane": {"compute": 0.5, "memory": 0.6, "overhead_us": 8.0},
}
COMPUTE_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul",
               "FusedConv", "ConvTranspose"}


@dataclass
class NodeCost:
    name: str
    op: str
    macs: int
    bytes: int
    ms: float


def _shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor, the batch dimension fixed to 1."""
    import onnx

    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if not d.dim_value:
                d.dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
        if dims and all(dims):
            out[v.name] = dims
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _node_macs(node, shapes) -> int:
    out = shapes.get(node.output[0])
    weight_index = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}.get(node.op_type, 1)
    weight = shapes.get(node.input[weight_index]) if len(node.input) > weight_index else None
    if out is None or weight is None:
        return 0
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv", "FusedConv", "ConvTranspose"):
        # every output element sums over (input channels / groups) x kernel window
        return int(np.prod(out) * int(np.prod(weight[1:])))
    if len(weight) < 2:
        return 0
    # Gemm/MatMul: each output element is a dot product over K (B is [K, N], or [N, K] with transB)
    trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
    k = weight[-1] if node.op_type in ("Gemm", "QGemm") and trans_b else weight[-2]
    return int(np.prod(out) * k)


def estimate(onnx_path: Path, target, precision: str | None = None) -> dict:
    """{"kind": "estimated", "p50", "p90", "p99", "layers": [...]} for `onnx_path` on `target`.

    precision: "int8" | "fp16" | "fp32"; default from the graph (integer kernels -> int8) and the target."""
    import onnx

    model = onnx.load(str(onnx_path))
    shapes = _shapes(model)
    ops = {n.op_type for n in model.graph.node}
    if precision is None:
        quantized = bool(ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm"})
        precision = "int8" if quantized else ("fp16" if target.runtime == "coreml" else "fp32")
    peak_gops = {"int8": target.peak_int8_gops, "fp16": target.peak_fp16_gflops, "fp32": target.peak_fp32_gflops}
    peak = peak_gops[precision] or target.peak_fp16_gflops or target.peak_fp32_gflops or target.peak_int8_gops
    bandwidth = target.memory_bandwidth_gbs
    if not peak or not bandwidth:
        from edgedistill.errors import UserError

        raise UserError(f"target {target.name}: needs peak compute and memory_bandwidth_gbs to estimate latency")
    eff = EFFICIENCY[target.compute_unit]
    width = {"int8": 1, "fp16": 2, "fp32": 4}[precision]
    layers = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        macs = _node_macs(node, shapes)
        moved = sum(int(np.prod(shapes[t])) for t in [*node.input[:2], node.output[0]] if t in shapes) * width
        compute_ms = 2 * macs / (peak * 1e9 * eff["compute"]) * 1e3
        memory_ms = moved / (bandwidth * 1e9 * eff["memory"]) * 1e3
        layers.append(NodeCost(node.name, node.op_type, macs, moved, max(compute_ms, memory_ms)))
    # Quantize/dequantize pairs around compute nodes fuse into integer kernels when the runtime loads the
    # graph (QLinearConv...), so they cost no dispatch of their own; other nodes count a quarter of one.
    other = sum(1 for n in model.graph.node if n.op_type not in COMPUTE_OPS | {"QuantizeLinear", "DequantizeLinear"})
    total = sum(c.ms for c in layers) + (len(layers) + other * 0.25) * eff["overhead_us"] / 1e3
    top = sorted(layers, key=lambda c: -c.ms)[:5]
    return {
        "kind": "estimated", "p50": total, "p90": total, "p99": total, "precision": precision,
        "threads": target.threads, "macs": sum(c.macs for c in layers), "method": "roofline per layer",
        "efficiency": eff, "layers": [{"name": c.name, "op": c.op, "macs": c.macs, "ms": c.ms} for c in top],
    }
