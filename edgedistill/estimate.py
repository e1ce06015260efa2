"""Latency estimated for a device this machine cannot stand in for: a per-layer roofline over the ONNX graph.

Each compute node costs max(arithmetic time, memory time) at the target's datasheet peaks scaled by
efficiency factors, plus a fixed dispatch overhead per node (other nodes: OTHER_NODE_WEIGHT of one):

    t_node = max(2 * MACs / (peak_ops * compute_eff), bytes_moved / (bandwidth * memory_eff)) + overhead

bytes_moved = weights + input and output activations at the precision's width. The CPU factors (one set per
precision) were calibrated with scripts/bench_estimator.py: 28 zoo models (18 fp32, 10 int8 static QDQ) measured
with ONNX Runtime on a 2-core AMD EPYC (AVX-512 VNNI) against the x86-avx512-vnni profile. Median absolute
error: 27% with the earlier datasheet guesses, 13.5% on held-out models (2-fold), 11.5% leave-one-out.
The int8 memory factor above 1 says small models run from cache, not DRAM: the fit absorbs that, so figures
for much larger models are rougher. On other CPUs (the phones' ARM cores) the same fractions are a transfer,
not a measurement. The GPU and ANE factors stay uncalibrated datasheet fractions (20-60% of peak at batch 1,
as nn-Meter and vendors' benchmarks report). Every figure this module makes is labelled
"estimated", never "measured"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Fraction of peak reached at batch 1, and per-node dispatch cost, by compute unit (the CPU's by precision).
EFFICIENCY = {
    "cpu": {"fp32": {"compute": 0.501, "memory": 0.902, "overhead_us": 5.70},  # calibrated (see above)
            "int8": {"compute": 0.437, "memory": 3.696, "overhead_us": 10.82}},
    "gpu": {"compute": 0.25, "memory": 0.6, "overhead_us": 10.0},
    "ane": {"compute": 0.5, "memory": 0.6, "overhead_us": 8.0},
}
# A node that is not a compute node (activation, pooling, add...) costs this fraction of one dispatch.
OTHER_NODE_WEIGHT = 0.25
COMPUTE_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul",
               "FusedConv", "ConvTranspose"}


@dataclass
class NodeCost:
    name: str
    op: str
    macs: int
    bytes: int
    ms: float = 0.0  # filled by roofline_ms


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


def efficiency(compute_unit: str, precision: str) -> dict:
    """The factors for a compute unit at a precision: the CPU's are keyed by precision (fp16 falls back to
    fp32's), the other units' are one set for all."""
    table = EFFICIENCY[compute_unit]
    if "compute" in table:
        return dict(table)
    return dict(table.get(precision) or table["fp32"])


def graph_work(model, precision: str) -> tuple[list[NodeCost], int]:
    """The roofline's inputs from an ONNX model: each compute node's MACs and bytes moved (weights + input and
    output activations at the precision's width; `ms` left 0), and the number of other nodes that dispatch
    (quantize/dequantize excluded: they fuse into the integer kernels when ONNX Runtime loads the graph)."""
    shapes = _shapes(model)
    width = {"int8": 1, "fp16": 2, "fp32": 4}[precision]
    layers = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        moved = sum(int(np.prod(shapes[t])) for t in [*node.input[:2], node.output[0]] if t in shapes) * width
        layers.append(NodeCost(node.name, node.op_type, _node_macs(node, shapes), moved, 0.0))
    other = sum(1 for n in model.graph.node if n.op_type not in COMPUTE_OPS | {"QuantizeLinear", "DequantizeLinear"})
    return layers, other


def roofline_ms(layers: list[NodeCost], other: int, peak_gops: float, bandwidth_gbs: float, eff: dict) -> float:
    """Total latency in ms; fills each layer's `ms`. Other nodes cost OTHER_NODE_WEIGHT of a dispatch each."""
    for c in layers:
        compute_ms = 2 * c.macs / (peak_gops * 1e9 * eff["compute"]) * 1e3
        memory_ms = c.bytes / (bandwidth_gbs * 1e9 * eff["memory"]) * 1e3
        c.ms = max(compute_ms, memory_ms)
    return sum(c.ms for c in layers) + (len(layers) + other * OTHER_NODE_WEIGHT) * eff["overhead_us"] / 1e3


def peaks(target, precision: str) -> tuple[float, float]:
    """(peak Gop/s at the precision, memory bandwidth GB/s) from the target's datasheet figures."""
    peak_gops = {"int8": target.peak_int8_gops, "fp16": target.peak_fp16_gflops, "fp32": target.peak_fp32_gflops}
    peak = peak_gops[precision] or target.peak_fp16_gflops or target.peak_fp32_gflops or target.peak_int8_gops
    bandwidth = target.memory_bandwidth_gbs
    if not peak or not bandwidth:
        from edgedistill.errors import UserError

        raise UserError(f"target {target.name}: needs peak compute and memory_bandwidth_gbs to estimate latency")
    return peak, bandwidth


def graph_precision(model, target) -> str:
    """int8 for a graph with integer kernels or quantize nodes, else the target's float precision."""
    ops = {n.op_type for n in model.graph.node}
    quantized = bool(ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger", "QGemm"})
    return "int8" if quantized else ("fp16" if target.runtime == "coreml" else "fp32")


def estimate(onnx_path: Path, target, precision: str | None = None) -> dict:
    """{"kind": "estimated", "p50", "p90", "p99", "layers": [...]} for `onnx_path` on `target`.

    precision: "int8" | "fp16" | "fp32"; default from the graph (integer kernels -> int8) and the target."""
    import onnx

    model = onnx.load(str(onnx_path))
    precision = precision or graph_precision(model, target)
    peak, bandwidth = peaks(target, precision)
    eff = efficiency(target.compute_unit, precision)
    layers, other = graph_work(model, precision)
    total = roofline_ms(layers, other, peak, bandwidth, eff)
    top = sorted(layers, key=lambda c: -c.ms)[:5]
    return {
        "kind": "estimated", "p50": total, "p90": total, "p99": total, "precision": precision,
        "threads": target.threads, "macs": sum(c.macs for c in layers), "method": "roofline per layer",
        "efficiency": eff, "layers": [{"name": c.name, "op": c.op, "macs": c.macs, "ms": c.ms} for c in top],
    }


def calibrate(samples: list[tuple[list[NodeCost], int, float]], peak_gops: float, bandwidth_gbs: float) -> dict:
    """CPU factors {"compute", "memory", "overhead_us"} that fit measured latencies: `samples` are
    (layers, other nodes, measured ms) from graph_work and a measurement, all at one precision and peak.

    Minimises the mean absolute log error (a ratio error: a 2x miss on a 0.05 ms model weighs what it weighs
    on a 5 ms one): a coarse log-spaced grid, then Nelder-Mead from the best point, in log space."""
    from scipy.optimize import minimize

    measured = np.log([ms for _, _, ms in samples])
    # Per sample: arrays of flops and bytes, and the dispatch count; vectorised over a grid of factors.
    flops = [np.array([2.0 * c.macs for c in layers]) for layers, _, _ in samples]
    moved = [np.array([float(c.bytes) for c in layers]) for layers, _, _ in samples]
    dispatches = np.array([len(layers) + other * OTHER_NODE_WEIGHT for layers, other, _ in samples])

    def loss(log_factors: np.ndarray) -> np.ndarray:
        """Mean |log(estimated / measured)| for factor rows [log compute, log memory, log overhead_us]."""
        lf = np.atleast_2d(log_factors)
        compute, memory, overhead_us = np.exp(lf[:, 0:1]), np.exp(lf[:, 1:2]), np.exp(lf[:, 2])
        totals = np.stack([
            np.maximum(f / (peak_gops * 1e9 * compute), b / (bandwidth_gbs * 1e9 * memory)).sum(axis=1) * 1e3
            + dispatches[i] * overhead_us / 1e3
            for i, (f, b) in enumerate(zip(flops, moved))], axis=1)
        return np.abs(np.log(totals) - measured).mean(axis=1)

    axes = [np.log(np.geomspace(0.01, 4.0, 25)), np.log(np.geomspace(0.01, 40.0, 25)),
            np.log(np.geomspace(0.2, 200.0, 25))]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    start = grid[np.argmin(loss(grid))]
    best = minimize(lambda v: float(loss(v)[0]), start, method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 4000})
    x = best.x if best.fun <= float(loss(start)[0]) else start
    compute, memory, overhead_us = np.exp(x)
    return {"compute": float(compute), "memory": float(memory), "overhead_us": float(overhead_us)}
