"""Reading .pte (ExecuTorch) and .tflite (LiteRT) files without running them: their operators, delegate
partitions, input/output tensors (with an int8 file's own scales) and how much of the compute is integer.

Operators are "domain::op" as in edgedistill.deployability: "aten::convolution.out" (a kernel the ExecuTorch
runtime runs itself), "delegate::XnnpackBackend" (one delegated partition), "tflite::CONV_2D"."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

# The multiply-accumulate ops: a graph is as integer as these are.
TFLITE_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}
INTEGER_DTYPES = {"int8", "uint8", "int16"}


@contextlib.contextmanager
def quiet_native():
    """Silence what native libraries print to the process's stdout/stderr (ExecuTorch's threadpool and cpuinfo
    lines, LiteRT's absl and delegate logs) for the block: Python's own redirects do not reach them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def read_pte(path: Path) -> dict:
    """{"operators", "inputs", "outputs"} of a .pte's forward method, from its flatbuffer."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(path).read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    counts: dict[str, int] = {}
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if hasattr(call, "delegate_index"):
                _count(counts, f"delegate::{plan.delegates[call.delegate_index].id}")
            elif hasattr(call, "op_index"):
                op = plan.operators[call.op_index]
                _count(counts, f"{op.name}.{op.overload}" if op.overload else op.name)

    def tensor(i: int) -> dict:
        val = plan.values[i].val
        return {"shape": list(val.sizes), "dtype": val.scalar_type.name.lower()}

    return {"operators": counts, "inputs": [tensor(i) for i in plan.inputs],
            "outputs": [tensor(i) for i in plan.outputs]}


def interpreter(path: Path, threads: int = 1, delegate: bool = True):
    """A LiteRT interpreter for the file: with its default XNNPACK delegate (as an app runs it), or without."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native():
        it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        it.allocate_tensors()
    return it


def _tensor(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    entry = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
             "dtype": detail["dtype"].__name__}
    return {**entry, "scale": float(scale), "zero_point": int(zero_point)} if scale else entry


def read_tflite(path: Path) -> dict:
    """{"operators", "inputs", "outputs", "compute_ops", "integer_compute_ops", "partitions"}: ops as the
    file holds them; partitions: the delegate nodes the XNNPACK delegate adds when it loads the file."""
    plain = interpreter(path, delegate=False)
    dtype = {t["index"]: t["dtype"].__name__ for t in plain.get_tensor_details()}
    counts: dict[str, int] = {}
    compute = integer = 0
    for op in plain._get_ops_details():  # noqa: SLF001 (the interpreter's only per-op listing)
        _count(counts, f"tflite::{op['op_name']}")
        if op["op_name"] in TFLITE_COMPUTE:
            compute += 1
            integer += dtype.get(int(op["inputs"][0])) in INTEGER_DTYPES
    delegated = interpreter(path, delegate=True)
    partitions = sum(op["op_name"] == "DELEGATE" for op in delegated._get_ops_details())  # noqa: SLF001
    return {"operators": counts, "inputs": [_tensor(d) for d in plain.get_input_details()],
            "outputs": [_tensor(d) for d in plain.get_output_details()], "compute_ops": compute,
            "integer_compute_ops": integer, "partitions": partitions}


def composition(ops: int, compute: int, integer: int, delegated: int, partitions: int, delegate: str,
                left: dict[str, int]) -> dict:
    """An artifact's "graph" record: how much is integer, how much the delegate runs, what it leaves."""
    return {"ops": ops, "compute_ops": compute, "integer_compute_ops": integer,
            "integer_fraction": round(integer / compute, 4) if compute else None, "delegate": delegate,
            "partitions": partitions, "delegated_ops": delegated,
            "delegated_fraction": round(delegated / ops, 4) if ops else None, "left_on_cpu": dict(sorted(left.items()))}
