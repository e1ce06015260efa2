"""bench: held-out accuracy, batch-1 latency and size of every exported artifact.

Latency is measured with ONNX Runtime on this machine, threads from the target. It is labelled
"measured" when this machine can stand in for the target (same ISA and CPU features), and
"measured-host" otherwise: then it compares artifacts with each other, it is not the phone's latency."""

from __future__ import annotations

from edgedistill.runtimes import onnxruntime as ortr

USES_TARGET = True
MAIN_ONLY = True  # under torchrun, rank 0 alone
RUNNABLE_KINDS = ("onnx-fp32", "onnx-int8", "ort")


def run(ctx, state, stage_dir):
    cfg = ctx.recipe.stages.bench
    threads = ortr.host_threads(cfg.threads or ctx.target.threads)
    kind = "measured" if ctx.target.runs_on_host() else "measured-host"
    x_test = ctx.data.x_test.cpu().numpy()
    y_test = ctx.data.y_test.cpu().numpy()
    results = []
    for art in state.records.get("export", {}).get("artifacts", []):
        entry = {"path": art["path"], "accuracy": None, "latency_ms": None}
        if art["kind"] in RUNNABLE_KINDS:
            sess = ortr.session(ctx.out / art["path"], threads)
            entry["accuracy"] = float((ortr.logits(sess, x_test).argmax(-1) == y_test).mean())
            lat = ortr.latency_ms(sess, x_test[:1], cfg.warmup, cfg.repeats)
            entry["latency_ms"] = {**lat, "kind": kind, "threads": threads, "batch": 1, "runtime": "onnxruntime-cpu"}
            ctx.log(f"    {art['role']:<7} {art['kind']:<9} acc {entry['accuracy']:.4f}  "
                    f"p50 {lat['p50']:.3f} ms ({kind}, {threads} thr)  {art['size_bytes']:,} B")
        else:
            entry["latency_note"] = "runs only on Apple platforms; not measured on this machine"
        results.append(entry)
    state.records["bench"] = {"name": "bench", "threads": threads, "latency_kind": kind,
                              "host_stands_in_for_target": ctx.target.runs_on_host(), "artifacts": results}
    return state


def restore(ctx, state, stage_dir):
    return state
