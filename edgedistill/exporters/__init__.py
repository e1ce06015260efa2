"""Exporters: each format is a plug-in registered in EXPORTERS (ONNX fp32 and int8, ONNX Runtime Mobile .ort,
Core ML .mlpackage, optimum's Hugging Face ONNX directory, a causal LM's ONNX with a KV cache, ExecuTorch .pte,
LiteRT .tflite). An exporter
writes typed Artifacts for the run's task and names the runtime (edgedistill.runtimes) that loads them; the
export and bench stages only loop over them.

A format is one module: its plug-in (onnx_fp32, onnx_int8, onnx_kv), or its converter and plug-in together
(ort_mobile, coreml, hf_onnx); onnx is the ONNX export library they share. Adding one: a module here, its
runtime's in edgedistill.runtimes, and each module's name in its registry's builtins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from edgedistill import io
from edgedistill.registry import Registry

INT8_PRECISIONS = ("int8", "w8a8")
CLASSIFICATION = ("image-classification", "text-classification")
# What an exporter reads (Exporter.needs)
FP32_MODULE, INT8_MODULE, ONNX_FILE = "fp32 module", "int8 module", "onnx file"


@dataclass
class Artifact:
    """One exported file or directory. `record()` is its entry in the export record and report.json."""

    role: str  # "teacher" or "student"
    kind: str  # the report's kind: "onnx-fp32", "onnx-int8", "ort", "coreml", "hf-onnx", "pte", "tflite"...
    precision: str  # "fp32", "int8", "fp16", "w8a8", "w8", "fp32+int8"
    path: Path  # absolute
    exporter: str = ""  # the registry name of the exporter that wrote it
    runtime: str = ""  # the registry name of the runtime that loads it
    source: Artifact | None = None  # the artifact it was converted from (an .ort's .onnx)
    for_target: bool | None = None  # of several variants of one format, the one the target's precision asks for
    fields: dict = field(default_factory=dict)  # the format's own record keys, in order
    loads: str | None = None  # in a directory artifact, the file a runtime opens
    parity: list[dict] = field(default_factory=list)  # the rungs that judged it, in ladder order

    @property
    def file(self) -> Path:
        return self.path / self.loads if self.loads else self.path

    @property
    def int8(self) -> bool:
        return self.precision in INT8_PRECISIONS

    def record(self, out: Path) -> dict:
        return {"role": self.role, "kind": self.kind, "path": str(self.path.relative_to(out)),
                "size_bytes": io.dir_size(self.path), "precision": self.precision, **self.fields,
                **({"for_target": self.for_target} if self.for_target is not None else {})}


class Exporter:
    """Writes one format for the tasks it serves. Subclasses set the attributes and implement export()."""

    name = ""  # registry name
    format = ""  # the stages.export.formats entry that selects it
    kinds: tuple[str, ...] = ()  # the report kinds of its artifacts
    suffix = ""  # of its artifacts' paths
    runtime = ""  # the runtime that loads its artifacts on this machine
    device_runtime: str | None = None  # the runtime that times them on an attached device (stages.bench.on_device)
    tasks: tuple[str, ...] = ()  # ModelSpec.task values it serves
    needs: tuple[str, ...] = ()  # FP32_MODULE, INT8_MODULE, ONNX_FILE
    always = False  # written whatever stages.export.formats says: the files the other formats start from
    ships_to: tuple[str, ...] = ()  # target runtimes that load this format on the device: for them it must succeed
    checked_on: tuple[str, ...] = ()  # target runtimes whose operator rules its student artifacts are checked against

    def export(self, job) -> Iterator[Artifact]:  # job: edgedistill.exporters.job.ExportJob
        """Write, check against the model it came from (refusing beyond tolerance) and yield each artifact."""
        raise NotImplementedError

    def missing(self) -> str | None:
        """Why this machine cannot write the format (a package not installed, and how to install it), or None."""
        return None

    def usage(self, spec) -> dict:
        """What an app needs to call this format (the report's "use it in your app" section)."""
        return {}

    def source_among(self, role: str, precision: str, earlier: list[Artifact]) -> Artifact | None:
        """The artifact one of this format's artifacts was converted from, among those written before it."""
        return None

    def restore(self, record: dict, out: Path, earlier: list[Artifact]) -> Artifact:
        """The Artifact behind a record of the export stage (bench reads the records, also after a resume)."""
        rest = {k: v for k, v in record.items()
                if k not in ("role", "kind", "path", "size_bytes", "precision", "for_target")}
        return Artifact(record["role"], record["kind"], record["precision"], out / record["path"], exporter=self.name,
                        runtime=self.runtime, source=self.source_among(record["role"], record["precision"], earlier),
                        for_target=record.get("for_target"), fields=rest)

    def estimate_file(self, artifact: Artifact, target) -> Path | None:
        """The ONNX graph the target's latency is estimated from (edgedistill.estimate), or None: none fits."""
        graph = artifact.source.file if artifact.source is not None else artifact.file
        return graph if graph.suffix == ".onnx" else None

    def estimate_precision(self, artifact: Artifact, target) -> str:
        from edgedistill.runtimes import for_target

        if artifact.int8:
            return "int8"
        runs = for_target(target)
        return runs.float_precision if runs is not None else "fp32"


# In the order they run (a converter's source is written before it); plug-ins from entry points run after them.
EXPORTERS: Registry[Exporter] = Registry("exporter", builtins=(
    "edgedistill.exporters.onnx_fp32", "edgedistill.exporters.hf_onnx", "edgedistill.exporters.onnx_int8",
    "edgedistill.exporters.ort_mobile", "edgedistill.exporters.coreml", "edgedistill.exporters.onnx_kv",
    "edgedistill.exporters.executorch", "edgedistill.exporters.litert"))


def serving(task: str) -> list[Exporter]:
    return [e for e in EXPORTERS if task in e.tasks]


def selected(task: str, formats: list[str]) -> list[Exporter]:
    """The exporters a run writes: those of its task that stages.export.formats names, and the always-written."""
    return [e for e in serving(task) if e.always or e.format in formats]


def own_format(runtime: str, task: str | None = None) -> Exporter | None:
    """The exporter of the file an app on `runtime` loads (for `task`'s models), when that is not the
    always-written ONNX."""
    return next((e for e in EXPORTERS if runtime in e.ships_to and not e.always and (task is None or task in e.tasks)),
                None)


def required_format(task: str, target) -> str:
    """The format the target's runtime loads: its failure stops the run, another format's is recorded."""
    own = own_format(target.runtime, task)
    return own.format if own else next((e.format for e in serving(task) if e.always), "")


def usage(task: str, spec) -> dict:
    """The usage section: every format of the task has its say (an app may load any of them)."""
    merged: dict = {}
    for exporter in serving(task):
        merged.update(exporter.usage(spec))
    return merged


def of_kind(kind: str, task: str) -> Exporter:
    found = next((e for e in serving(task) if kind in e.kinds), None)
    if found is None:
        raise ValueError(f"no exporter writes '{kind}' artifacts for {task} models")
    return found


def restore(records: list[dict], task: str, out: Path) -> list[Artifact]:
    """The export stage's artifact records as Artifacts, sources resolved."""
    artifacts: list[Artifact] = []
    for record in records:
        artifacts.append(of_kind(record["kind"], task).restore(record, out, artifacts))
    return artifacts


def onnx_twin(role: str, precision: str, earlier: list[Artifact]) -> Artifact | None:
    """The plain .onnx artifact of `role` with the same int8-ness: what an .ort or .mlpackage came from."""
    int8 = precision in INT8_PRECISIONS
    return next((a for a in earlier if a.role == role and a.int8 == int8 and a.path.suffix == ".onnx"), None)
