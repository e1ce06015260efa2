"""The command line: compress, targets, recipe, bench, check, report.

Exit status: 0 done; 2 the input is wrong (one line, no traceback); 3 the pipeline refused its own result."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.errors import RefusedError, UserError
from edgedistill.rundir import Terminated

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill, prune, quantize and export a model for a target device.")
_debug = False


def _quiet_libraries() -> None:
    """Silence known-harmless noise from the stack (see the README's troubleshooting)."""
    import logging
    import warnings

    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' per-pass progress bars
    for name in ("coremltools", "torchao", "torch.onnx", "onnxscript", "nncf", "torch._export", "torch.export",
                 "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*[Tt]orch version.*")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    global _debug
    _debug = debug


@app.command()
def compress(
    recipe: str = typer.Option("digits", "--recipe", "-r", help="Built-in recipe name or path to a recipe YAML."),
    target: str = typer.Option(..., "--target", "-t", help="Target name (see `edgedistill targets`) or profile YAML."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; rerunning resumes it."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: --set stages.distill.epochs=3"),
    force: bool = typer.Option(False, "--force", help="Discard earlier results in --out and start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final summary."),
) -> None:
    """Compress a model for a target device: teacher, student, distill, prune, qat, export, bench, report."""
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    resolved = load_recipe(recipe, set_ or [])
    profile = load_target(target)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; choose a directory path")
    from edgedistill import distributed, pipeline, rundir

    distributed.init_from_env()
    main_rank = distributed.is_main()
    try:
        with rundir.terminate_as_exception():
            state = pipeline.run(resolved, profile, out, force=force, quiet=quiet)
    finally:
        distributed.shutdown()
    if main_rank:
        summary = state.records.get("report", {}).get("summary")
        typer.echo(summary or f"done: {out}")


@app.command()
def targets(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List the target device profiles."""
    from edgedistill.targets import TARGETS_DIR, available, load_target

    profiles = [load_target(name) for name in available()]
    if not profiles:
        raise UserError(f"{TARGETS_DIR}: no target profiles (*.yaml) there; point EDGEDISTILL_TARGETS at a folder "
                        "of them, or reinstall edgedistill")
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return
    width = max(len(p.name) for p in profiles)
    for p in profiles:
        typer.echo(f"{p.name:<{width}}  {p.runtime:<11} {p.precision:<5} {p.compute_unit:<4} {p.description}")


@app.command("recipe")
def show_recipe(name: str = typer.Argument(None, help="Built-in recipe to print as YAML.")) -> None:
    """Print a built-in recipe (to copy and edit), or list them."""
    from edgedistill.recipe import builtin_names, builtin_text

    if name is None:
        typer.echo("\n".join(builtin_names()))
        return
    typer.echo(builtin_text(name), nl=False)


@app.command()
def bench(
    model: Path = typer.Argument(..., help="An exported .onnx or .ort file."),
    target: str = typer.Option(..., "--target", "-t", help="Target name or profile YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    warmup: int = typer.Option(20, min=0, max=1_000_000, help="Runs excluded before timing."),
    repeats: int = typer.Option(200, min=1, max=1_000_000, help="Timed runs."),
    on_device: bool = typer.Option(False, "--on-device", help="Time it on the attached Android phone (adb)."),
    perf_test: Optional[Path] = typer.Option(None, help="onnxruntime_perf_test built for Android (--on-device)."),
    serial: Optional[str] = typer.Option(None, help="adb serial when several phones are attached."),
) -> None:
    """Batch-1 latency of a model on a target: measured here when this machine can stand in for it,
    otherwise estimated from the target's datasheet peaks; with --on-device, measured on the attached
    phone. The `kind` field says which."""
    from edgedistill.runtimes import RUNTIMES
    from edgedistill.targets import load_target

    profile = load_target(target)
    if on_device and not model.is_file():
        raise UserError(f"{model}: no such model file; pass an .ort or .onnx file")
    runtime = RUNTIMES.get("adb" if on_device else "onnxruntime")
    result = runtime.time_file(model, profile, warmup, repeats, perf_test=perf_test, serial=serial)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{model.name} on {result['target']}: p50 {result['p50']:.3f} ms, p90 {result['p90']:.3f} ms, "
               f"p99 {result['p99']:.3f} ms ({result['kind']}, {result['threads']} thread(s))")


@app.command()
def check(
    model: Path = typer.Argument(..., help="An exported .onnx, .ort, .mlpackage, .pte or .tflite."),
    target: str = typer.Option(..., "--target", "-t", help="Target name or profile YAML."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Operators of an exported model, flagging those the target cannot run or runs off its accelerator.
    Exit status 3 when something cannot run."""
    from edgedistill.deployability import check_file
    from edgedistill.targets import load_target

    result = check_file(model, load_target(target))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        flags: dict[str, str] = {}
        for kind in ("unsupported", "off_accelerator", "outside_reduced_build"):
            for f in result[kind]:
                flags[f["op"]] = "; ".join(filter(None, [flags.get(f["op"]), f"{kind}: {f['why']}"]))
        width = max(len(op) for op in [*result["operators"], *flags])
        typer.echo(f"{model.name} on {result['target']} ({result['runtime']}, {result['compute_unit']}, "
                   f"accelerator: {result['accelerator'] or 'none'})")
        for op in [*result["operators"], *(op for op in flags if op not in result["operators"])]:
            typer.echo(f"  {op:<{width}} {result['operators'].get(op, ''):>5}  {flags.get(op, 'ok')}")
        for note in result["notes"]:
            typer.echo(f"note: {note}")
        typer.echo("deployable" if result["ok"] else "NOT deployable: see 'unsupported' above")
    if not result["ok"]:
        raise typer.Exit(3)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory made by `compress`.")) -> None:
    """Regenerate report.json, report.md and report.html from a run's recorded data. The first line says how the
    run ended; exit status 3 when a stage refused its result (as `compress` did), 0 otherwise."""
    from edgedistill.report import regenerate

    data = regenerate(run_dir)
    typer.echo(data["summary"])
    if data["status"]["state"] == "refused":
        raise typer.Exit(3)


def main() -> None:
    from typer import _click
    from typer.exceptions import Abort

    _quiet_libraries()
    try:
        # Not standalone: typer would print click's usage errors as a multi-line panel, and turn Ctrl-C into a
        # silent exit 130. Here every failure is one line.
        code = app(standalone_mode=False)
    except _click.exceptions.NoArgsIsHelpError as e:  # `edgedistill` alone: the help is the answer
        if e.format_message().strip():
            typer.echo(e.format_message(), err=True)
        sys.exit(e.exit_code)
    except _click.exceptions.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else _command_path()
        _fail(_one_line(e.format_message()).rstrip(".") + f"; see {command} --help", e.exit_code)
    except _click.exceptions.ClickException as e:
        _fail(_one_line(e.format_message()), e.exit_code)
    except Abort:
        _fail("aborted", 1)
    except UserError as e:
        _fail(e, 2)
    except RefusedError as e:
        _fail(e, 3)
    except KeyboardInterrupt:  # outside typer's own handling (which makes it an exit 130, below)
        _interrupted()
    except Terminated:  # SIGTERM: cleaned up on the way here; die of the signal, as the sender expects
        import signal

        typer.echo("terminated: rerun the same command to resume", err=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _fail(UserError(f"{e.filename or 'the output directory'}: no space left on the device; free some space "
                        "or choose another --out, then rerun to resume"), 2)
    if code == 130:  # typer.core turns a KeyboardInterrupt (Ctrl-C, SIGINT) into an exit with status 130
        _interrupted()
    if isinstance(code, int) and code:  # typer.Exit(3) of `check`
        sys.exit(code)


def _command_path() -> str:
    """'edgedistill compress' for an error click raised without its context (an option missing its value)."""
    from typer import _click

    prog = _click.utils._detect_program_name()
    names = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    return f"{prog} {command}" if command in names else prog


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _interrupted() -> None:
    typer.echo("interrupted: rerun the same command to resume", err=True)
    sys.exit(130)


def _fail(e: Exception | str, code: int) -> None:
    if _debug:
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {e}", err=True)
    sys.exit(code)
