"""Data-free distillation: the generator's terms, an exact resume, and a run that never sees training data."""

import json
import math

import pytest
import torch
from torch import nn

from edgedistill import pipeline
from edgedistill.distill import datafree
from edgedistill.errors import UserError
from edgedistill.models import build_model
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 30, 30)])
def test_generator_makes_normalized_images_of_the_input_shape(shape):
    torch.manual_seed(0)
    x = datafree.Generator(16, shape, width=8)(torch.randn(32, 16))
    assert x.shape == (32, *shape)
    if shape[1] % 4 == 0:  # the last BatchNorm standardizes each channel over the batch
        assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(shape[0]), atol=1e-4)
        assert torch.allclose(x.var((0, 2, 3), unbiased=False), torch.ones(shape[0]), atol=1e-3)


def test_bn_term_is_zero_when_a_batch_has_the_running_statistics():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = torch.randn(16, 1, 6, 6)
    with torch.no_grad():
        h = net[0](x)
        net[1].running_mean.copy_(h.mean((0, 2, 3)))
        net[1].running_var.copy_(h.var((0, 2, 3), unbiased=False))
    stats = datafree.BNStatistics(net)
    assert len(stats) == 1
    net(x)
    with torch.no_grad():
        assert float(stats.take("cpu")) == pytest.approx(0.0, abs=1e-5)
        net(x * 3 + 1)
    assert float(stats.take("cpu")) > 1.0
    stats.close()
    net(x)
    assert stats.terms == []  # hooks removed


def test_entropy_term_is_zero_for_balanced_classes_and_log_k_for_one():
    balanced = torch.eye(4).repeat(2, 1) * 50
    one_class = torch.zeros(8, 4)
    one_class[:, 2] = 50
    assert float(datafree._entropy_term(balanced)) == pytest.approx(0.0, abs=1e-4)
    assert float(datafree._entropy_term(one_class)) == pytest.approx(math.log(4), abs=1e-4)


def _cfg(epochs):
    recipe = load_recipe("digits", [f"stages.distill.epochs={epochs}", "stages.distill.data_free.iterations=3",
                                    "stages.distill.data_free.batch_size=16", "stages.distill.data_free.student_steps=2",
                                    "stages.distill.data_free.width=16", "stages.distill.data_free.z_dim=8"])
    return recipe.stages.distill


class Killed(Exception):
    pass


def _kill_after(epochs):
    def on_epoch(record):
        if record["epoch"] == epochs:
            raise Killed  # after the epoch's checkpoint was written
    return on_epoch


def _train(tmp_path, epochs, checkpoint, on_epoch=None):
    torch.manual_seed(0)
    teacher, student = build_model("cnn", [8, 16], (1, 8, 8), 10), build_model("cnn", [4, 8], (1, 8, 8), 10)
    generator = datafree.Generator(8, (1, 8, 8), width=16)
    torch.manual_seed(1)
    history = datafree.train(teacher, student, generator, _cfg(epochs), checkpoint=checkpoint, device=torch.device("cpu"),
                             evaluate=lambda m: 0.5, on_epoch=on_epoch)
    return student, generator, history


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight, gen_a, history = _train(tmp_path, 3, tmp_path / "a.pt")
    with pytest.raises(Killed):
        _train(tmp_path, 3, tmp_path / "b.pt", on_epoch=_kill_after(2))
    resumed, gen_b, resumed_history = _train(tmp_path, 3, tmp_path / "b.pt")
    assert [h["epoch"] for h in resumed_history] == [1, 2, 3]
    for a, b in zip([*straight.state_dict().values(), *gen_a.state_dict().values()],
                    [*resumed.state_dict().values(), *gen_b.state_dict().values()]):
        assert torch.equal(a, b)
    assert {"loss", "kd_loss", "bn_loss", "adversarial_loss", "entropy_loss", "generator_loss"} <= set(history[0])


def test_synthesize_is_seeded_labelled_by_the_teacher_and_leaves_the_generator_as_it_was():
    torch.manual_seed(0)
    teacher, generator = build_model("cnn", [8, 16], (1, 8, 8), 10).eval(), datafree.Generator(8, (1, 8, 8), width=16)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    x, y = datafree.synthesize(generator, teacher, 33, 16, seed=3, device=torch.device("cpu"))
    x2, _ = datafree.synthesize(generator, teacher, 33, 16, seed=3, device=torch.device("cpu"))
    assert x.shape == (33, 1, 8, 8) and torch.equal(x, x2)
    assert torch.equal(y, teacher(x).argmax(-1))
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("override, message", [
    ([], "needs a trained image teacher: set teacher.checkpoint"),
    (["teacher.checkpoint=T", "data.normalization=null"], "set data.normalization"),
    (["teacher.checkpoint=T", "stages.distill.generations=2"], "remove stages.distill.generations"),
    (["teacher.checkpoint=T", "stages.distill.enabled=false"], "needs stages.distill.enabled"),
])
def test_data_free_recipe_errors_say_what_to_set(tmp_path, override, message):
    torch.save({}, tmp_path / "t.pt")
    over = [o.replace("=T", f"={tmp_path / 't.pt'}") for o in override]
    with pytest.raises(UserError, match=message):
        load_recipe("digits", ["stages.distill.data_free.enabled=true", *over])


@pytest.mark.slow
def test_data_free_run_learns_without_the_training_split_and_later_stages_use_the_transfer_set(tmp_path):
    target = load_target("x86-avx2")
    off = [f"stages.{s}.enabled=false" for s in ("distill", "prune", "qat", "export", "bench", "report")]
    pipeline.run(load_recipe("digits", ["stages.teacher.epochs=6", *off]), target, tmp_path / "t", quiet=True)
    teacher = tmp_path / "t" / "01-teacher" / "model.pt"
    over = [f"teacher.checkpoint={teacher}", "stages.distill.data_free.enabled=true", "stages.distill.epochs=4",
            "stages.distill.data_free.iterations=10", "stages.distill.data_free.batch_size=64",
            "stages.distill.data_free.transfer_set=300", "stages.prune.epochs=1", "stages.qat.epochs=1",
            "stages.export.formats=[onnx]", "stages.bench.repeats=5"]
    recipe = load_recipe("digits", over)
    from edgedistill.stages import distill

    seen, real = [], distill._data_free

    def spy(ctx, *args):
        seen.append(len(ctx.data.x_train))  # what the student could have learned from
        return real(ctx, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill, "_data_free", spy)
        state = pipeline.run(recipe, target, tmp_path / "free", quiet=True)
    assert seen == [0]
    record = state.records["distill"]
    assert record["accuracy"] > 0.5  # ten classes: chance is 0.1; the teacher gets ~0.95
    share = record["transfer_set"]["class_share"]
    assert record["transfer_set"]["images"] == 300 and len(share) == 10 and sum(share) == pytest.approx(1, abs=1e-3)
    assert max(share) < 0.5  # the entropy term spreads the generated images over the classes
    assert state.records["prune"]["history"]  # recovery trained on the transfer set
    assert (tmp_path / "free" / "03-distill" / "transfer_set.pt").exists()
    report = json.loads((tmp_path / "free" / "report.json").read_text())
    assert any(n.startswith("data-free:") for n in report["notes"])
    # A rerun restores the transfer set for the stages after distill: changing qat reruns qat on it.
    again = pipeline.run(load_recipe("digits", [*over, "stages.qat.lr=0.001"]), target, tmp_path / "free", quiet=True)
    assert again.records["qat"]["history"] and again.records["distill"]["accuracy"] == record["accuracy"]
