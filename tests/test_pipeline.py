"""The pipeline in-process: loading a user's teacher, fingerprints deciding what reruns."""

import json

import pytest
import torch

from edgedistill import pipeline
from edgedistill.errors import UserError
from edgedistill.models import build_model
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

ONLY_MODELS = [f"stages.{s}.enabled=false" for s in ("distill", "prune", "qat", "export", "bench", "report")]


def test_teacher_from_a_checkpoint_is_loaded_not_trained(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("cnn", [32, 64, 128], (1, 8, 8), 10)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    recipe = load_recipe("digits", [f"teacher.checkpoint={tmp_path / 'teacher.pt'}", *ONLY_MODELS])
    state = pipeline.run(recipe, load_target("x86-avx2"), tmp_path / "out", quiet=True)
    assert state.records["teacher"]["source"] == str(tmp_path / "teacher.pt")
    assert "history" not in state.records["teacher"]
    for a, b in zip(state.teacher.module.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)


def test_mismatched_teacher_checkpoint_names_the_tensor(tmp_path):
    torch.save(build_model("cnn", [16, 64, 128], (1, 8, 8), 10).state_dict(), tmp_path / "t.pt")
    recipe = load_recipe("digits", [f"teacher.checkpoint={tmp_path / 't.pt'}", *ONLY_MODELS])
    with pytest.raises(UserError, match=r"teacher\.checkpoint: .* features\.0\.weight is \(16, 1, 3, 3\) in the checkpoint"):
        pipeline.run(recipe, load_target("x86-avx2"), tmp_path / "out", quiet=True)
    torch.save(build_model("cnn", [32, 64, 128], (1, 8, 8), 3).state_dict(), tmp_path / "k.pt")
    recipe = load_recipe("digits", [f"teacher.checkpoint={tmp_path / 'k.pt'}", *ONLY_MODELS])
    with pytest.raises(UserError, match=r"classifier\.weight is \(3, 128\) in the checkpoint but \(10, 128\)"):
        pipeline.run(recipe, load_target("x86-avx2"), tmp_path / "out2", quiet=True)


@pytest.mark.slow
def test_changed_stage_config_reruns_that_stage_and_later_ones(tmp_path):
    base = ["stages.teacher.epochs=1", "stages.distill.epochs=1", *ONLY_MODELS[1:]]
    target = load_target("x86-avx2")
    pipeline.run(load_recipe("digits", base), target, tmp_path, quiet=True)
    first = {d.name: (d / "done.json").read_text() for d in tmp_path.glob("0*") if (d / "done.json").exists()}
    assert sorted(first) == ["01-teacher", "02-student", "03-distill"]
    pipeline.run(load_recipe("digits", [*base, "stages.distill.temperature=2.0"]), target, tmp_path, quiet=True)
    second = {d.name: (d / "done.json").read_text() for d in tmp_path.glob("0*")}
    assert second["01-teacher"] == first["01-teacher"] and second["02-student"] == first["02-student"]
    assert second["03-distill"] != first["03-distill"]
    assert json.loads((tmp_path / "03-distill" / "result.json").read_text())["temperature"] == 2.0


@pytest.mark.slow
def test_born_again_generations_and_topk_cache(tmp_path):
    over = ["stages.teacher.epochs=3", "stages.distill.epochs=2", "stages.distill.generations=3",
            "stages.distill.ensemble_generations=true", "stages.distill.cache_topk=3", "student.channels=[32, 64, 128]",
            *ONLY_MODELS[1:]]
    state = pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path, quiet=True)
    record = state.records["distill"]
    assert [g["generation"] for g in record["generations"]] == [1, 2, 3]
    assert 0 <= record["ensemble_accuracy"] <= 1 and record["accuracy"] == record["generations"][-1]["accuracy"]
    assert record["teacher_logits_cached"] and record["topk"] == 3 and 0.3 < record["topk_mass"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "03-distill").glob("generation*.pt")) == [
        "generation0.pt", "generation1.pt", "generation2.pt"]


@pytest.mark.slow
def test_student_from_teacher_copies_its_weights(tmp_path):
    over = ["stages.teacher.epochs=1", "student.from_teacher=true", "student.channels=[32, 64, 128]", *ONLY_MODELS]
    state = pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path, quiet=True)
    assert state.records["student"]["accuracy"] == state.records["teacher"]["accuracy"]
    for a, b in zip(state.student.module.state_dict().values(), state.teacher.module.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="student.from_teacher needs student.arch and channels equal"):
        load_recipe("digits", ["student.from_teacher=true"])


@pytest.mark.slow
def test_student_from_a_checkpoint_goes_straight_to_pruning(tmp_path):
    torch.manual_seed(0)
    student = build_model("cnn", [16, 32, 64], (1, 8, 8), 10)
    torch.save(student.state_dict(), tmp_path / "student.pt")
    over = ["stages.teacher.epochs=1", f"student.checkpoint={tmp_path / 'student.pt'}", "stages.distill.enabled=false",
            "stages.prune.enabled=true", "stages.prune.epochs=0", "stages.prune.measure_latency=false", *ONLY_MODELS[2:]]
    state = pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path / "out", quiet=True)
    assert "distill" not in state.records
    saved = torch.load(tmp_path / "out" / "02-student" / "model.pt", weights_only=True)
    for a, b in zip(saved.values(), student.state_dict().values()):
        assert torch.equal(a, b)  # the student stage started from the checkpoint, not from a random init
    assert state.records["prune"]["macs"] < state.records["prune"]["macs_before"]
    with pytest.raises(UserError, match="checkpoint applies to students built from an arch"):
        load_recipe("digits", [f"student.checkpoint={tmp_path / 'student.pt'}", "student.from_teacher=true",
                               "student.channels=[32, 64, 128]"])


@pytest.mark.slow
def test_same_recipe_and_seed_give_the_same_metrics_on_cpu(tmp_path):
    over = ["stages.teacher.epochs=2", "stages.distill.epochs=2", "device=cpu", *ONLY_MODELS[1:]]
    runs = [pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path / str(i), quiet=True)
            for i in range(2)]
    for stage in ("teacher", "distill"):
        a, b = (r.records[stage] for r in runs)
        assert a["accuracy"] == b["accuracy"]
        assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
