"""Plug-ins: a model family registered from outside the package runs the whole pipeline with no other change,
and the registries answer unknown names with what they know."""

import json

import pytest
import torch
from torch import nn

from edgedistill import pipeline
from edgedistill.families import FAMILIES, ModelFamily, family_of
from edgedistill.recipe import load_recipe
from edgedistill.registry import Registry
from edgedistill.targets import load_target
from edgedistill.tasks import TASKS, for_dataset


class Gated(nn.Module):
    """A model no zoo has: two conv branches multiplied, then a linear head (`toy:<width>`)."""

    def __init__(self, in_channels: int, num_classes: int, width: int):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))


class Toy(ModelFamily):
    name = "toy"

    def check(self, arch, cfg):
        if not arch.split(":", 1)[1].isdigit():
            raise ValueError(f"arch '{arch}': give toy:<width>")

    def build(self, cfg, spec, teacher=None):
        return Gated(spec.input_shape[0], spec.num_classes, int(cfg.arch.split(":")[1]))

    def rebuild(self, description, spec):
        return Gated(spec.input_shape[0], spec.num_classes, int(description["arch"].split(":")[1]))


@pytest.fixture
def toy_family(monkeypatch):
    family = Toy()
    monkeypatch.setitem(FAMILIES._entries, "toy", family)  # as @FAMILIES.register("toy") would, undone after
    return family


@pytest.mark.slow
def test_a_family_from_outside_runs_every_stage_and_resumes_from_its_files(toy_family, tmp_path):
    over = ["student.arch=toy:32", "student.channels=null", "stages.teacher.epochs=2", "stages.distill.epochs=2",
            "stages.prune.epochs=1", "stages.prune.steps=1", "stages.prune.measure_latency=false",
            "stages.qat.epochs=1", "stages.export.formats=[onnx]", "stages.bench.repeats=5"]
    recipe = load_recipe("digits", over)
    assert family_of(recipe.student.arch) is toy_family
    state = pipeline.run(recipe, load_target("x86-avx2"), tmp_path, quiet=True)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [s["name"] for s in report["stages"]][:4] == ["teacher", "student", "distill", "prune"]
    assert state.records["distill"]["accuracy"] > 0.5
    pruned = state.records["prune"]
    assert pruned["macs_kept"] < 1 and isinstance(state.student.module, Gated)
    assert state.student.module.a[0].out_channels < 32  # whole channels removed from the new model
    assert {(a["role"], a["kind"]) for a in report["artifacts"]} >= {("student", "onnx-fp32"), ("student", "onnx-int8")}
    assert json.loads((tmp_path / "04-prune" / "model.json").read_text())["family"] == "toy"

    # resumed: every stage restores from its own files, the pruned model rebuilt by the family alone
    again = pipeline.run(recipe, load_target("x86-avx2"), tmp_path, quiet=True)
    assert again.student.module.a[0].out_channels == state.student.module.a[0].out_channels
    for a, b in zip(again.student.module.state_dict().values(), state.student.module.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())


def test_a_family_check_is_the_recipe_fields_error(toy_family):
    from edgedistill.errors import UserError

    with pytest.raises(UserError, match=r"student: .*give toy:<width>"):
        load_recipe("digits", ["student.arch=toy:wide", "student.channels=null"])
    with pytest.raises(UserError, match=r"student: unknown family 'toyy'; did you mean 'toy'\?"):
        load_recipe("digits", ["student.arch=toyy:8", "student.channels=null"])


def test_registries_know_their_builtins():
    assert {"zoo", "hf", "hf-lm"} <= set(FAMILIES.names())
    assert set(TASKS.names()) == {"image-classification", "text-classification", "text-generation"}
    assert for_dataset("lm").name == "text-generation" and family_of("resnet20").name == "zoo"
    registry = Registry("widget")
    registry.register("a")(object())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object())
    with pytest.raises(ValueError, match=r"unknown widget 'b'; known: a"):
        registry.get("b")


def test_a_plug_in_that_fails_to_import_fails_every_lookup_not_just_the_first(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency: somelib')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("widget", builtins=("broken_plugin",))
    for _ in range(2):
        with pytest.raises(ImportError, match="somelib"):
            registry.get("a")
