import os
import subprocess
import sys

import pytest
import torch

from edgedistill import io
from edgedistill.errors import UserError


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_directory_replace(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    for content in ("one", "two"):
        with io.atomic_path(pkg) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(content)
    assert (pkg / "f").read_text() == "two" and io.dir_size(pkg) == 3


def test_lock_refuses_a_second_holder_and_frees_on_death(tmp_path):
    with io.RunLock(tmp_path):
        with pytest.raises(UserError, match=f"--out {tmp_path}: a live run \\(pid {os.getpid()}\\) holds"):
            with io.RunLock(tmp_path):
                pass
    # a run killed with SIGKILL leaves the lock file behind; the next run must not be blocked by it
    code = f"import os; from edgedistill import io; io.RunLock({str(tmp_path)!r}).__enter__(); os.kill(os.getpid(), 9)"
    subprocess.run([sys.executable, "-c", code])
    assert (tmp_path / ".lock").exists()
    with io.RunLock(tmp_path):
        pass


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"w": torch.ones(1), "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused to load.*could run code"):
        io.load_torch(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        io.load_torch(tmp_path / "junk.pt")
    io.save_torch(tmp_path / "ok.pt", {"w": torch.arange(3)})
    assert io.load_torch(tmp_path / "ok.pt")["w"].tolist() == [0, 1, 2]
