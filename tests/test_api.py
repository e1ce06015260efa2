"""edgedistill.compress(): your own nn.Module teacher and student through the whole pipeline from Python."""

import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.data import load_data
from edgedistill.errors import UserError
from edgedistill.recipe import DataConfig


class TwoConvs(nn.Module):
    """Two conv-BN-ReLU blocks (the second halving the resolution), global average pooling, a linear head."""

    def __init__(self, widths: tuple[int, int], channels: int = 1, classes: int = 10, stride: int = 1):
        super().__init__()
        a, b = widths
        self.body = nn.Sequential(nn.Conv2d(channels, a, 3, stride=stride, padding=1), nn.BatchNorm2d(a), nn.ReLU(),
                                  nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU())
        self.head = nn.Linear(b, classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class Teacher(TwoConvs):
    def __init__(self):
        super().__init__((32, 64))


class Student(TwoConvs):
    def __init__(self):
        super().__init__((16, 32))


def _trained_teacher() -> nn.Module:
    """Trained on the digits split and normalization the recipe's run uses (seed 0)."""
    torch.manual_seed(0)
    data, model = load_data(DataConfig(), seed=0), Teacher()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(15):
        for i in range(0, len(data.y_train), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[i:i + 64]), data.y_train[i:i + 64]).backward()
            opt.step()
    model.eval()
    accuracy = float((model(data.x_test).argmax(-1) == data.y_test).float().mean())
    assert accuracy > 0.9
    return model.train()


@pytest.mark.slow
def test_compress_takes_your_modules_and_resumes(tmp_path):
    teacher, student = _trained_teacher(), Student()
    settings = {"stages.distill.epochs": 8, "stages.prune.epochs": 1, "stages.prune.steps": 1,
                "stages.prune.measure_latency": False, "stages.qat.epochs": 1, "stages.export.formats": ["onnx", "ort"],
                "stages.bench.repeats": 5}
    out = tmp_path / "run"
    report = edgedistill.compress(teacher=teacher, student=student, target="x86-avx2", out=out, overrides=settings)
    assert report == json.loads((out / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["teacher"]["source"] == "your module (Teacher)" and "history" not in stages["teacher"]
    assert stages["teacher"]["accuracy"] > 0.9 and stages["distill"]["accuracy"] > 0.8
    assert stages["prune"]["macs_kept"] < 1  # channels really removed from the module handed in
    kinds = {(a["role"], a["kind"]) for a in report["artifacts"]}
    assert {("teacher", "onnx-fp32"), ("student", "onnx-fp32"), ("student", "onnx-int8"), ("student", "ort")} <= kinds
    assert all((out / a["path"]).exists() and not a["path"].startswith("/") for a in report["artifacts"])
    assert next(iter(student.state_dict().values())).shape[0] == 16  # the caller's module is left as it was

    events = out / "events.jsonl"
    seen = len(events.read_text().splitlines())
    again = edgedistill.compress(teacher=teacher, student=student, target="x86-avx2", out=out, overrides=settings)
    new = [json.loads(line) for line in events.read_text().splitlines()[seen:]]
    assert {e["stage"] for e in new if e["event"] == "stage_skipped"} >= {"teacher", "student", "distill", "prune", "qat",
                                                                          "export"}
    assert not [e for e in new if e["event"] == "stage_start"]
    assert again["artifacts"] == report["artifacts"]


def test_compress_says_what_is_wrong_with_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="teacher: expected a torch.nn.Module"):
        from edgedistill.families.module import register

        register("teacher", "resnet")
    with pytest.raises(UserError, match=r"stages.distill.epochs"):
        edgedistill.compress(student=Student(), out=tmp_path / "x", overrides={"stages.distill.epochs": "many"})
    with pytest.raises(UserError, match=r"student: arch 'module:student-0000' is a module handed to edgedistill.compress"):
        from edgedistill.recipe import load_recipe

        load_recipe("digits", ["student.arch=module:student-0000", "student.channels=null"])
    assert not (tmp_path / "x").exists()  # nothing written for a bad call
