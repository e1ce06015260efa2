"""Deployability check: operators of .onnx / .ort / .mlpackage graphs against the targets' runtime rules."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedistill.deployability import check, check_file, onnx_operators, rules
from edgedistill.errors import UserError
from edgedistill.targets import load_target

ENV = {**os.environ, "TORCHAO_FORCE_SKIP_LOADING_SO_FILES": "1", "PYTHONWARNINGS": "ignore"}


def _save(tmp_path, nodes, inits, name="model.onnx", out_shape=(1, 10), domains=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 18), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)  # onnxruntime 1.31 reads IR <= 13
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _cnn(tmp_path, act="Relu", name="cnn.onnx"):
    """Conv -> activation -> GlobalAveragePool -> Flatten -> Gemm: the shape of every exported classifier."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = {"w": rng.standard_normal((8, 3, 3, 3), dtype=np.float32), "b": np.zeros(8, np.float32),
             "fw": rng.standard_normal((10, 8), dtype=np.float32), "fb": np.zeros(10, np.float32)}
    path = _save(tmp_path, nodes, inits, name)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def _ops(flags):
    return {f["op"] for f in flags}


def test_operators_are_counted_by_domain(tmp_path):
    assert onnx_operators(_cnn(tmp_path)) == {"ai.onnx::Conv": 1, "ai.onnx::Relu": 1,
                                              "ai.onnx::GlobalAveragePool": 1, "ai.onnx::Flatten": 1,
                                              "ai.onnx::Gemm": 1}


def test_plain_cnn_deploys_to_pixel_8_and_x86(tmp_path):
    path = _cnn(tmp_path)
    pixel = check_file(path, load_target("pixel-8"))
    assert pixel["ok"] and not pixel["unsupported"] and pixel["accelerator"] == "XNNPACK EP"
    # XNNPACK takes Conv (with its Relu fused) and Gemm; the pooling and the flatten stay on the CPU EP.
    assert _ops(pixel["off_accelerator"]) == {"ai.onnx::GlobalAveragePool", "ai.onnx::Flatten"}
    x86 = check_file(path, load_target("x86-avx2"))
    assert x86["ok"] and x86["accelerator"] is None
    assert not x86["unsupported"] and not x86["off_accelerator"] and not x86["outside_reduced_build"]


def test_op_the_accelerator_lacks_is_flagged_by_name(tmp_path):
    # HardSwish: no XNNPACK EP kernel (runs on the CPU EP), no ORT CPU kernel either, but ONNX defines it as a
    # function that ORT expands, so it still runs: off the accelerator, not unsupported.
    result = check_file(_cnn(tmp_path, act="HardSwish"), load_target("pixel-8"))
    assert result["ok"] and not result["unsupported"]
    flag = next(f for f in result["off_accelerator"] if f["op"] == "ai.onnx::HardSwish")
    assert flag["count"] == 1 and "XNNPACK" in flag["why"] and "CPU EP" in flag["why"]


def test_neural_engine_limits_flag_recurrent_and_gather_ops():
    iphone = load_target("iphone-15-pro")
    result = check({"ai.onnx::Conv": 2, "ai.onnx::LSTM": 1, "ai.onnx::Gather": 1}, iphone)
    assert result["ok"] and _ops(result["off_accelerator"]) == {"ai.onnx::LSTM", "ai.onnx::Gather"}
    mil = check({"mil::conv": 2, "mil::gather": 1, "mil::const": 9}, iphone)
    assert mil["ok"] and _ops(mil["off_accelerator"]) == {"mil::gather"}


def _qdq_conv(tmp_path):
    """Static int8 QDQ as our exporter writes it: DQ(weights), Q/DQ around the activations, Conv in between."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["y"])]
    inits = {"s": np.float32(0.05), "zp": np.uint8(128), "ws": np.full(8, 0.02, np.float32),
             "wzp": np.zeros(8, np.int8), "wq": rng.integers(-127, 127, (8, 3, 3, 3), dtype=np.int8)}
    path = _save(tmp_path, nodes, inits, "qdq.onnx", out_shape=(1, 8, 8, 8))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def test_qdq_int8_graph(tmp_path):
    path = _qdq_conv(tmp_path)
    pixel = check_file(path, load_target("pixel-8"))
    # XNNPACK takes the DQ -> Conv -> Q node unit as one quantized conv: nothing falls back.
    assert pixel["ok"] and pixel["operators"]["ai.onnx::DequantizeLinear"] == 3
    assert not pixel["off_accelerator"] and not pixel["unsupported"]
    # ORT's CoreML EP does not take Q/DQ: an int8 ONNX graph on an iPhone dequantizes on the CPU.
    iphone = check_file(path, load_target("iphone-15-pro"))
    assert {"ai.onnx::QuantizeLinear", "ai.onnx::DequantizeLinear"} <= _ops(iphone["off_accelerator"])
    # A QLinearConv graph (the operator-oriented int8 format): XNNPACK has a kernel for it.
    qlinear = check({"ai.onnx::QLinearConv": 2, "ai.onnx::QuantizeLinear": 1, "ai.onnx::DequantizeLinear": 1},
                    load_target("galaxy-s23"))
    assert qlinear["ok"] and not qlinear["off_accelerator"]


def test_custom_ops_are_unsupported_everywhere(tmp_path):
    nodes = [helper.make_node("MyFancyActivation", ["x"], ["a"], domain="com.example"),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    path = _save(tmp_path, nodes, {}, "custom.onnx", out_shape=(1, 3), domains=["com.example"])
    for name in ("pixel-8", "x86-avx2", "iphone-15-pro"):
        result = check_file(path, load_target(name))
        assert not result["ok"] and _ops(result["unsupported"]) == {"com.example::MyFancyActivation"}
        assert "custom" in result["unsupported"][0]["why"]
    # an unknown com.microsoft name is as unrunnable as an unknown domain
    assert not check({"com.microsoft::NoSuchKernel": 1}, load_target("x86-avx2"))["ok"]


def test_result_is_json_serialisable(tmp_path):
    result = check_file(_qdq_conv(tmp_path), load_target("pixel-8"))
    assert json.loads(json.dumps(result)) == result
    assert set(result) >= {"runtime", "operators", "unsupported", "off_accelerator", "ok", "notes"}


def test_every_runtime_in_the_targets_has_rules():
    assert {load_target(n).runtime for n in ("pixel-8", "x86-avx2", "iphone-12")} <= set(rules())


@pytest.mark.parametrize("content,suffix", [(None, ".onnx"), (b"\x08\x07garbage\xff\xfe" * 10, ".onnx"),
                                            (b"not an ort file at all", ".ort"), (b"x", ".tflite")])
def test_bad_files_raise_one_line_user_errors(tmp_path, content, suffix):
    path = tmp_path / f"model{suffix}"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        check_file(path, load_target("pixel-8"))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_ort_file_is_read_directly(tmp_path):
    from edgedistill.exporters.ort_mobile import to_ort

    ort_path, config = to_ort(_qdq_conv(tmp_path), tmp_path / "ort", "arm64")
    result = check_file(ort_path, load_target("pixel-8"))
    assert result["graph"] == "ort" and result["ok"]
    # the same operators the converter wrote for a reduced build
    listed = {f"{line.split(';')[0]}::{op}" for line in config.read_text().splitlines()
              if line and not line.startswith("#") for op in line.split(";")[2].split(",")}
    assert set(result["operators"]) == listed


@pytest.fixture(scope="module")
def mlpackages(tmp_path_factory):
    """Two tiny ML programs (conv, then a gather): fp16 and fp32 typed, for iOS 17."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)

    def program():  # a fresh one per conversion: ct.convert rewrites the program it is given
        @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))], opset_version=ct.target.iOS17)
        def prog(x):
            y = mb.relu(x=mb.conv(x=x, weight=w, pad_type="same"))
            return mb.gather(x=y, indices=np.array([0, 2], dtype=np.int32), axis=1)
        return prog

    out = tmp_path_factory.mktemp("coreml")
    paths = {}
    for precision in ("FLOAT16", "FLOAT32"):
        model = ct.convert(program(), convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                           compute_precision=getattr(ct.precision, precision))
        paths[precision] = out / f"m{precision}.mlpackage"
        model.save(str(paths[precision]))
    return paths


def test_mlpackage_ops_against_the_neural_engine(mlpackages):
    result = check_file(mlpackages["FLOAT16"], load_target("iphone-15-pro"))
    assert result["graph"] == "mil" and result["ok"] and result["operators"]["mil::conv"] == 1
    assert _ops(result["off_accelerator"]) == {"mil::gather"}
    # iPhone 12's profile deploys to iOS 16: an iOS 17 program does not load there
    old = check_file(mlpackages["FLOAT16"], load_target("iphone-12"))
    assert not old["ok"] and "iOS17" in old["unsupported"][0]["why"]
    # an fp32-typed program keeps its conv off the Neural Engine
    fp32 = check_file(mlpackages["FLOAT32"], load_target("iphone-15-pro"))
    assert {"mil::conv", "mil::gather"} <= _ops(fp32["off_accelerator"])
    # and an Android runtime cannot load a Core ML program at all
    assert not check_file(mlpackages["FLOAT16"], load_target("pixel-8"))["ok"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgedistill", "check", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


@pytest.mark.slow
def test_cli_check(tmp_path):
    ok = cli(_cnn(tmp_path), "--target", "pixel-8")
    assert ok.returncode == 0, ok.stderr
    assert "ai.onnx::GlobalAveragePool" in ok.stdout and "off_accelerator" in ok.stdout
    as_json = cli(_cnn(tmp_path), "--target", "x86-avx2", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True

    nodes = [helper.make_node("Mystery", ["x"], ["y"], domain="com.example")]
    bad = cli(_save(tmp_path, nodes, {}, "custom.onnx", out_shape=(1, 3, 8, 8), domains=["com.example"]),
              "--target", "pixel-8", "--json")
    assert bad.returncode == 3 and json.loads(bad.stdout)["unsupported"][0]["op"] == "com.example::Mystery"

    missing = cli(tmp_path / "nope.onnx", "--target", "pixel-8")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope.onnx" in missing.stderr
    unknown_target = cli(_cnn(tmp_path), "--target", "pixel-88")
    assert unknown_target.returncode == 2 and "pixel-8" in unknown_target.stderr
