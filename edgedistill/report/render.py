"""Render report.json as Markdown and as one self-contained HTML page (inline CSS, inline SVG plots).

Both functions are pure: they read only the report dict, so `edgedistill report RUN` can rebuild the files
from recorded data. Every field except target, stages and artifacts may be missing or null, and a malformed
value shows as "n/a" rather than failing the whole report."""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import PurePosixPath
from typing import Any, NamedTuple

NA = "n/a"
# Muted colours that stay distinguishable in print; the first is also the page's accent colour.
PALETTE = ["#3e6a8a", "#c8804a", "#5a9a6e", "#b4555b", "#7d6ba8", "#8c7a5b", "#5b9aa8"]


class Table(NamedTuple):
    """One table, built once and rendered by both the Markdown and the HTML writer."""

    headers: list[str]
    rows: list[list[str]]
    align: str  # a letter per column: l(eft), r(ight: numbers), c(ode: paths)
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------- defensive accessors and formatting

def _num(v: Any) -> float | None:
    """A finite number, or None: bools, strings and NaN must not be formatted as data."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    x = _num(v)
    return NA if x is None else format(x * scale, spec)


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _records(v: Any) -> list[dict]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _text(v: Any) -> str:
    return NA if v is None or v == "" else str(v)


def _latency(lat: Any) -> str:
    """'0.090 / 0.100 ms (measured-host)': the label matters, an estimate is not a measurement."""
    lat = _dict(lat)
    if _num(lat.get("p50")) is None and _num(lat.get("p90")) is None:
        return NA
    text = f"{_fmt(lat.get('p50'), '.3f')} / {_fmt(lat.get('p90'), '.3f')} ms"
    return f"{text} ({lat['kind']})" if lat.get("kind") else text


# ---------------------------------------------------------------- tables

def stage_table(report: dict) -> Table:
    stages = _records(report.get("stages"))
    ref = next((_num(s.get("accuracy")) for s in stages if s.get("name") == "teacher"), None)
    rows = []
    for s in stages:
        acc = _num(s.get("accuracy"))
        delta = NA if acc is None or ref is None else f"{(acc - ref) * 100:+.2f}"
        rows.append([_text(s.get("name")), _fmt(acc, ".2f", 100), delta, _fmt(s.get("params"), ",.0f"),
                     _fmt(s.get("macs"), ",.0f"), _fmt(s.get("wall_s"), ",.1f")])
    headers = ["stage", "accuracy (%)", "vs teacher (points)", "params", "MACs", "wall time (s)"]
    return Table(headers, rows, "lrrrrr")


def artifact_table(report: dict) -> Table:
    artifacts = _records(report.get("artifacts"))
    # Say why a latency is missing (Core ML on Linux), so an empty cell is not a mystery.
    notes = tuple(f"{_text(a.get('path'))}: {a['latency_note']}" for a in artifacts if a.get("latency_note"))
    rows = [[_text(a.get("role")), _text(a.get("kind")), _text(a.get("path")), _fmt(a.get("size_bytes"), ",.1f", 1e-3),
             _fmt(a.get("accuracy"), ".2f", 100), _latency(a.get("latency_ms"))] for a in artifacts]
    headers, align = ["role", "kind", "path", "size (KB)", "accuracy (%)", "latency p50 / p90"], "llcrrr"
    if any(isinstance(a.get("graph"), dict) for a in artifacts):
        # Beside the latency: how much of the file computes in integer and how much its delegate takes.
        for row, a in zip(rows, artifacts):
            row.append(_composition(_dict(a.get("graph"))))
        headers, align = [*headers, "integer / delegated"], align + "l"
        notes += tuple(f"{_text(a.get('path'))}: left outside the {_text(a['graph'].get('delegate'))} delegate: "
                       + ", ".join(f"{op} x{n}" for op, n in _dict(a["graph"].get("left_on_cpu")).items())
                       for a in artifacts if isinstance(a.get("graph"), dict) and a["graph"].get("left_on_cpu"))
    if any(isinstance(a.get(k), dict) for a in artifacts for k in ("latency_estimated_ms", "on_device_ms")):
        # The target itself: timed on the attached device, or else its roofline estimate, beside the host figure.
        for row, a in zip(rows, artifacts):
            est = _dict(a.get("on_device_ms")) or _dict(a.get("latency_estimated_ms"))
            row.append(f"{_fmt(est.get('p50'), '.3f')} ms ({est['kind']})" if est.get("kind") else NA)
        return Table([*headers, "on target p50"], rows, align + "r", notes)
    return Table(headers, rows, align, notes)


def _composition(graph: dict) -> str:
    """'100% int8 (4/4 conv/linear), 100% XNNPACK (1 partition)', or n/a for a file not read this way."""
    if not graph:
        return NA
    parts = []
    if _num(graph.get("integer_fraction")) is not None:
        parts.append(f"{_fmt(graph['integer_fraction'], '.0f', 100)}% int8 ({_text(graph.get('integer_compute_ops'))}/"
                     f"{_text(graph.get('compute_ops'))} conv/linear)")
    if _num(graph.get("delegated_fraction")) is not None:
        n = _num(graph.get("partitions")) or 0
        parts.append(f"{_fmt(graph['delegated_fraction'], '.0f', 100)}% {_text(graph.get('delegate'))} "
                     f"({n:.0f} partition{'' if n == 1 else 's'})")
    return ", ".join(parts) or NA


def parity_table(report: dict) -> Table:
    parity = _records(report.get("parity"))
    rows = [[_text(p.get("from")), _text(p.get("to")), _fmt(p.get("top1_agreement"), ".2f", 100),
             _fmt(p.get("max_abs"), ".3g"), _text(p.get("arithmetic") or "-")] for p in parity]
    notes = tuple(f"{_text(p.get('to'))}: judged by reference execution (Q/DQ as float operators) because this "
                  f"CPU's int8 kernels ({_text(p.get('host_arithmetic'))}) do not compute as "
                  f"{_text(report.get('target'))}'s do; with them it agreed on "
                  f"{_fmt(_dict(p.get('host_kernels')).get('top1_agreement'), '.2f', 100)}%"
                  for p in parity if p.get("arithmetic") == "reference")
    return Table(["reference", "compared", "top-1 agreement (%)", "max abs diff", "int8 arithmetic"], rows,
                 "llrrl", notes)


def deployability_table(report: dict) -> Table | None:
    """The operator check against the target: before training (preflight) and for each exported file."""
    rows = []
    checks = [("before training", _text(_dict(report.get("preflight")).get("checked")), _dict(report.get("preflight")))]
    checks += [(_text(a.get("kind")), _text(a.get("path")), _dict(a.get("deployability")))
               for a in _records(report.get("artifacts"))]
    for when, what, c in checks:
        if c.get("skipped"):
            rows.append([when, "-", f"not checked: {_text(c['skipped'])}", "-", "-", "-"])
        elif "ok" in c:
            rows.append([when, what, "yes" if c["ok"] else "NO", ", ".join(map(str, c.get("unsupported") or [])) or "-",
                         ", ".join(map(str, c.get("off_accelerator") or [])) or "-", _text(c.get("accelerator") or "-")])
    if not rows:
        return None
    return Table(["checked", "model", "runs", "unsupported ops", "off the accelerator", "accelerator"], rows, "lcllll")


def _widths(widths: Any) -> str:
    """Layer widths with runs of equal values folded: a ResNet-56's 57 layers read as "16×19, 32×19, 64×19"."""
    if not isinstance(widths, list) or not widths:
        return NA
    runs: list[list] = []
    for w in widths:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    return ", ".join(f"{_text(w)}×{n}" if n > 1 else _text(w) for w, n in runs)


def pruning_table(report: dict) -> Table | None:
    """The prune stage's evidence: every step measured, then the model after its final recovery."""
    prune = next((s for s in _records(report.get("stages")) if s.get("name") == "prune"), {})
    steps = _records(prune.get("steps"))
    if not steps:
        return None
    after = prune.get("after_recovery")
    rows = []
    for s in steps + ([{**after, "step": "after recovery"}] if isinstance(after, dict) else []):
        removed = s.get("removed_blocks")
        blocks = f" ({len(removed)} blocks removed)" if isinstance(removed, list) and removed else ""
        rows.append([_text(s.get("step")), _widths(s.get("channels")) + blocks,
                     _fmt(s.get("macs"), ",.0f"), _fmt(s.get("params"), ",.0f"), _fmt(s.get("accuracy"), ".2f", 100),
                     _fmt(s.get("onnx_weight_bytes"), ",.1f", 1e-3), _latency(s.get("latency_ms")),
                     str(s.get("flag") or "")])
    headers = ["step", "widths", "MACs", "params", "accuracy (%)", "ONNX weights (KB)", "latency p50 / p90", "flag"]
    return Table(headers, rows, "llrrrrrl")


def precision_table(report: dict) -> Table | None:
    """The precision plan's evidence: each int8/fp32 combination measured, the chosen one marked."""
    plan = next((s for s in _records(report.get("stages")) if s.get("name") == "precision"), {})
    cands = _records(plan.get("candidates"))
    if not cands:
        return None
    blocks = plan.get("blocks") or []
    chosen = sorted(plan.get("int8") or [])
    rows = []
    for c in sorted(cands, key=lambda c: _num(c.get("p50_ms")) or 0.0):
        int8 = c.get("int8") or []
        label = "all fp32" if not int8 else "all int8" if len(int8) == len(blocks) else ", ".join(int8)
        rows.append([label, _fmt(c.get("p50_ms"), ".3f"), _fmt(c.get("accuracy"), ".2f", 100),
                     _fmt(c.get("agreement"), ".2f", 100),
                     "chosen" if sorted(int8) == chosen else ""])
    return Table([f"int8 blocks (of {', '.join(blocks)})", f"p50 ms ({_text(plan.get('latency_kind'))})",
                  "accuracy, PTQ (%)", "agreement with fp32 (%)", ""], rows, "lrrrl", (_text(plan.get("verdict")),))


def _confusion(a: dict) -> list[list[int]] | None:
    """An artifact's confusion matrix if it is a square matrix of counts, else None."""
    m = a.get("confusion")
    if not isinstance(m, list) or not m or not all(
            isinstance(r, list) and len(r) == len(m) and all(_num(v) is not None and v >= 0 for v in r) for r in m):
        return None
    return [[int(v) for v in r] for r in m]


def _label(a: dict) -> str:
    return f"{_text(a.get('role'))} {_text(a.get('kind'))}"


def per_class_artifacts(report: dict) -> tuple[dict | None, dict | None, str]:
    """(teacher fp32 ONNX, student artifact, why that student artifact) for the per-class comparison: the
    artifact the headline ships when it was run here, else the student int8 ONNX (a Core ML headline's twin),
    else the student fp32 ONNX. Either may be None when no confusion matrix was recorded for it."""
    artifacts = [a for a in _records(report.get("artifacts")) if _confusion(a) is not None]
    teacher = next((a for a in artifacts if a.get("role") == "teacher" and a.get("kind") == "onnx-fp32"), None)
    shipped = _dict(report.get("headline")).get("artifact")
    student = next((a for a in artifacts if shipped is not None and a.get("path") == shipped), None)
    if student is not None:
        return teacher, student, "the artifact the headline ships"
    for kind in ("onnx-int8", "onnx-fp32"):
        if (student := next((a for a in artifacts if a.get("role") == "student" and a.get("kind") == kind), None)):
            why = (f"the headline's {shipped} is not run on this machine" if shipped
                   else "no headline artifact was recorded")
            return teacher, student, why
    return teacher, None, ""


def _class_labels(report: dict, n: int) -> list[str]:
    labels = _dict(report.get("usage")).get("labels")
    return [str(x) for x in labels] if isinstance(labels, list) and len(labels) == n else [str(i) for i in range(n)]


def _recall(m: list[list[int]]) -> list[float | None]:
    return [r[i] / sum(r) if sum(r) else None for i, r in enumerate(m)]


def per_class_table(report: dict) -> Table | None:
    """Held-out accuracy per true class, teacher fp32 vs the student artifact; None when nothing was recorded."""
    teacher, student, why = per_class_artifacts(report)
    ref = student or teacher
    if ref is None:
        return None
    m = _confusion(ref)
    n = len(m)
    t = _confusion(teacher) if teacher is not None else None
    t = t if t is not None and len(t) == n else None
    s = _confusion(student) if student is not None else None
    t_acc, s_acc = _recall(t) if t else [None] * n, _recall(s) if s else [None] * n
    labels = _class_labels(report, n)
    rows = []
    for i in range(n):
        delta = NA if t_acc[i] is None or s_acc[i] is None else f"{(s_acc[i] - t_acc[i]) * 100:+.1f}"
        errors = NA
        if s:
            j = max((j for j in range(n) if j != i), key=lambda j: s[i][j], default=None)
            errors = "none" if j is None or s[i][j] == 0 else f"{labels[j]} ({s[i][j]} of {sum(s[i])})"
        rows.append([labels[i], _fmt(sum(m[i]), ",.0f"), _fmt(t_acc[i], ".1f", 100), _fmt(s_acc[i], ".1f", 100),
                     delta, errors])
    s_name = _label(student) if student is not None else "student"
    notes = [f"Held-out set: {sum(map(sum, m)):,} examples; accuracy per true class (its recall)."]
    if student is not None:
        notes.append(f"Student: {_text(student.get('path'))}, {why}.")
    return Table(["class", "examples", "teacher onnx-fp32 (%)", f"{s_name} (%)", "vs teacher (points)",
                  "student mostly mistakes it for"], rows, "lrrrrl", tuple(notes))


def _stage_times(report: dict) -> str:
    """'teacher 2.9 s, student 0.0 s, ... (total 33.1 s)' from stage_wall_s, or the model stages' wall_s."""
    times = _dict(report.get("stage_wall_s")) or {_text(s.get("name")): s.get("wall_s")
                                                  for s in _records(report.get("stages"))}
    times = {str(k): _num(v) for k, v in times.items() if _num(v) is not None}
    if not times:
        return NA
    scope = "" if _dict(report.get("stage_wall_s")) else ", model stages only"
    return ", ".join(f"{k} {v:,.1f} s" for k, v in times.items()) + f" (total {sum(times.values()):,.1f} s{scope})"


def environment_table(report: dict) -> Table:
    env = _dict(report.get("environment"))
    cpu = _text(env.get("cpu"))
    if cpu != NA and _num(env.get("cpu_count")) is not None:
        cpu += f" ({int(env['cpu_count'])} cores)"
    flags = env.get("cpu_flags") if isinstance(env.get("cpu_flags"), list) else []
    rows = [["versions", ", ".join(f"{k} {v}" for k, v in _dict(env.get("versions")).items()) or NA],
            ["cpu", cpu], ["cpu flags", ", ".join(map(str, flags)) or NA], ["platform", _text(env.get("platform"))],
            ["device", _text(env.get("device"))], ["gpu", _text(env.get("gpu"))],
            ["world size", _text(env.get("world_size"))], ["git", _text(env.get("git"))],
            ["time per stage", _stage_times(report)],
            ["created", _text(report.get("created"))]]
    return Table(["item", "value"], rows, "ll")


def _tables(report: dict) -> list[tuple[str, Table]]:
    pruning, deployable, plan = pruning_table(report), deployability_table(report), precision_table(report)
    return ([("Stages", stage_table(report))] + ([("Pruning steps", pruning)] if pruning else [])
            + ([("Precision plan", plan)] if plan else [])
            + [("Artifacts", artifact_table(report)), ("Parity", parity_table(report))]
            + ([("Deployability on the target", deployable)] if deployable else []))


PER_CLASS = "Per-class accuracy"  # its section is left out for reports recorded before confusion matrices


# ---------------------------------------------------------------- Markdown

def _md_table(t: Table) -> list[str]:
    def cell(v: str, a: str = "l") -> str:
        v = v.replace("|", "\\|").replace("\n", " ")  # a pipe would split the cell
        return f"`{v}`" if a == "c" and v != NA else v

    lines = ["| " + " | ".join(map(cell, t.headers)) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in t.align) + "|"]
    lines += ["| " + " | ".join(map(cell, row, t.align)) + " |" for row in t.rows]
    return (lines if t.rows else ["_None recorded._"]) + ([""] + [f"- {n}" for n in t.notes] if t.notes else [])


def render_markdown(report: dict) -> str:
    """report.md: title, summary, stage/artifact/parity tables and provenance, in GitHub-flavoured Markdown."""
    out = [f"# edgedistill report: {_text(report.get('target'))}", ""]
    if desc := _dict(report.get("target_profile")).get("description"):
        out += [f"_{desc}_", ""]
    status = _dict(report.get("status"))
    if status.get("state") not in (None, "finished"):
        out += [f"> **{_text(status['state']).upper()}:** {_text(status.get('message'))}", ""]
    out += [f"**Summary:** {_text(report.get('summary'))}", ""]
    out += [f"- {n}" for n in report.get("notes") or []] + ([""] if report.get("notes") else [])
    per_class = per_class_table(report)
    for title, table in (_tables(report) + ([(PER_CLASS, per_class)] if per_class else [])
                         + [("Environment", environment_table(report))]):
        out += [f"## {title}", "", *_md_table(table), ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- plots (inline SVG)

def _figure(ncols: int, nrows: int, row_height: float) -> tuple[Any, list]:
    # Figure + Agg canvas rather than pyplot: no global backend switch, no figure registry to leak.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # One width for every plot: each is scaled to the page width, so text ends up the same size in all.
    fig = Figure(figsize=(9.6, row_height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).flat)


def _svg(fig: Any, prefix: str, label: str, tight: bool = True) -> str:
    """The figure as an <svg> element that can sit inline in HTML next to other plots."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight" if tight else None, metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # the XML declaration and DOCTYPE are invalid inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    # Every matplotlib SVG has ids such as "figure_1": prefix them so two plots on one page never clash.
    svg = re.sub(r'\bid="', f'id="{prefix}-', svg)
    svg = svg.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


def _plain(s: Any) -> str:
    return str(s).replace("$", r"\$")  # a "$" in a name would otherwise start matplotlib mathtext


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#616e7c")
    ax.set_xticks([])
    ax.set_yticks([])


def _scatter(ax: Any, points: list[tuple[str, str, float, float]], xlabel: str, colours: dict) -> None:
    """points: (label, role, x, y); a report has a handful, so simple label clustering avoids overlaps."""
    if not points:
        return _empty(ax, "no artifact has both values")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for _, role, x, y in points:
        ax.scatter(x, y, s=36, color=colours[role], zorder=3)
    xs = [p[2] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        if max(xs) / min(xs) <= 1e3:  # within three decades, 20 / 50 / 100 / 200: one tick per decade is too few
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100 rather than 10^1, 10^2
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels (2x10^1, 3x10^1...) overprint each other
    ax.margins(x=0.2, y=0.2)
    ax.autoscale_view()
    # Points closer than a label is long (an int8 .onnx and its .ort) share one multi-line label.
    to_axes = (ax.transScale + ax.transLimits).transform
    clusters: list[tuple[list, list[str]]] = []  # (points in axes fractions, labels)
    for label, _, x, y in sorted(points, key=lambda p: p[2]):
        at = to_axes((x, y))
        near = next((c for c in clusters if abs(c[0][-1][0] - at[0]) < 0.25 and abs(c[0][0][1] - at[1]) < 0.08), None)
        if near:
            near[0].append(at)
            near[1].append(label)
        else:
            clusters.append(([at], [label]))
    for ats, labels in clusters:
        left = ats[-1][0] > 0.6  # near the right edge: label on the left so it stays inside the axes
        ax.annotate(_plain("\n".join(labels)), ats[0] if left else ats[-1], xycoords="axes fraction",
                    xytext=(-7 if left else 7, 0), textcoords="offset points", ha="right" if left else "left",
                    va="center", fontsize=8)
    ax.set(xlabel=xlabel, ylabel="held-out accuracy (%)")
    ax.grid(alpha=0.3)


def _artifact_plot(report: dict) -> str | None:
    rows = []  # (label, role, accuracy %, p50 ms, size KB, latency label)
    for a in _records(report.get("artifacts")):
        acc, lat, size = _num(a.get("accuracy")), _dict(a.get("latency_ms")), _num(a.get("size_bytes"))
        if acc is not None:
            rows.append((f"{_text(a.get('role'))}/{_text(a.get('kind'))}", _text(a.get("role")), acc * 100,
                         _num(lat.get("p50")), None if size is None else size / 1e3, lat.get("kind")))
    if not rows:
        return None
    from matplotlib.lines import Line2D

    colours = {role: PALETTE[i % len(PALETTE)] for i, role in enumerate(dict.fromkeys(r[1] for r in rows))}
    kinds = ", ".join(sorted({str(r[5]) for r in rows if r[3] is not None and r[5]}))
    fig, (ax_lat, ax_size) = _figure(2, 1, 3.6)
    _scatter(ax_lat, [(r[0], r[1], r[3], r[2]) for r in rows if r[3] is not None],
             f"p50 latency (ms{', ' + kinds if kinds else ''})", colours)
    _scatter(ax_size, [(r[0], r[1], r[4], r[2]) for r in rows if r[4] is not None], "size (KB)", colours)
    ax_lat.set_title("Accuracy vs latency", fontsize=10)
    ax_size.set_title("Accuracy vs size", fontsize=10)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=_plain(r)) for r, c in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    return _svg(fig, "fig1", "Accuracy versus latency and size of the exported artifacts")


def _blend(colour: str, t: float) -> tuple[float, float, float]:
    """colour mixed with white: t=0 white, t=1 the colour."""
    from matplotlib.colors import to_rgb

    return tuple(1 - t * (1 - c) for c in to_rgb(colour))  # type: ignore[return-value]


def _confusion_panel(ax: Any, m: list[list[int]], labels: list[str], title: str) -> None:
    """Counts in cells; the diagonal shaded in the accent colour by the class's recall, errors in red by their
    share of the class, so that a single mistake among 36 examples still shows."""
    import numpy as np

    n = len(m)
    img = np.ones((n, n, 3))
    dark = np.zeros((n, n), dtype=bool)
    for i, row in enumerate(m):
        total = max(sum(row), 1)
        for j, v in enumerate(row):
            if i == j:
                t = v / total
                img[i, j], dark[i, j] = _blend(PALETTE[0], 0.15 + 0.85 * t), t > 0.45
            elif v:
                t = 0.25 + 0.75 * min(1.0, v / total / 0.2)
                img[i, j], dark[i, j] = _blend(PALETTE[3], t), t > 0.6
    ax.imshow(img, interpolation="nearest", aspect="equal")
    if n <= 30:  # beyond that the numbers would not fit; the shading still shows where the errors are
        size = 8 if n <= 12 else 6
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                if v or i == j:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=size,
                            color="white" if dark[i, j] else "#1f2933")
    # Many classes: label every k-th one (fewer on x when long names are slanted, so they do not overprint).
    slanted = max(len(str(x)) for x in labels) > 3
    for axis, most in ((ax.xaxis, 16 if slanted else 30), (ax.yaxis, 30)):
        ticks = list(range(0, n, max(1, math.ceil(n / most))))
        axis.set_ticks(ticks, [_plain(labels[i]) for i in ticks], fontsize=8)
    if slanted:
        ax.tick_params(axis="x", labelrotation=45)
        for t in ax.get_xticklabels():
            t.set_ha("right")
            t.set_rotation_mode("anchor")
    ax.tick_params(length=0)
    if n <= 30:  # cell borders; with more classes they would be all one sees
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="#e4e7eb", lw=0.6)
        ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(title, fontsize=10)


def _confusion_plot(report: dict) -> str | None:
    """The held-out confusion matrices of the teacher fp32 ONNX and of the student artifact, side by side."""
    teacher, student, _ = per_class_artifacts(report)
    panels = [(a, _confusion(a)) for a in (teacher, student) if a is not None]
    if not panels:
        return None
    n = len(panels[-1][1])
    labels = _class_labels(report, n)
    fig, axes = _figure(2, 1, 4.6)
    shipped = _dict(report.get("headline")).get("artifact")
    for ax, (a, m) in zip(axes, panels):
        total = sum(map(sum, m))
        acc = sum(m[i][i] for i in range(len(m))) / max(total, 1)
        tag = " (headline)" if a is student and a.get("path") == shipped else ""
        _confusion_panel(ax, m, labels if len(m) == n else _class_labels(report, len(m)),
                         f"{_plain(_label(a))}{tag}: {acc * 100:.1f}% of {total:,}")
    for ax in axes[len(panels):]:
        ax.set_visible(False)  # keeps its slot, so a lone matrix is not blown up to the page width
    return _svg(fig, "fig3", "Held-out confusion matrices of the teacher and of the student artifact",
                tight=len(panels) == 2)


def _loss_terms(history: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for h in history for k, v in h.items() if "loss" in str(k) and _num(v) is not None)
    return sorted(keys, key=lambda k: (k != "loss", str(k)))  # the total first, then its parts


def _series(history: list[dict], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    pts = [(_num(h.get("epoch")), _num(h.get(key))) for h in history]
    pts = [(i + 1 if x is None else x, y) for i, (x, y) in enumerate(pts) if y is not None]
    return [x for x, _ in pts], [y * scale for _, y in pts]


def _training_plot(report: dict) -> str | None:
    trained = [(_text(s.get("name")), h) for s in _records(report.get("stages")) if (h := _records(s.get("history")))]
    if not trained:
        return None
    from matplotlib.ticker import MaxNLocator

    terms = list(dict.fromkeys(t for _, h in trained for t in _loss_terms(h)))
    term_colour = {t: "#1f2933" if t == "loss" else PALETTE[i % len(PALETTE)] for i, t in enumerate(terms)}
    panels = len(trained) + 1  # one per training stage, then accuracy for all of them
    ncols = min(panels, 3)
    fig, axes = _figure(ncols, math.ceil(panels / ncols), 2.8)
    for ax, (name, hist) in zip(axes, trained):
        ax.set_title(f"{_plain(name)}: training loss", fontsize=10)
        for term in _loss_terms(hist):
            ax.plot(*_series(hist, term), marker="o", ms=3, lw=1.8 if term == "loss" else 1.2,
                    color=term_colour[term], label=_plain(term))
    acc_ax = axes[len(trained)]
    acc_ax.set_title("held-out accuracy per epoch", fontsize=10)
    acc_ax.set_ylabel("accuracy (%)")
    for i, (name, hist) in enumerate(trained):
        if (xy := _series(hist, "test_accuracy", 100))[0]:
            acc_ax.plot(*xy, marker="o", ms=3, color=PALETTE[i % len(PALETTE)], label=_plain(name))
    for ax in axes[:panels]:
        if not ax.lines:
            _empty(ax, "nothing recorded")
            continue
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        lo, hi = ax.dataLim.intervalx
        if hi - lo < 3:  # one or two epochs: a readable axis instead of 0.95 .. 1.05
            ax.set_xlim(lo - 0.5, hi + 0.5)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return _svg(fig, "fig2", "Training loss curves and held-out accuracy per epoch")


def _style() -> Any:
    import matplotlib

    style = {"svg.hashsalt": "edgedistill-report", "svg.fonttype": "none", "font.size": 9,
             "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#9aa5b1"}
    return matplotlib.rc_context(style)  # leaves the caller's matplotlib settings alone


def _per_class_html(report: dict) -> str | None:
    """The per-class table and the confusion matrices, or None for a report recorded without them."""
    table = per_class_table(report)
    if table is None:
        return None
    with _style():
        svg = _confusion_plot(report)
    figure = (f"<figure>{svg}<figcaption>Held-out confusion matrices: rows are the true class, columns the "
              "predicted one; the diagonal counts correct answers, red cells are mistakes.</figcaption></figure>"
              if svg else "")
    return f'<h2>{PER_CLASS}</h2>\n{_html_table(table)}\n{figure}'


def _plots(report: dict) -> list[tuple[str, str | None, str]]:
    """(caption, svg or None, what is missing). The salt makes SVG ids, so the whole page, deterministic."""
    with _style():
        return [("Held-out accuracy of each exported artifact against its p50 latency and its file size.",
                 _artifact_plot(report), "No artifact has a measured accuracy."),
                ("Loss terms per training stage, and held-out accuracy after each epoch.",
                 _training_plot(report), "No training history was recorded.")]


# ---------------------------------------------------------------- "use it in your app" snippets

class _IO(NamedTuple):
    name: str  # the ONNX input name
    shape: list[int]  # symbolic dims such as "batch" become 1
    image: str  # e.g. " (8x8 grayscale)", for the Core ML image input
    norm: str  # how to normalize the input, or ""


def _io(usage: dict) -> _IO:
    first = (_records(usage.get("inputs")) or [{}])[0]
    dims = first.get("shape") if isinstance(first.get("shape"), list) else []
    gray = " grayscale" if len(dims) == 4 and dims[1] == 1 else ""
    mean, std = usage.get("mean"), usage.get("std")
    norm = f"normalized as (x - mean) / std, mean {mean}, std {std}" if mean is not None and std is not None else ""
    return _IO(str(first.get("name") or "input"), [int(d) if _num(d) is not None else 1 for d in dims] or [1],
               f" ({dims[-2]}x{dims[-1]}{gray})" if len(dims) >= 3 else "", norm)


def _pick(artifacts: list[dict], kind: str) -> dict | None:
    found = [a for a in artifacts if a.get("kind") == kind]
    students = [a for a in found if a.get("role") == "student"]
    return next((a for a in students if a.get("for_target", True)), students[0] if students else
                found[0] if found else None)


def _swift(path: PurePosixPath, usage: dict, io_: _IO) -> str:
    outs = usage.get("coreml_outputs") if isinstance(usage.get("coreml_outputs"), list) else []
    label, probs = (outs + ["classLabel", "classLabel_probs"][len(outs):])[:2]
    return f"""import CoreML

// Add {path.name} to your Xcode target; Xcode compiles it to {path.stem}.mlmodelc.
let url = Bundle.main.url(forResource: "{path.stem}", withExtension: "mlmodelc")!
let config = MLModelConfiguration()
config.computeUnits = .all
let model = try MLModel(contentsOf: url, configuration: config)

{_swift_input(usage, io_)}
let output = try model.prediction(from: input)
if let label = output.featureValue(for: "{label}")?.stringValue,
   let probs = output.featureValue(for: "{probs}")?.dictionaryValue {{
    print(label, probs[label] ?? 0)
}}"""


def _swift_input(usage: dict, io_: _IO) -> str:
    name = usage.get("coreml_input") or "image"
    if usage.get("sequence_length"):
        n = int(usage["sequence_length"])
        return f"""// tokenIds: [Int32] from the model's tokenizer (saved with the hf-onnx directory), padded to {n} with {usage.get("pad_id")}.
let ids = try MLMultiArray(shape: [1, {n}], dataType: .int32)
for (i, id) in tokenIds.enumerated() {{ ids[i] = NSNumber(value: id) }}
let input = try MLDictionaryFeatureProvider(dictionary: ["{name}": MLFeatureValue(multiArray: ids)])"""
    return f"""// pixelBuffer: a CVPixelBuffer{io_.image} holding the image to classify.
let input = try MLDictionaryFeatureProvider(
    dictionary: ["{name}": MLFeatureValue(pixelBuffer: pixelBuffer)])"""


def _kotlin(path: PurePosixPath, usage: dict, io_: _IO) -> str:
    labels = usage.get("labels") if isinstance(usage.get("labels"), list) else []
    quoted = ['"' + str(x).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"' for x in labels]
    labels_line = (f"val labels = listOf({', '.join(quoted)})" if 0 < len(labels) <= 20
                   else 'val labels: List<String> = TODO("load the class names")')
    return f"""import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.{"LongBuffer" if usage.get("sequence_length") else "FloatBuffer"}

val env = OrtEnvironment.getEnvironment()
// Put {path.name} in app/src/main/assets; `context` is your Activity.
val modelBytes = context.assets.open("{path.name}").readBytes()
val session = env.createSession(modelBytes, OrtSession.SessionOptions())
{labels_line}

val shape = longArrayOf({", ".join(map(str, io_.shape))})
{_kotlin_input(usage, io_)}
OnnxTensor.createTensor(env, buffer, shape).use {{ tensor ->
    session.run(mapOf("{io_.name}" to tensor)).use {{ result ->
        @Suppress("UNCHECKED_CAST")
        val scores = (result[0].value as Array<FloatArray>)[0]
        println(labels[scores.indices.maxBy {{ scores[it] }}])
    }}
}}"""


def _kotlin_input(usage: dict, io_: _IO) -> str:
    size = " * ".join(map(str, io_.shape))
    if usage.get("sequence_length"):
        return (f"val buffer = LongBuffer.allocate({size})\n// buffer.put(...) the token ids from the model's "
                f"tokenizer, padded with {usage.get('pad_id')}; then buffer.rewind().")
    return (f"val buffer = FloatBuffer.allocate({size})\n// buffer.put(...) the image, "
            f"{io_.norm or 'as the model expects'}; then buffer.rewind().")


def _usage_html(report: dict) -> str:
    usage, artifacts = _dict(report.get("usage")), _records(report.get("artifacts"))
    io_ = _io(usage)
    described = "; ".join(f"{kind} <code>{html.escape(_text(t.get('name')))}</code> "
                          + html.escape(f"{t.get('dtype') or ''} [{', '.join(map(str, t.get('shape') or []))}]")
                          for kind in ("input", "output") for t in _records(usage.get(f"{kind}s")))
    parts = [f"<p class=muted>{described or 'Input and output names were not recorded'}"
             f"{'; ' + html.escape(io_.norm) if io_.norm else ''}.</p>"]
    from edgedistill.report.edge_snippets import SNIPPETS

    for title, kind, snippet in (("Swift (Core ML, iOS and macOS)", "coreml", lambda p, u, i, a: _swift(p, u, i)),
                                 ("Kotlin (ONNX Runtime, Android)", "ort", lambda p, u, i, a: _kotlin(p, u, i)),
                                 *SNIPPETS):
        if (art := _pick(artifacts, kind)) is not None:
            code = snippet(PurePosixPath(_text(art.get("path"))), usage, io_, art)
            parts.append(f"<h3>{title}: <code>{html.escape(PurePosixPath(_text(art.get('path'))).name)}</code>"
                         f"</h3>\n<pre><code>{html.escape(code)}</code></pre>")
    if len(parts) == 1:
        parts.append("<p>No Core ML, .ort, .pte or .tflite artifact was exported in this run.</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------- HTML

def _html_table(t: Table) -> str:
    cls = {"r": ' class="num"', "c": ' class="path"', "l": ""}
    head = "".join(f"<th{cls[a]}>{html.escape(h)}</th>" for h, a in zip(t.headers, t.align))
    body = "\n".join("<tr>" + "".join(f"<td{cls[a]}>{html.escape(v)}</td>" for v, a in zip(row, t.align)) + "</tr>"
                     for row in t.rows)
    table = (f'<div class="table-wrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'
             if t.rows else "<p class=muted>None recorded.</p>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in t.notes)
    return table + (f'\n<ul class="notes">{notes}</ul>' if notes else "")


def _speed_card(ratio: Any, where: str) -> tuple[str, str]:
    """("2.1x", "faster ..."), or for a ratio under 1 ("1.4x", "slower ..."): never "0.7x faster"."""
    r = _num(ratio)
    if r is None or r <= 0:
        return NA, ""
    return (f"{r:.1f}x", "faster" + where) if r >= 1 else (f"{1 / r:.1f}x", "slower" + where)


def _summary_html(report: dict) -> str:
    head = _dict(report.get("headline"))
    kind = f" ({head['latency_kind']})" if head.get("latency_kind") else ""
    cards = [(_fmt(head.get("size_ratio"), ".1f") + "x", "smaller than the teacher"),
             _speed_card(head.get("speedup"), kind),
             _speed_card(head.get("target_speedup"), f" on {_text(report.get('target'))} (estimated)"),
             (_fmt(head.get("accuracy_delta_points"), "+.1f"), "accuracy points vs teacher")]
    cards_html = "".join(f'<div class="card"><b>{html.escape(v)}</b>{html.escape(k)}</div>'
                         for v, k in cards if not v.startswith(NA))
    return (f'<section class="summary"><div class="headline">{html.escape(_text(report.get("summary")))}</div>'
            + (f'<div class="cards">{cards_html}</div>' if cards_html else "")
            + (f'<div class="muted small">headline artifact: <code>{html.escape(str(head["artifact"]))}</code></div>'
               if head.get("artifact") else "")
            + "".join(f'<p class="small">{html.escape(str(n))}</p>' for n in report.get("notes") or [])
            + "</section>")


def render_html(report: dict) -> str:
    """report.html: one file with inline CSS and SVG; no scripts, nothing fetched from the network."""
    target = html.escape(_text(report.get("target")))
    desc = _dict(report.get("target_profile")).get("description")
    body = [f"<header><h1>edgedistill report: {target}</h1>"
            + (f'<p class="muted">{html.escape(str(desc))}</p>' if desc else "") + "</header>"]
    status = _dict(report.get("status"))
    if status.get("state") not in (None, "finished"):
        body.append(f'<section class="status"><b>{html.escape(_text(status["state"]).upper())}</b> '
                    f'{html.escape(_text(status.get("message")))}</section>')
    body.append(_summary_html(report))
    body += [f"<h2>{title}</h2>\n{_html_table(table)}" for title, table in _tables(report)]
    if (per_class := _per_class_html(report)) is not None:
        body.append(per_class)
    body.append("<h2>Plots</h2>")
    for caption, svg, missing in _plots(report):
        body.append(f"<figure>{svg}<figcaption>{caption}</figcaption></figure>" if svg
                    else f"<p class=muted>{missing}</p>")
    body += ["<h2>Use it in your app</h2>", _usage_html(report),
             f"<h2>Environment</h2>\n{_html_table(environment_table(report))}",
             f"<footer>Generated by edgedistill from report.json, created {html.escape(_text(report.get('created')))}."
             "</footer>"]
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>edgedistill report: {target}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


_CSS = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #e4e7eb; --zebra: #f5f7fa; --accent: #3e6a8a; --box: #eef4f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 1.75rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 20px 0 8px; }
.muted { color: var(--muted); } .small { font-size: .85rem; margin-top: 10px; }
.summary { background: var(--box); border-left: 4px solid var(--accent); border-radius: 6px; padding: 16px 20px; }
.headline { font-size: 1.05rem; font-weight: 600; }
.status { background: #fdecea; border-left: 4px solid #b3261e; border-radius: 6px; padding: 12px 20px;
  margin-bottom: 16px; } .status b { color: #b3261e; margin-right: 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px;
  color: var(--muted); font-size: .85rem; }
.card b { display: block; color: var(--accent); font-size: 1.4rem; }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { white-space: nowrap; }
th, td { padding: 6px 10px; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
th { background: #e9eef2; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
.num { text-align: right; white-space: nowrap; }
.path, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.path { font-size: .82rem; word-break: break-all; }
.notes { color: var(--muted); font-size: .85rem; margin: 8px 0 0; }
pre { background: #1f2933; color: #e4e7eb; padding: 14px 16px; border-radius: 6px; overflow-x: auto;
  font-size: .8rem; line-height: 1.45; }
figure { margin: 16px 0 24px; } figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: 4px; }
footer { margin-top: 40px; color: var(--muted); font-size: .8rem; }
@media print {
  main { max-width: none; padding: 0; }
  pre { white-space: pre-wrap; background: #f5f7fa; color: #000; border: 1px solid var(--line); }
  figure, table, pre, .summary { break-inside: avoid; } h2, h3 { break-after: avoid; }
}
"""
