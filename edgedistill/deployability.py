"""Deployability: list the operators of an exported graph and flag those the target's runtime cannot run, or
will run off its accelerator (XNNPACK/NNAPI -> the CPU EP, the Neural Engine -> GPU/CPU).

The rules are data (deployability.yaml, with a source for each list); this module only reads graphs and
applies them. Reading works on .onnx, .ort, .mlpackage, .pte and .tflite without running them, so it works on
Linux for every target. An op "off the accelerator" still runs: `ok` is False only when something cannot run at all."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.schema import parse_yaml
from edgedistill.targets import CoreMLSettings


@dataclass
class Graph:
    """What a check needs from a model file: `kind` is "onnx", "ort", "mil", "pte" or "tflite"; operators are
    "domain::op"."""

    kind: str
    operators: dict[str, int]
    opsets: dict[str, int | str] = field(default_factory=dict)  # ONNX domain -> version; {"mil": "CoreML7"}
    fp32_ops: dict[str, int] = field(default_factory=dict)  # mil ops typed fp32 (the ANE computes in fp16)


@functools.lru_cache(maxsize=1)
def rules() -> dict:
    text = (resources.files("edgedistill") / "deployability.yaml").read_text(encoding="utf-8")
    return parse_yaml(text, "edgedistill/deployability.yaml")


# ---- reading graphs -------------------------------------------------------------------------------------------

def onnx_operators(path: str | Path) -> dict[str, int]:
    """{"ai.onnx::Conv": 3, "com.microsoft::QGemm": 1, ...} for an .onnx or .ort file."""
    return read_graph(path).operators


def read_graph(path: str | Path) -> Graph:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model; pass an {KNOWN}")
    readers = {".onnx": _read_onnx, ".ort": _read_ort, ".mlpackage": _read_mlpackage, ".pte": _read_pte,
               ".tflite": _read_tflite}
    reader = readers.get(path.suffix)
    if reader is None:
        raise UserError(f"{path}: cannot inspect a '{path.suffix}' file; pass an {KNOWN}")
    what = {".onnx": "ONNX", ".ort": "ORT format", ".mlpackage": "Core ML", ".pte": "ExecuTorch",
            ".tflite": "LiteRT"}[path.suffix]
    try:
        graph = reader(path)
    except UserError:
        raise
    except ImportError as e:  # e.g. coremltools, absent from the GPU image
        missing = e.name or _first_line(e)
        raise UserError(f"{path}: reading a {what} model needs the '{missing}' package; install it") from None
    except Exception as e:  # the libraries' own parse errors: a truncated or foreign file
        raise UserError(f"{path}: not a readable {what} model ({_first_line(e)})") from None
    if not graph.operators:
        raise UserError(f"{path}: holds no operators; is it really an exported {what} model?")
    return graph


KNOWN = ".onnx, .ort, .mlpackage, .pte or .tflite"


def _read_pte(path: Path) -> Graph:
    from edgedistill.mobile_graphs import read_pte

    return Graph("pte", read_pte(path)["operators"])


def _read_tflite(path: Path) -> Graph:
    from edgedistill.mobile_graphs import read_tflite

    return Graph("tflite", read_tflite(path)["operators"])


def _read_onnx(path: Path) -> Graph:
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # op types only: weights are not needed
    validate_onnx(path)
    functions = {(f.domain, f.name): f for f in model.functions}
    counts: dict[str, int] = {}

    def visit(nodes) -> None:
        for node in nodes:
            if (node.domain, node.op_type) in functions:  # a model-local function: count what it is made of
                visit(functions[node.domain, node.op_type].node)
                continue
            _add(counts, f"{node.domain or 'ai.onnx'}::{node.op_type}")
            for attr in node.attribute:  # If/Loop/Scan bodies
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    visit(g.node)

    visit(model.graph.node)
    return Graph("onnx", counts, {o.domain or "ai.onnx": o.version for o in model.opset_import})


def validate_onnx(path: str | Path) -> None:
    """onnx.checker on the file (by path: external data and models over 2 GB work); UserError when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as e:
        message = " ".join(str(e).split()) or e.__class__.__name__
        raise UserError(f"{path}: not a valid ONNX model ({message[:160]})") from None


def _read_ort(path: Path) -> Graph:
    # The flatbuffers bindings ship inside onnxruntime's Python package (tools.ort_format_model puts them on the path).
    import onnxruntime.tools.ort_format_model  # noqa: F401
    import ort_flatbuffers_py.fbs as fbs

    buf = bytearray(path.read_bytes())
    if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        raise UserError(f"{path}: not an ORT format model (no ORT flatbuffer identifier)")
    model = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model()
    counts: dict[str, int] = {}

    def visit(graph) -> None:
        for i in range(graph.NodesLength()):
            node = graph.Nodes(i)
            _add(counts, f"{node.Domain().decode() or 'ai.onnx'}::{node.OpType().decode()}")
            for j in range(node.AttributesLength()):
                attr = node.Attributes(j)
                if attr.G() is not None:
                    visit(attr.G())

    visit(model.Graph())
    opsets = {}
    for j in range(model.OpsetImportLength()):
        o = model.OpsetImport(j)
        opsets[o.Domain().decode() or "ai.onnx"] = o.Version()
    return Graph("ort", counts, opsets)


def _read_mlpackage(path: Path) -> Graph:
    import logging
    import os

    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")  # coremltools imports torch/torchao
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct  # slow (about 7 s): only here
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise UserError(f"{path}: holds a Core ML {spec.WhichOneof('Type')}, not an ML program; "
                        "only ML programs (convert_to='mlprogram') are inspected")
    counts: dict[str, int] = {}
    fp32: dict[str, int] = {}
    opsets: dict[str, int | str] = {}

    def visit(block) -> None:
        for op in block.operations:
            _add(counts, f"mil::{op.type}")
            if any(o.type.tensorType.dataType == MIL_pb2.FLOAT32 for o in op.outputs):
                _add(fp32, f"mil::{op.type}")
            for inner in op.blocks:  # cond / while_loop bodies
                visit(inner)

    for function in spec.mlProgram.functions.values():
        opsets["mil"] = function.opset
        visit(function.block_specializations[function.opset])
    return Graph("mil", counts, opsets, fp32)


def _add(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else e.__class__.__name__)[:120]


# ---- applying the rules ---------------------------------------------------------------------------------------

def check(operators: dict[str, int] | Graph, target) -> dict:
    """Flag what `target` (a TargetProfile) cannot run or runs off its accelerator. JSON-able:
    {"target", "runtime", "compute_unit", "accelerator", "graph", "operators", "unsupported", "off_accelerator",
     "outside_reduced_build", "ok", "notes"}; each flag is {"op", "count", "why"}."""
    graph = operators if isinstance(operators, Graph) else Graph(
        "mil" if any(k.startswith("mil::") for k in operators) else "onnx", dict(operators))
    kind = "onnx" if graph.kind == "ort" else graph.kind  # an .ort holds ONNX-domain ops: the same rules apply
    result = {"target": target.name, "runtime": target.runtime, "compute_unit": target.compute_unit,
              "accelerator": None, "graph": graph.kind, "operators": dict(sorted(graph.operators.items())),
              "unsupported": [], "off_accelerator": [], "outside_reduced_build": [], "ok": True, "notes": []}
    runtime_rules = rules().get(target.runtime, {})
    r = runtime_rules.get(kind)
    if r is None:
        what = {"mil": "a Core ML program", "onnx": "an ONNX graph", "ort": "an ORT format graph",
                "pte": "an ExecuTorch program", "tflite": "a LiteRT model"}[graph.kind]
        result["unsupported"].append({"op": "*", "count": sum(graph.operators.values()),
                                      "why": f"{target.runtime} cannot load {what}"})
        result["ok"] = False
        return result

    ignore = _names(r.get("ignore"))
    acc = (r.get("accelerators") or {}).get(target.compute_unit)
    reduced = r.get("reduced_build")
    kernels = {"onnxruntime-cpu": _ort_cpu_kernels, "executorch": _executorch_kernels}.get(r.get("kernels"), set)()
    kernels = kernels | _names(r.get("delegates")) if kernels else None
    if acc:
        result["accelerator"] = acc["name"]
    for op, count in result["operators"].items():
        if op in ignore:
            continue
        why = _cannot_run(op, kernels, r.get("kernels"))
        if why:
            result["unsupported"].append({"op": op, "count": count, "why": why})
            continue
        why = _off_accelerator(op, acc, graph.fp32_ops.get(op, 0)) if acc else None
        if why:
            result["off_accelerator"].append({"op": op, "count": count, "why": why})
        if reduced and op not in _names(reduced["ops"]):
            result["outside_reduced_build"].append({"op": op, "count": count, "why": f"not in the {reduced['name']}"})

    _opset_checks(result, graph, r, target)
    result["notes"] += _notes(graph, target, acc, reduced, kernels)
    result["ok"] = not result["unsupported"]
    return result


def check_file(path: str | Path, target) -> dict:
    """check() on the operators of an .onnx, .ort, .mlpackage, .pte or .tflite, and on an int8 file's weights
    where the target's kernels saturate (int8_weights); adds {"model": path}."""
    result = {"model": str(path), **check(read_graph(path), target)}
    int8_weights(Path(path), target, result)
    return result


def int8_weights(path: Path, target, result: dict) -> None:
    """Flag u8 x s8 layers whose weight pairs overflow int16 in the target's kernels (x86 without VNNI:
    edgedistill.int8_arithmetic): such a file runs, but computes wrong results."""
    from edgedistill.int8_arithmetic import DESCRIPTIONS, INT16_MAX, PAIR_SATURATING, saturation_findings, u8s8_weights

    if target.arithmetic != PAIR_SATURATING or target.runtime == "coreml":
        return
    if path.suffix == ".ort":
        result["notes"].append(f"int8 weight pairs are read from .onnx files: check the .onnx this .ort came from "
                               f"({target.name}: {DESCRIPTIONS[PAIR_SATURATING]})")
        return
    if path.suffix != ".onnx":
        return
    import onnx

    weights = u8s8_weights(onnx.load(str(path)))
    findings = saturation_findings(None, weights)
    if not findings:
        if weights:
            result["notes"].append(f"int8 weights fit {target.name}'s kernels: no pair of u8*s8 products can "
                                   "overflow int16")
        return
    worst = max(findings, key=lambda f: f["worst_pair"])
    result["unsupported"].append({
        "op": "int8 weight pairs", "count": len(findings),
        "why": f"{len(findings)} of {len(weights)} u8 x s8 layers hold weights whose pairs of products "
               f"overflow int16 in {target.name}'s kernels (x86 without VNNI), e.g. {worst['node']}: "
               f"{worst['saturating_rows']} of {worst['rows']} output channels, pairs up to {worst['worst_pair']:,} "
               f"> {INT16_MAX:,}: it runs but computes wrong results; re-quantize with 7-bit weights (ONNX Runtime's "
               f"reduce_range=True, NNCF's overflow_fix; `edgedistill compress --target {target.name}` does)"})
    result["ok"] = False


def _names(by_domain: dict | None) -> set[str]:
    return {f"{domain}::{op}" for domain, ops in (by_domain or {}).items() for op in ops or []}


def _cannot_run(op: str, kernels: set[str] | None, source: str | None = None) -> str | None:
    if kernels is None or op in kernels:
        return None
    domain, name = op.split("::", 1)
    if domain == "delegate":
        return f"no {name} delegate in the runtime"
    if source == "executorch":
        return "no kernel of this name registered in the installed ExecuTorch runtime"
    if domain in ("ai.onnx", "ai.onnx.ml"):
        import onnx.defs

        onnx_domain = "" if domain == "ai.onnx" else domain
        if onnx.defs.has(name, onnx_domain):
            schema = onnx.defs.get_schema(name, onnx_domain)
            if schema.has_function or schema.has_context_dependent_function:
                return None  # ORT expands ONNX functions into ops it has kernels for
        import onnxruntime

        return f"no kernel in onnxruntime {onnxruntime.__version__}'s CPU EP and no ONNX function to expand"
    if domain in {k.split("::")[0] for k in kernels}:
        return f"onnxruntime's CPU EP has no {domain} kernel of this name"
    return f"custom domain '{domain}': the app must register a custom-op library for it"


def _off_accelerator(op: str, acc: dict, fp32_count: int) -> str | None:
    if op in _names(acc.get("fused")):
        return None
    if op in _names(acc.get("falls_back")):
        return f"known to leave the {acc['name']}; runs on {acc['fallback']}"
    if acc.get("ops") is not None and op not in _names(acc["ops"]):
        return f"the {acc['name']} does not take it; runs on {acc['fallback']}"
    if fp32_count and op in _names(acc.get("fp32_compute")):
        return f"{fp32_count} typed fp32: the {acc['name']} computes in fp16; runs on {acc['fallback']}"
    return None


def _opset_checks(result: dict, graph: Graph, r: dict, target) -> None:
    reduced = r.get("reduced_build")
    onnx_opset = graph.opsets.get("ai.onnx")
    if reduced and isinstance(onnx_opset, int) and onnx_opset > reduced["max_opset"]:
        result["notes"].append(f"ai.onnx opset {onnx_opset}: the {reduced['name']} covers opsets up to "
                               f"{reduced['max_opset']}")
    mil_opset = graph.opsets.get("mil")
    needs = (r.get("opsets") or {}).get(mil_opset)
    deploys_to = (target.coreml or CoreMLSettings()).minimum_deployment_target  # the exporter's default too
    if needs and _ios(needs) > _ios(deploys_to):
        result["unsupported"].append({"op": f"opset {mil_opset}", "count": sum(graph.operators.values()),
                                      "why": f"the ML program needs {needs}; {target.name} deploys to {deploys_to} "
                                             "(re-export with its minimum_deployment_target)"})


def _ios(version: str) -> int:
    return int(version.removeprefix("iOS"))


def _notes(graph: Graph, target, acc: dict | None, reduced: dict | None, kernels: set | None) -> list[str]:
    notes = []
    if acc is None:
        notes.append(f"compute unit '{target.compute_unit}': {target.runtime}'s own kernels are the fast path; "
                     "no accelerator partition to check")
    if graph.kind == "ort" and acc and any(op.startswith("com.microsoft::") for op in graph.operators):
        notes.append("an .ort holds the graph as optimized when converted: 'Fixed'-style fused com.microsoft "
                     f"kernels are the CPU EP's; convert with the 'Runtime' style for the {acc['name']}")
    if graph.kind == "onnx" and target.runtime == "coreml":
        notes.append("an ONNX graph on a Core ML target is checked against ORT's CoreML EP; "
                     "check the exported .mlpackage for the Core ML app path")
    if graph.kind == "mil" and acc:
        notes.append("Core ML places ops when it compiles the model on the device: these are known limits, not a "
                     "guarantee (Xcode's performance report on a Mac shows the real placement)")
    if kernels and graph.kind in ("onnx", "ort"):
        import onnxruntime

        notes.append(f"kernels checked against the installed onnxruntime {onnxruntime.__version__}")
    if reduced:
        notes.append("outside_reduced_build matters only for a reduced-operator ORT build; ORT >= 1.19's "
                     "onnxruntime-android is a full build")
    return notes


@functools.lru_cache(maxsize=1)
def _ort_cpu_kernels() -> set[str]:
    """"domain::op" for every kernel the installed onnxruntime's CPU EP registers."""
    from onnxruntime.capi import _pybind_state as ort_c  # the registry behind OperatorKernels.md

    return {f"{k.domain or 'ai.onnx'}::{k.op_name}" for k in ort_c.get_all_opkernel_def()
            if k.provider == "CPUExecutionProvider"}


@functools.lru_cache(maxsize=1)
def _executorch_kernels() -> set[str]:
    """"aten::convolution.out"-style names of every kernel the installed ExecuTorch runtime registers."""
    from executorch.runtime import Runtime

    return set(Runtime.get().operator_registry.operator_names)


def summarize(result: dict) -> dict:
    """The verdict in a few fields, for run records and the report."""
    return {"ok": result["ok"], "accelerator": result["accelerator"], "operators": len(result["operators"]),
            "unsupported": [f["op"] for f in result["unsupported"]],
            "off_accelerator": [f["op"] for f in result["off_accelerator"]]}
