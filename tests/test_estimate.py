"""The roofline latency estimator: how the estimate responds to the graph, the precision and the factors, and
that calibrate() recovers factors from latencies they generated. Behaviour only: no measured timings."""

import numpy as np
import onnx
import pytest

from edgedistill.estimate import (EFFICIENCY, NodeCost, calibrate, efficiency, estimate, graph_work, peaks,
                                  roofline_ms)
from edgedistill.exporters.onnx import export_onnx, fuse_friendly_qdq
from edgedistill.models import ModelSpec, build_model
from edgedistill.quantize import ptq_onnx
from edgedistill.targets import load_target

CIFAR = ModelSpec("image-classification", (3, 32, 32), 10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)
TINY = ModelSpec("image-classification", (1, 8, 8), 10, tuple(map(str, range(10))), (0.5,), (0.25,))
HOST_LIKE = "x86-avx512-vnni"  # a CPU profile with an int8 peak; estimates never need the host to match it


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """fp32 CNNs at three widths on 3x32x32, an int8 copy of the widest (static PTQ as the export stage does
    it), and a one-conv model on 1x8x8."""
    import torch

    d = tmp_path_factory.mktemp("estimate")
    out = {}
    for widths in ((8, 16, 32), (32, 64, 128), (64, 128, 256)):
        torch.manual_seed(0)
        out[widths] = d / f"cnn-{'-'.join(map(str, widths))}.onnx"
        export_onnx(build_model("cnn", list(widths), CIFAR.input_shape, 10).eval(), CIFAR, out[widths], 18)
    out["int8"] = d / "cnn-64-128-256.int8.onnx"
    calibration = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    ptq_onnx(out[(64, 128, 256)], out["int8"], calibration)
    onnx.save(fuse_friendly_qdq(onnx.load(str(out["int8"]))), str(out["int8"]))
    out["tiny"] = d / "tiny.onnx"
    export_onnx(build_model("cnn", [4], TINY.input_shape, 10).eval(), TINY, out["tiny"], 18)
    return out


def test_estimate_grows_with_width_and_keeps_its_keys(graphs):
    target = load_target(HOST_LIKE)
    small, mid, big = (estimate(graphs[w], target) for w in ((8, 16, 32), (32, 64, 128), (64, 128, 256)))
    assert small["macs"] < mid["macs"] < big["macs"]
    assert small["p50"] < mid["p50"] < big["p50"]
    assert set(big) == {"kind", "p50", "p90", "p99", "precision", "threads", "macs", "method", "efficiency", "layers"}
    assert big["kind"] == "estimated" and big["precision"] == "fp32" and big["p50"] == big["p90"] == big["p99"]
    assert big["efficiency"] == efficiency("cpu", "fp32")


def test_int8_graph_is_estimated_faster_than_fp32_on_an_int8_profile(graphs):
    target = load_target(HOST_LIKE)
    fp32, int8 = estimate(graphs[(64, 128, 256)], target), estimate(graphs["int8"], target)
    assert int8["precision"] == "int8"  # read from the graph's quantize nodes
    assert int8["macs"] == fp32["macs"]  # the same convolutions, behind DequantizeLinear inputs
    assert int8["efficiency"] == efficiency("cpu", "int8")
    assert int8["p50"] < fp32["p50"]


def test_per_node_overhead_dominates_a_tiny_model(graphs):
    result = estimate(graphs["tiny"], load_target(HOST_LIKE))
    arithmetic = sum(layer["ms"] for layer in result["layers"])  # all its compute nodes: fewer than 5
    assert len(result["layers"]) == 2 and arithmetic < 0.2 * result["p50"]


def test_efficiency_table_cpu_by_precision_others_flat():
    assert set(EFFICIENCY["cpu"]) >= {"fp32", "int8"}
    assert efficiency("cpu", "fp16") == efficiency("cpu", "fp32")  # no calibrated fp16 set: the fp32 one
    assert efficiency("gpu", "int8") == efficiency("gpu", "fp32") == EFFICIENCY["gpu"]
    for unit in ("cpu", "gpu", "ane"):
        for precision in ("fp32", "int8", "fp16"):
            assert set(efficiency(unit, precision)) == {"compute", "memory", "overhead_us"}


def _synthetic_models(seed=0):
    """(layers, other nodes) for compute-bound, memory-bound and overhead-bound graphs."""
    rng = np.random.default_rng(seed)
    models = []
    for i in range(12):
        kind = i % 3
        n = int(rng.integers(2, 30))
        layers = []
        for j in range(n):
            if kind == 0:  # convolutions: many MACs per byte
                macs = int(rng.uniform(1e5, 2e7))
                layers.append(NodeCost(f"c{j}", "Conv", macs, int(macs / rng.uniform(20, 200))))
            elif kind == 1:  # few MACs per byte (depthwise-like): memory-bound at any of these factors
                macs = int(rng.uniform(1e4, 2e6))
                layers.append(NodeCost(f"d{j}", "Conv", macs, macs * 40))
            else:  # tiny layers: dispatch cost only
                layers.append(NodeCost(f"t{j}", "Conv", int(rng.uniform(10, 500)), int(rng.uniform(10, 500))))
        models.append((layers, int(rng.integers(0, 3 * n))))
    return models


@pytest.mark.parametrize("truth", [{"compute": 0.3, "memory": 2.0, "overhead_us": 3.0},
                                   {"compute": 0.08, "memory": 0.5, "overhead_us": 12.0}])
def test_calibrate_recovers_the_factors_that_made_the_latencies(truth):
    peak, bandwidth = peaks(load_target(HOST_LIKE), "fp32")
    models = _synthetic_models()
    samples = [(layers, other, roofline_ms(layers, other, peak, bandwidth, truth)) for layers, other in models]
    fitted = calibrate(samples, peak, bandwidth)
    for key, value in truth.items():
        assert fitted[key] == pytest.approx(value, rel=0.02), key
    # and with 5% multiplicative noise on the "measurements", still close
    noise = np.exp(np.random.default_rng(1).normal(0, 0.05, len(samples)))
    noisy = calibrate([(layers, other, ms * k) for (layers, other, ms), k in zip(samples, noise)], peak, bandwidth)
    for key, value in truth.items():
        assert noisy[key] == pytest.approx(value, rel=0.15), key


def test_graph_work_counts_compute_nodes_and_dispatches(graphs):
    layers, other = graph_work(onnx.load(str(graphs[(8, 16, 32)])), "fp32")
    assert [c.op for c in layers] == ["Conv", "Conv", "Conv", "Gemm"] and other > 0
    int8_layers, int8_other = graph_work(onnx.load(str(graphs["int8"])), "int8")
    fp32_layers, fp32_other = graph_work(onnx.load(str(graphs[(64, 128, 256)])), "fp32")
    # quantize/dequantize nodes are not dispatches; int8 moves a quarter of fp32's bytes
    assert len(int8_layers) == len(fp32_layers) and int8_other <= fp32_other
    assert sum(c.bytes for c in int8_layers) * 4 == sum(c.bytes for c in fp32_layers)
