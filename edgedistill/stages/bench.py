"""bench: held-out accuracy, batch-1 latency and size of every exported artifact.

Latency is measured with ONNX Runtime on this machine, threads from the target. It is labelled
"measured" when this machine can stand in for the target (same ISA and CPU features), and
"measured-host" otherwise: then it compares artifacts with each other, it is not the phone's latency.

With `on_device`, the .ort is also timed on the attached Android phone (adb + onnxruntime_perf_test, labelled
"on-device"); on macOS, Core ML packages are run too (accuracy, and latency per compute unit).

Each runnable artifact's record also holds its held-out confusion matrix ("confusion": rows are the true
class, columns the predicted one, counts), from the same predictions as its accuracy."""

from __future__ import annotations

from edgedistill import exporters, latency
from edgedistill.estimate import estimate
from edgedistill.runtimes import RUNTIMES, BenchJob
from edgedistill.runtimes import onnxruntime as ortr
from edgedistill.stages.base import STAGES, Stage

def _bench(ctx, state):
    cfg, target = ctx.recipe.stages.bench, ctx.target
    threads = ortr.host_threads(cfg.threads or target.threads)
    kind = latency.label(target)
    record = {"name": "bench", "threads": threads, "latency_kind": kind,
              "host_stands_in_for_target": target.runs_on_host()}
    job = BenchJob(ctx, state, threads, kind)
    task = ctx.data.spec.task
    artifacts = exporters.restore(state.records.get("export", {}).get("artifacts", []), task, ctx.out)
    results, used = [], []
    for art in artifacts:
        exporter, runtime = exporters.EXPORTERS.get(art.exporter), RUNTIMES.get(art.runtime)
        entry = {"path": str(art.path.relative_to(ctx.out)), "accuracy": None, "latency_ms": None}
        if runtime.available():
            entry.update(runtime.bench(art, job))
            used += [runtime] if runtime not in used else []
        else:
            entry["latency_note"] = runtime.unavailable
        if cfg.on_device and exporter.device_runtime:
            entry.update(RUNTIMES.get(exporter.device_runtime).bench(art, job))
        # The target itself is out of reach: estimate it from its datasheet peaks, on the ONNX graph the
        # artifact is or was converted from.
        if not target.runs_on_host() and (graph := exporter.estimate_file(art, target)) is not None:
            entry["estimate"] = estimate(graph, target, precision=exporter.estimate_precision(art, target))
        results.append(entry)
    record["artifacts"] = results
    for runtime in used:
        record.update(runtime.bench_run(job))
    state.records["bench"] = record


@STAGES.register("bench")
class Bench(Stage):
    name, position = "bench", 80
    uses_target = True
    main_only = True  # under torchrun, rank 0 alone

    def validate(self, recipe, target) -> None:
        timed_on_device = (e for e in exporters.EXPORTERS if e.device_runtime)
        if recipe.stages.bench.on_device and not any(target.runtime in e.ships_to for e in timed_on_device):
            from edgedistill.errors import UserError

            raise UserError(f"stages.bench.on_device: times the .ort on an attached Android phone, but "
                            f"{target.name} runs {target.runtime}; use an Android target (pixel-8, galaxy-s23) or "
                            "turn it off")

    def run(self, ctx, state, stage_dir):
        _bench(ctx, state)
