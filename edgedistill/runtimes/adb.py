"""On-device latency on an attached Android phone: adb pushes the model and ONNX Runtime's own benchmark tool
(onnxruntime_perf_test, built for Android arm64 from the onnxruntime repository; its path comes from the
caller or EDGEDISTILL_ORT_PERF_TEST) and runs it there with random inputs. Figures are labelled "on-device".

adb comes from $ADB or the PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from edgedistill.errors import UserError
from edgedistill.runtimes import RUNTIMES, Runtime

REMOTE_DIR = "/data/local/tmp/edgedistill"


def _adb() -> str:
    adb = os.environ.get("ADB") or shutil.which("adb")
    if not adb:
        raise UserError("on-device latency: adb is not installed; install Android platform-tools or set ADB")
    return adb


def _run(*args: str, serial: str | None = None) -> str:
    cmd = [_adb(), *(["-s", serial] if serial else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"on-device latency: `adb {' '.join(args[:2])}` failed: {first[0] if first else done.returncode}")
    return done.stdout


def devices() -> list[str]:
    """Serials of the attached devices that are ready ("device" state)."""
    lines = _run("devices").splitlines()[1:]
    return [parts[0] for parts in (line.split() for line in lines) if len(parts) >= 2 and parts[1] == "device"]


def parse_perf_test(text: str) -> dict:
    """Latency percentiles (ms) from onnxruntime_perf_test's report ("P50 Latency: 0.00221 s", ...)."""
    found = {f"p{k}": float(v) * 1e3 for k, v in re.findall(r"P(\d+) Latency:\s*([0-9.eE+-]+)\s*s", text)}
    mean = re.search(r"Average inference time cost:\s*([0-9.eE+-]+)\s*ms", text)
    if "p50" not in found or mean is None:
        raise UserError("on-device latency: onnxruntime_perf_test printed no latency figures; run it by hand with "
                        "-I -m times to see why")
    return {"p50": found["p50"], "p90": found.get("p90", found["p50"]), "p99": found.get("p99", found["p50"]),
            "mean": float(mean.group(1))}


def measure(model: Path, perf_test: Path | None, threads: int, repeats: int = 200, serial: str | None = None,
            provider: str = "cpu") -> dict:
    """Run `model` (.ort or .onnx) on the attached phone; returns {"kind": "on-device", "p50", "p90", "p99",
    "mean", "threads", "device", "runtime"}."""
    perf_test = perf_test or (Path(os.environ["EDGEDISTILL_ORT_PERF_TEST"])
                              if os.environ.get("EDGEDISTILL_ORT_PERF_TEST") else None)
    if perf_test is None or not Path(perf_test).is_file():
        raise UserError("on-device latency: needs onnxruntime_perf_test built for Android; pass --perf-test PATH "
                        "or set EDGEDISTILL_ORT_PERF_TEST")
    attached = devices()
    if serial is None:
        if len(attached) != 1:
            raise UserError(f"on-device latency: {len(attached)} devices attached ({', '.join(attached) or 'none'}); "
                            "attach one phone or pass --serial")
        serial = attached[0]
    elif serial not in attached:
        raise UserError(f"on-device latency: device {serial} is not attached (attached: {', '.join(attached) or 'none'})")
    remote_tool, remote_model = f"{REMOTE_DIR}/onnxruntime_perf_test", f"{REMOTE_DIR}/{Path(model).name}"
    _run("shell", f"mkdir -p {REMOTE_DIR}", serial=serial)
    _run("push", str(perf_test), remote_tool, serial=serial)
    _run("shell", f"chmod 755 {remote_tool}", serial=serial)
    _run("push", str(model), remote_model, serial=serial)
    out = _run("shell", f"{remote_tool} -I -m times -r {repeats} -x {threads} -e {provider} {remote_model}",
               serial=serial)
    name = _run("shell", "getprop ro.product.model", serial=serial).strip()
    return {**parse_perf_test(out), "kind": "on-device", "threads": threads, "batch": 1, "repeats": repeats,
            "device": name or serial, "runtime": f"onnxruntime_perf_test ({provider} EP)"}


@RUNTIMES.register("adb")
class Adb(Runtime):
    """ONNX Runtime's benchmark tool on the attached Android phone: latency only (stages.bench.on_device)."""

    name = "adb"

    def bench(self, artifact, job):
        measured = measure(artifact.file, None, job.target.threads, job.cfg.repeats)
        job.ctx.log(f"    {artifact.role:<7} {artifact.kind} on {measured['device']}: p50 {measured['p50']:.3f} ms "
                    "(on-device)")
        return {"on_device_ms": measured}

    def time_file(self, path, target, warmup, repeats, perf_test=None, serial=None, **options):
        return {**measure(path, perf_test, target.threads, repeats, serial), "target": target.name}
