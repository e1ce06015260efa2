"""ONNX Runtime on this machine: sessions with pinned threads, batched inference, latency, kernel lists."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from edgedistill.io import dir_size
from edgedistill.runtimes import RUNTIMES, Runtime, confusion_matrix

HOST_KERNELS, REFERENCE = "host-kernels", "reference"


def session(path: Path, threads: int = 1, optimized_path: Path | None = None, reference: bool = False):
    """An ONNX Runtime CPU session. `reference`: run the file's int8 arithmetic as its operators define it,
    not as this CPU's fused kernels do (edgedistill.int8_arithmetic): no graph optimizations, so Q/DQ pairs
    stay float reference ops, and integer matrix products rewritten as exact float ones (reference_model)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # e.g. its warning on saving an optimized graph, which we do on purpose
    opts = ort.SessionOptions()
    # Pinned threads: an unpinned session spins as many threads as cores and disturbs everything else.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    model = str(path)
    if reference:
        if Path(path).suffix == ".ort":
            raise ValueError(f"{path}: an .ort holds fused kernels; run the .onnx it came from as the reference")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        model = reference_model(path)
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def reference_model(path: Path) -> bytes | str:
    """The file with MatMulInteger / ConvInteger (dynamic quantization's integer products, which run this CPU's
    int8 kernels even unoptimized) replaced by float MatMul / Conv of the same zero-point-shifted integers, cast
    back to int32: exact up to 2^24 per sum, so the reference never saturates. Unchanged files: the path."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    integer_ops = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}
    if not any(n.op_type in integer_ops for n in model.graph.node):
        return str(path)
    nodes = []
    for n in model.graph.node:
        if n.op_type not in integer_ops:
            nodes.append(n)
            continue
        shifted = []
        for k in range(2):
            as_float = f"{n.output[0]}_ref{k}"
            nodes.append(helper.make_node("Cast", [n.input[k]], [as_float], to=TensorProto.FLOAT))
            zero_point = n.input[k + 2] if len(n.input) > k + 2 and n.input[k + 2] else None
            if zero_point is None:
                shifted.append(as_float)
                continue
            zp = f"{as_float}_zp"
            nodes.append(helper.make_node("Cast", [zero_point], [zp], to=TensorProto.FLOAT))
            if n.op_type == "ConvInteger" and k == 1:  # a per-output-channel weight zero point: [M] -> [M, 1, 1, 1]
                shape = f"{zp}_shape"
                nodes.append(helper.make_node("Constant", [], [shape], value=helper.make_tensor(
                    shape, TensorProto.INT64, [4], [-1, 1, 1, 1])))
                nodes.append(helper.make_node("Reshape", [zp, shape], [zp + "_r"]))
                zp += "_r"
            nodes.append(helper.make_node("Sub", [as_float, zp], [as_float + "_s"]))
            shifted.append(as_float + "_s")
        product = f"{n.output[0]}_ref"
        nodes.append(helper.make_node(integer_ops[n.op_type], shifted, [product], name=n.name,
                                      **{a.name: helper.get_attribute_value(a) for a in n.attribute}))
        nodes.append(helper.make_node("Cast", [product], list(n.output), to=TensorProto.INT32))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def feed(sess, x: np.ndarray, pad_id: int = 0) -> dict:
    """The session's inputs for a batch: the one input as is (pixels, or token ids), or for a Hugging Face
    graph (input_ids, attention_mask[, token_type_ids]) the mask and segment ids derived from the ids."""
    inputs = sess.get_inputs()
    if len(inputs) == 1:
        return {inputs[0].name: np.ascontiguousarray(x, dtype=DTYPES.get(inputs[0].type, np.float32))}
    ids = np.ascontiguousarray(x, dtype=np.int64)
    derived = {"input_ids": ids, "attention_mask": (ids != pad_id).astype(np.int64),
               "token_type_ids": np.zeros_like(ids)}
    unknown = [i.name for i in inputs if i.name not in derived]
    if unknown:
        from edgedistill.errors import UserError

        raise UserError(f"model input '{unknown[0]}': only token-id inputs (input_ids, attention_mask, "
                        "token_type_ids) can be fed; export the model with those")
    return {i.name: derived[i.name] for i in inputs}


def logits(sess, x: np.ndarray, batch_size: int = 256, pad_id: int = 0) -> np.ndarray:
    return np.concatenate([sess.run(None, feed(sess, x[i : i + batch_size], pad_id))[0]
                           for i in range(0, len(x), batch_size)])


def latency_ms(sess, example: np.ndarray, warmup: int, repeats: int, pad_id: int = 0) -> dict:
    """Batch-1 latency percentiles in ms, warm-up excluded."""
    from edgedistill.runtimes import time_calls

    inputs = feed(sess, example, pad_id)
    return time_calls(lambda: sess.run(None, inputs), warmup, repeats)


def optimized_op_types(path: Path) -> list[str]:
    """Operator types in the graph ONNX Runtime actually executes after its optimizations (fusions
    such as DequantizeLinear-Conv-QuantizeLinear -> QLinearConv happen here, not in the file)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(path, 1, optimized_path=out)
        model = onnx.load(str(out))
    return sorted({n.op_type for n in model.graph.node})


INTEGER_KERNELS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd",
                   "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearMul", "DynamicQuantizeMatMul",
                   "MatMulIntegerToFloat", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu"}


def host_threads(wanted: int) -> int:
    return max(1, min(wanted, os.cpu_count() or 1))


def int8_execution(target) -> str:
    """How an int8 file runs to compute what `target` computes: with this CPU's own kernels (HOST_KERNELS) when
    they add up int8 products as the target's do, else by reference execution (REFERENCE), the file's own
    arithmetic (edgedistill.int8_arithmetic). Export parity, bench accuracy and the precision search ask here."""
    from edgedistill import int8_arithmetic

    return HOST_KERNELS if int8_arithmetic.host_matches(target) else REFERENCE


def for_target(path, target, warmup: int = 20, repeats: int = 200) -> dict:
    """Latency of an exported model for `target`: measured with ONNX Runtime when this machine can stand in
    for the target, otherwise estimated from the graph (edgedistill.estimate), and labelled accordingly."""
    from edgedistill.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file; pass an .onnx or .ort file")
    if target.runs_on_host():
        try:
            sess = session(path, host_threads(target.threads))
        except Exception as e:  # onnxruntime's own errors: a file it cannot load
            raise UserError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:120]})") from None
        first = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in first.shape]
        example = (np.ones(shape, dtype=np.int64) if first.type.startswith("tensor(int") else  # token ids
                   np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        lat = latency_ms(sess, example, warmup, repeats)
        return {**lat, "kind": "measured", "threads": host_threads(target.threads), "batch": 1,
                "runtime": "onnxruntime-cpu", "target": target.name}
    if path.suffix != ".onnx":
        raise UserError(f"{path}: {target.name} cannot be timed on this machine and estimates read the graph "
                        "of an .onnx file; pass the .onnx the artifact was made from")
    from edgedistill.deployability import validate_onnx
    from edgedistill.estimate import estimate

    try:
        validate_onnx(path)  # an estimate reads the graph as given: refuse one no runtime would load
        return {**estimate(path, target), "batch": 1, "target": target.name}
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """ONNX Runtime's CPU kernels on this machine: .onnx and .ort files, threads pinned."""

    name, label = "onnxruntime", "onnxruntime-cpu"
    targets = ("onnxruntime", "ort-mobile")

    def outputs(self, artifact, x, spec, threads=1, reference=False):
        return logits(session(artifact.file, threads, reference=reference), x, pad_id=spec.pad_id or 0)

    def target_outputs(self, artifact, x, spec, target, threads, sess=None) -> tuple[np.ndarray, dict]:
        """Held-out logits as the target computes them, and how: {"arithmetic", "accuracy_of"} for an int8 file.
        Reference execution reads an .onnx: an .ort (fused kernels only) runs through the file it came from."""
        if not artifact.int8 or int8_execution(target) == HOST_KERNELS:
            out = logits(sess or session(artifact.file, threads), x, pad_id=spec.pad_id or 0)
            return out, ({"arithmetic": HOST_KERNELS} if artifact.int8 else {})
        source = artifact.source or artifact
        how = {"arithmetic": REFERENCE, **({"accuracy_of": source.file} if source is not artifact else {})}
        return self.outputs(source, x, spec, threads, reference=True), how

    def bench(self, artifact, job):
        cfg, spec = job.cfg, job.ctx.data.spec
        x, y = job.ctx.data.x_test.cpu().numpy(), job.ctx.data.y_test.cpu().numpy()
        sess = session(artifact.file, job.threads)
        out, entry = self.target_outputs(artifact, x, spec, job.target, job.threads, sess)
        if "accuracy_of" in entry:
            entry["accuracy_of"] = str(entry["accuracy_of"].relative_to(job.ctx.out))
        pred = out.argmax(-1)
        entry["accuracy"] = float((pred == y).mean())
        entry["confusion"] = confusion_matrix(y, pred, max(int(spec.num_classes), out.shape[-1]))
        lat = latency_ms(sess, x[:1], cfg.warmup, cfg.repeats, pad_id=spec.pad_id or 0)
        entry["latency_ms"] = {**lat, "kind": job.kind, "threads": job.threads, "batch": 1, "runtime": self.label}
        job.ctx.log(f"    {artifact.role:<7} {artifact.kind:<9} acc {entry['accuracy']:.4f}  p50 {lat['p50']:.3f} ms "
                    f"({job.kind}, {job.threads} thr)  {dir_size(artifact.path):,} B")
        return entry

    def time_file(self, path, target, warmup, repeats, **options):
        return for_target(path, target, warmup, repeats)
