"""What the benchmark scripts share: a compress run in its own process (as a user runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def compress(recipe: str, target: str, out: Path, sets: list[str]) -> None:
    """`edgedistill compress --quiet` with `--set` for each of `sets`; raises if the run fails."""
    subprocess.run([sys.executable, "-m", "edgedistill", "compress", "--recipe", recipe, "--target", target,
                    "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)]], check=True)
