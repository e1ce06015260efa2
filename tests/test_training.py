from types import SimpleNamespace

import pytest
import torch

from edgedistill.distill import DistillationTask, SupervisedTask
from edgedistill.errors import RefusedError
from edgedistill.recipe import DistillStage
from edgedistill.training import accuracy, fit, predict
from tests.helpers import batch, cnn


def _data(n=96):
    x, y = batch(n)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])


@pytest.mark.slow
def test_distillation_moves_student_toward_teacher(tmp_path):
    data = _data()
    teacher = cnn((32, 64, 64), seed=1).module
    fit(teacher, SupervisedTask(), data, DistillStage(epochs=8, lr=0.05), stage="teacher",
        checkpoint=tmp_path / "t.pt", batch_size=32, seed=0)
    student = cnn(seed=2).module
    task = DistillationTask(teacher, temperature=4.0, kd_weight=1.0, ce_weight=0.0)
    history = fit(student, task, data, DistillStage(epochs=8, lr=0.05), stage="distill",
                  checkpoint=tmp_path / "s.pt", batch_size=32, seed=0)
    assert history[-1]["kd_loss"] < 0.5 * history[0]["kd_loss"]
    agree = (predict(student, data.x_test).argmax(-1) == predict(teacher, data.x_test).argmax(-1)).float().mean()
    assert agree > 0.55  # random labels: the student copies the teacher's decisions, not the data
    assert {"loss", "task_loss", "kd_loss", "test_accuracy", "samples_per_s"} <= set(history[0])


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    data, cfg = _data(), DistillStage(epochs=4, lr=0.05)
    straight = cnn(seed=3).module
    fit(straight, SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "a.pt", batch_size=32, seed=0)

    class Crash(Exception):
        pass

    def crash_after_two(record):
        if record["epoch"] == 2:
            raise Crash

    interrupted = cnn(seed=3).module
    with pytest.raises(Crash):
        fit(interrupted, SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "b.pt", batch_size=32,
            seed=0, on_epoch=crash_after_two)
    resumed = cnn(seed=99).module  # a fresh process would start from other weights: all must come from the file
    history = fit(resumed, SupervisedTask(), data, cfg, stage="s", checkpoint=tmp_path / "b.pt", batch_size=32, seed=0)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert torch.allclose(_weights(resumed), _weights(straight), atol=1e-6)


def test_non_finite_loss_stops_and_keeps_the_checkpoint(tmp_path):
    data = _data()
    model = cnn().module

    def exploding(m, x, y, idx=None):
        out = m(x)
        loss = out.mean() * float("nan") if exploding.calls > 3 else torch.nn.functional.cross_entropy(out, y)
        exploding.calls += 1
        return {"loss": loss, "output": out}

    exploding.calls = 0
    with pytest.raises(RefusedError, match=r"stage distill: loss became nan in epoch 2; .*stages\.distill\.lr"):
        fit(model, exploding, data, DistillStage(epochs=3), stage="distill", checkpoint=tmp_path / "c.pt",
            batch_size=32, seed=0)
    assert (tmp_path / "c.pt").exists()
    assert accuracy(torch.eye(3), torch.tensor([0, 1, 2])) == 1.0
