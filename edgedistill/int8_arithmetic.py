"""How a CPU's int8 kernels add up products, and whether an int8 ONNX file's weights fit that arithmetic.

ONNX Runtime's x86 kernels for u8 activations x s8 weights on CPUs without VNNI (AVX2 only) multiply adjacent
pairs of u8*s8 products and add each pair into int16 WITH SATURATION (`vpmaddubsw`) before widening to int32.
Two full-range 8-bit weights (|w| up to 127) make a pair of up to 2 * 255 * 127 = 64,770, far past int16's
32,767: the result is silently wrong. With 7-bit weights (|w| <= 64) a pair is at most 32,640 and always fits,
which is why ONNX Runtime documents `reduce_range` for x86 without VNNI. VNNI (`vpdpbusd`), AMX and ARM's
dot-product kernels accumulate into int32 and never saturate: "exact" arithmetic, full 8-bit weights.
"""

from __future__ import annotations

import numpy as np

EXACT, PAIR_SATURATING = "exact", "pair-saturating"
DESCRIPTIONS = {
    EXACT: "int32 accumulation (VNNI, AMX, ARM dot product): 8-bit weights",
    PAIR_SATURATING: "u8*s8 pairs summed into int16 with saturation (x86 without VNNI): 7-bit weights",
}
# CPU flags (as /proc/cpuinfo spells them) of x86 int8 instructions that accumulate into int32.
INT32_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
INT16_MAX, INT16_MIN, U8_MAX = 32767, -32768, 255
# The weight range each arithmetic runs exactly: symmetric s8, or 7-bit so that any pair fits int16.
WEIGHT_RANGE = {EXACT: (-128, 127), PAIR_SATURATING: (-64, 63)}


def arithmetic_of(arch: str, flags: set[str] | list[str]) -> str:
    """The int8 arithmetic of ONNX Runtime's CPU kernels on a CPU of `arch` with these feature flags."""
    if arch != "x86_64":
        return EXACT
    return EXACT if INT32_DOT_FLAGS & set(flags) else PAIR_SATURATING


def host_arithmetic() -> str:
    from edgedistill.host import host_arch, host_cpu_flags

    return arithmetic_of(host_arch(), host_cpu_flags())


def pair_saturating_dot(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A numpy model of the non-VNNI kernel: rows of u8 `activations` [M, K] times s8 `weights` [N, K], each
    adjacent pair of products (k = 0-1, 2-3, ...) summed and clipped to int16, the pair sums added in int32."""
    a = np.asarray(activations, np.int32)
    w = np.asarray(weights, np.int32)
    if a.shape[-1] % 2:  # the kernels pad K to an even length with zeros
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 0), (0, 1)))
    products = a[:, None, :] * w[None, :, :]  # [M, N, K]
    pairs = products[..., 0::2] + products[..., 1::2]
    return np.clip(pairs, INT16_MIN, INT16_MAX).sum(-1)


def worst_pair(rows: np.ndarray) -> np.ndarray:
    """Per row of int8 weights [N, K]: the largest magnitude any pair of its weights can sum to with u8 inputs
    (both at 255 where the weights share a sign). The kernels' pairing depends on how they pack the weights,
    so any two weights of a row count as a possible pair: a row under the int16 limit can never saturate."""
    w = np.asarray(rows, np.int64).reshape(len(rows), -1)
    top = np.sort(np.where(w > 0, w, 0), axis=1)[:, -2:].sum(1) if w.shape[1] > 1 else np.maximum(w[:, 0], 0)
    bottom = np.sort(np.where(w < 0, w, 0), axis=1)[:, :2].sum(1) if w.shape[1] > 1 else np.minimum(w[:, 0], 0)
    return np.maximum(top * U8_MAX, -bottom * U8_MAX)


def can_saturate(rows: np.ndarray) -> np.ndarray:
    """Per row: True when some u8 input makes a pair of its products overflow int16."""
    return worst_pair(rows) > INT16_MAX


# ---- reading an ONNX file's u8 x s8 weights -------------------------------------------------------------------

def _reduction_rows(weight: np.ndarray, op: str, transposed: bool) -> np.ndarray:
    """The weight as [output, reduction] rows: convs reduce over everything but the output channel, a MatMul's
    B [K, N] (or a Gemm's with transB=0) over its first axis."""
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return weight.reshape(weight.shape[0], -1)
    if weight.ndim != 2:
        return weight.reshape(-1, weight.shape[-1]).T if weight.ndim > 2 else weight.reshape(1, -1)
    return weight if transposed else weight.T


def u8s8_weights(model) -> list[tuple[str, str, np.ndarray]]:
    """(node name, op type, weight rows) for each matrix product in `model` (an onnx.ModelProto) of quantized
    activations and s8 weights: QDQ Conv/Gemm/MatMul, and MatMulInteger / ConvInteger / QLinearConv /
    QLinearMatMul. The x86 kernels run s8 activations as u8 too (shifted by 128), so both count."""
    from onnx import TensorProto, numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def dtype(name: str | None):
        return init[name].data_type if name in init else None

    def quantized(name: str) -> bool:  # an activation that arrives as 8-bit integers
        node = producer.get(name)
        return node is not None and node.op_type in ("DynamicQuantizeLinear", "DequantizeLinear", "QuantizeLinear")

    def int8_const(name: str) -> np.ndarray | None:
        if dtype(name) == TensorProto.INT8:
            return numpy_helper.to_array(init[name])
        node = producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and dtype(node.input[0]) == TensorProto.INT8:
            return numpy_helper.to_array(init[node.input[0]])
        return None

    found = []
    for n in model.graph.node:
        trans_b = any(a.name == "transB" and a.i for a in n.attribute)
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            act_8bit, weight = quantized(n.input[0]), n.input[1]
        elif n.op_type in ("MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"):  # integer inputs
            act_8bit, weight = True, n.input[3 if n.op_type.startswith("QLinear") else 1]
        else:
            continue
        w = int8_const(weight)
        if act_8bit and w is not None:
            found.append((n.name or n.output[0], n.op_type, _reduction_rows(w, n.op_type, trans_b)))
    return found


def saturation_findings(model, weights: list | None = None) -> list[dict]:
    """Each u8 x s8 product in `model` (or in its `weights`, when u8s8_weights has read them already) whose
    weights can saturate the non-VNNI kernels: {"node", "op", "rows", "saturating_rows", "worst_pair"}."""
    out = []
    for name, op, rows in u8s8_weights(model) if weights is None else weights:
        worst = worst_pair(rows)
        bad = int((worst > INT16_MAX).sum())
        if bad:
            out.append({"node": name, "op": op, "rows": len(rows), "saturating_rows": bad, "worst_pair": int(worst.max())})
    return out


def host_matches(target) -> bool:
    """True when this CPU's int8 kernels compute what `target`'s do, so they can judge its files."""
    return host_arithmetic() == target.arithmetic


def host_difference(target) -> str:
    """Why this CPU's int8 kernels disagree with `target`'s, in one clause."""
    if host_arithmetic() == PAIR_SATURATING:
        return (f"this CPU has no VNNI, so ONNX Runtime's int8 kernels here sum pairs of u8*s8 products into int16 "
                f"with saturation, which {target.name}'s kernels do not ({DESCRIPTIONS[target.arithmetic]})")
    return (f"this CPU accumulates int8 products exactly (VNNI or ARM dot product), while {target.name}'s kernels "
            f"sum them in int16 pairs ({DESCRIPTIONS[target.arithmetic]})")
