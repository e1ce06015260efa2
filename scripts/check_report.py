#!/usr/bin/env python3
"""Check that a run's report.html is self-contained and renders cleanly in a real browser.

    python scripts/check_report.py RUN_DIR [--screenshot out.png] [--chromium PATH] [--timeout 60]

RUN_DIR is the --out of `edgedistill compress` (the directory holding report.html and report.json).
Only the standard library is needed; Pillow, when importable, trims the screenshot to the page's height.

What it checks (each failure is printed as one "FAIL ..." line):
  1. static: report.html references nothing remote: no http(s):// or protocol-relative URL in a src, href,
     srcset, action, url(...) or @import, and no <script> (src or inline: the report has no scripts),
     <link>, <iframe>, <object> or <embed>.
  2. network: the page is loaded in headless Chromium with a Chromium net log (--log-net-log) and every
     host name mapped to "not found" (--host-resolver-rules), so nothing leaves the machine even if the
     page tries. Any non-file request that the page made (its network isolation key is file://) fails
     the check. Chromium's own background traffic (update checks, which it attempts despite
     --disable-background-networking) is recognised by its missing initiator and ignored.
  3. console: Chromium's stderr (--enable-logging=stderr --v=0) must have no CONSOLE line and no
     "Uncaught": the report has no scripts, so any console message at all (Chromium logs every level as
     INFO) means something is wrong. Other stderr noise (D-Bus, GPU) is ignored.
  4. DOM (--dump-dom): the parsed page has the report's sections (Stages, Artifacts, Parity, Plots, Use
     it in your app, Environment, and Per-class accuracy when report.json has confusion matrices), as many
     <svg> elements as the file has, an <svg> inside the per-class section, and the report's summary line.
  5. --screenshot PATH: a full-page PNG, 1280 px wide: taken at --window-size=1280,4000 (taller if the
     page is longer, up to 16000 px) and, with Pillow, trimmed to the page.

Chromium runs with --headless --no-sandbox --disable-gpu --disable-background-networking
--disable-component-update --disable-sync --no-first-run and a fresh --user-data-dir in a temporary
directory that is removed afterwards.

Exit status: 0 all checks passed; 1 a check failed; 2 usage error, or Chromium is not installed (the
message says how to install it: apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
BASE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
              "--host-resolver-rules=MAP * ~NOTFOUND"]
SECTIONS = ["Stages", "Artifacts", "Parity", "Plots", "Use it in your app", "Environment"]
PER_CLASS = "Per-class accuracy"
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "chrome-error:")

# ---------------------------------------------------------------- 1. static check

REMOTE = r"""(?:https?:)?//"""
STATIC_RULES = [
    (re.compile(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*""" + REMOTE, re.I),
     "an attribute loads a remote URL"),
    (re.compile(r"""url\(\s*["']?\s*""" + REMOTE, re.I), "a CSS url() points to a remote URL"),
    (re.compile(r"""@import\b""", re.I), "a CSS @import"),
    (re.compile(r"""<script\b""", re.I), "a <script> (the report has none; a src would load it remotely)"),
    (re.compile(r"""<link\b""", re.I), "a <link> element"),
    (re.compile(r"""<(?:iframe|object|embed)\b""", re.I), "an embedded document"),
]


def static_problems(page: str) -> list[str]:
    out = []
    for rule, what in STATIC_RULES:
        for m in rule.finditer(page):
            line = page.count("\n", 0, m.start()) + 1
            out.append(f"static: {what} at line {line}: {page[m.start():m.start() + 80]!r}")
    return out


# ---------------------------------------------------------------- 2. network requests from the net log

def _load_net_log(path: Path) -> dict:
    text = path.read_text(errors="replace") if path.exists() else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # A net log cut short (Chromium killed) lacks its closing brackets: keep the complete events.
        cut = text.rstrip().rstrip(",")
        for tail in ("]}", "}]}"):
            try:
                return json.loads(cut + tail)
            except json.JSONDecodeError:
                pass
        return {}


def page_requests(net_log: Path) -> list[str] | None:
    """Non-local URLs that the page asked for; None when the net log could not be read."""
    log = _load_net_log(net_log)
    if not log.get("constants"):
        return None
    start_job = log["constants"].get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:
            continue
        from_page = "file://" in str(params.get("network_isolation_key", "")) or \
            params.get("initiator") not in (None, "not an origin")
        if from_page and not str(params["url"]).startswith(LOCAL_SCHEMES):
            urls.append(str(params["url"]))
    return sorted(set(urls))


# ---------------------------------------------------------------- 3. console

def console_problems(stderr: str) -> list[str]:
    return [f"console: {line.strip()}" for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line]


# ---------------------------------------------------------------- 4. DOM

class _Dom(html.parser.HTMLParser):
    """h2 titles, the number of <svg> elements, per h2 section, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.svgs_in: dict[str, int] = {}
        self.svgs = 0
        self.text: list[str] = []
        self._in_h2 = False
        self._h2 = ""

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in_h2, self._h2 = True, ""
        elif tag == "svg":
            self.svgs += 1
            key = self.sections[-1] if self.sections else ""
            self.svgs_in[key] = self.svgs_in.get(key, 0) + 1

    def handle_endtag(self, tag):
        if tag == "h2" and self._in_h2:
            self._in_h2 = False
            self.sections.append(" ".join(self._h2.split()))

    def handle_data(self, data):
        if self._in_h2:
            self._h2 += data
        self.text.append(data)


def dom_problems(dom: str, page: str, report: dict | None) -> list[str]:
    if "<body" not in dom.lower():
        return ["dom: Chromium returned no document (see its stderr above)"]
    parsed = _Dom()
    parsed.feed(dom)
    out = []
    want = SECTIONS + ([PER_CLASS] if report and any(
        isinstance(a, dict) and a.get("confusion") for a in report.get("artifacts") or []) else [])
    out += [f"dom: section {s!r} is missing" for s in want if s not in parsed.sections]
    expected = len(re.findall(r"<svg\b", page))
    if parsed.svgs != expected:
        out.append(f"dom: {parsed.svgs} <svg> elements rendered, the file has {expected}")
    if expected == 0 and report and any(isinstance(a, dict) and a.get("accuracy") is not None
                                        for a in report.get("artifacts") or []):
        out.append("dom: no plot at all although artifacts have accuracies")
    if PER_CLASS in want and not parsed.svgs_in.get(PER_CLASS):
        out.append("dom: the per-class section has no confusion-matrix <svg>")
    summary = (report or {}).get("summary")
    if isinstance(summary, str) and summary and " ".join(summary.split()) not in " ".join("".join(parsed.text).split()):
        out.append("dom: the report's summary line is not on the page")
    return out


# ---------------------------------------------------------------- Chromium

def chromium(binary: str, url: str, profile: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    """One Chromium run in its own process group, so that a hung browser is ended with all its helpers."""
    cmd = [binary, *BASE_FLAGS, f"--user-data-dir={profile}", *extra, url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this run created, nothing else
        out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, 124, out, err + f"\n(timed out after {timeout:g} s)")


def screenshot(binary: str, url: str, tmp: Path, out: Path, timeout: float) -> list[str]:
    """A full-page PNG: grow the window until the page's bottom is blank, then trim (with Pillow)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        Image = None  # noqa: N806
    height = 4000
    while True:
        shot = tmp / f"shot-{height}.png"
        res = chromium(binary, url, tmp / f"profile-shot-{height}",
                       [f"--screenshot={shot}", f"--window-size=1280,{height}"], timeout)
        if res.returncode != 0 or not shot.exists():
            return [f"screenshot: Chromium exited {res.returncode} without writing {shot.name}"]
        if Image is None:
            shutil.copyfile(shot, out)
            print(f"screenshot: {out} (1280x{height}; install Pillow to trim it to the page)")
            return []
        img = Image.open(shot).convert("RGB")
        bg = Image.new("RGB", img.size, img.getpixel((img.width - 1, img.height - 1)))
        box = ImageChops.difference(img, bg).getbbox()
        bottom = box[3] if box else img.height
        if bottom >= img.height - 8 and height < 16000:  # content runs to the edge: the page is longer
            height = min(16000, height * 2)
            continue
        img.crop((0, 0, img.width, min(img.height, bottom + 48))).save(out)
        print(f"screenshot: {out} (1280x{min(img.height, bottom + 48)})")
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the --out of a compress run (holds report.html)")
    ap.add_argument("--screenshot", type=Path, metavar="PNG", help="also write a full-page screenshot here")
    ap.add_argument("--chromium", default=CHROMIUM, help=f"the browser binary (default {CHROMIUM})")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per Chromium run (default 60)")
    args = ap.parse_args(argv)

    page_path = args.run_dir / "report.html"
    if not page_path.is_file():
        print(f"{page_path}: no such file; pass the --out of a compress run", file=sys.stderr)
        return 2
    binary = shutil.which(args.chromium)
    if binary is None:
        print(f"{args.chromium}: Chromium is not installed. Install it with:\n"
              "    apt-get install -y chromium\n"
              "(or pass --chromium PATH to another Chromium or Chrome binary)", file=sys.stderr)
        return 2
    page = page_path.read_text(encoding="utf-8")
    report_path = args.run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    url = page_path.resolve().as_uri()

    problems = static_problems(page)
    with tempfile.TemporaryDirectory(prefix="check_report-") as tmp_name:
        tmp = Path(tmp_name)
        net_log = tmp / "net-log.json"
        res = chromium(binary, url, tmp / "profile",
                       ["--enable-logging=stderr", "--v=0", f"--log-net-log={net_log}", "--dump-dom"], args.timeout)
        if res.returncode != 0:
            problems.append(f"chromium: exited {res.returncode}; last stderr lines:\n    "
                            + "\n    ".join(res.stderr.strip().splitlines()[-5:]))
        requests = page_requests(net_log)
        if requests is None:
            problems.append("network: Chromium wrote no readable net log, so requests could not be checked")
        else:
            problems += [f"network: the page requested {u}" for u in requests]
        problems += console_problems(res.stderr)
        problems += dom_problems(res.stdout, page, report)
        if args.screenshot is not None:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            problems += screenshot(binary, url, tmp, args.screenshot, args.timeout)

    for p in problems:
        print(f"FAIL {p}")
    if problems:
        print(f"{page_path}: {len(problems)} problem(s)")
        return 1
    print(f"{page_path}: OK (self-contained, no network requests, no console messages, "
          f"{len(re.findall(r'<svg', page))} plots, all sections present)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
