"""Feature and attention terms, cached teacher logits, re-normalized teacher inputs, GPU-style augmentation."""

from types import SimpleNamespace

import torch

from edgedistill.data.augment import augment
from edgedistill.distill import DistillationTask
from edgedistill.distill.features import attention_loss, attention_map
from edgedistill.distill.task import renormalizer
from edgedistill.recipe import Augment, DistillStage, FeatureMatch
from edgedistill.training import fit
from tests.helpers import batch, cnn

FEATURES = [FeatureMatch(student="features.5", teacher="features.5", kind="fitnet", weight=1.0),
            FeatureMatch(student="features.8", teacher="features.8", kind="attention", weight=100.0)]


def test_feature_terms_train_projections_that_never_reach_the_student(tmp_path):
    teacher, student = cnn((32, 64, 128), seed=1).module.eval(), cnn(seed=2).module
    x, y = batch(96)
    task = DistillationTask(teacher, 4.0, 0.9, 0.1, student=student, features=FEATURES, example_input=x[:2])
    out = task(student, x[:8], y[:8])
    assert {"loss", "task_loss", "kd_loss", "fitnet_features_5", "attention_features_8"} <= set(out)
    proj = task.projections["fitnet_features_5"][0]
    assert (proj.in_channels, proj.out_channels) == (32, 64)  # student width -> teacher width, 1x1
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    before = proj.weight.detach().clone()
    history = fit(student, task, data, DistillStage(epochs=6, lr=0.05), stage="distill",
                  checkpoint=tmp_path / "c.pt", batch_size=32, seed=0)
    assert not torch.equal(before, proj.weight)  # the projection trained with the student
    assert history[-1]["fitnet_features_5"] < history[0]["fitnet_features_5"]
    assert not any("projection" in k for k in student.state_dict())
    assert "task" in torch.load(tmp_path / "c.pt", weights_only=True)  # resumable with the projections
    task.close()
    assert not student.features[5]._forward_hooks and not teacher.features[5]._forward_hooks


def test_attention_map_is_normalized_and_loss_zero_on_itself():
    f = torch.randn(4, 16, 8, 8)
    assert torch.allclose(attention_map(f).norm(dim=1), torch.ones(4))
    assert float(attention_loss(f, f)) < 1e-10
    assert float(attention_loss(f, torch.randn(4, 32, 4, 4))) > 0  # widths and sizes may differ


def test_cached_teacher_logits_equal_live_ones():
    teacher, student = cnn((32, 64, 128), seed=1).module.eval(), cnn(seed=2).module
    x, y = batch(64)
    live = DistillationTask(teacher, 4.0, 1.0, 0.0)
    cached = DistillationTask(teacher, 4.0, 1.0, 0.0)
    cached.cache_teacher_logits(x, batch_size=16)
    idx = torch.tensor([3, 10, 40])
    student.eval()
    assert torch.allclose(live(student, x[idx], y[idx])["loss"], cached(student, x[idx], y[idx], idx)["loss"], atol=1e-6)


def test_teacher_inputs_renormalized():
    pixels = torch.rand(2, 3, 4, 4)
    s_mean, s_std, t_mean, t_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    view = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    student_in = (pixels - view(s_mean)) / view(s_std)
    expected = (pixels - view(t_mean)) / view(t_std)
    assert torch.allclose(renormalizer(s_mean, s_std, t_mean, t_std)(student_in), expected, atol=1e-5)


def test_augmentation_is_seeded_and_shape_preserving():
    x = torch.randn(16, 3, 8, 8)
    cfg = Augment(crop_padding=2, flip=True, cutout=3)
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    c = augment(x, cfg, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert (a == 0).any()  # cutout (and padding) fill with zero, the mean in normalized units
    flip_only = augment(x, Augment(flip=True), torch.Generator().manual_seed(0))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flip_only, x))
    crop_only = augment(x, Augment(crop_padding=1), torch.Generator().manual_seed(3))
    for out, src in zip(crop_only, x):  # each output is a shifted window of the zero-padded input
        padded = torch.nn.functional.pad(src, (1, 1, 1, 1))
        assert any(torch.equal(out, padded[:, dy:dy + 8, dx:dx + 8]) for dy in range(3) for dx in range(3))


def test_edge_fill_keeps_a_plain_background_plain():
    background = torch.full((8, 1, 28, 28), -0.42)  # MNIST's black in normalized units
    warps = dict(crop_padding=2, rotate=30, scale=0.2, elastic_alpha=34)
    edge = augment(background, Augment(**warps, fill="edge"), torch.Generator().manual_seed(0))
    assert torch.allclose(edge, background, atol=1e-5)
    mean = augment(background, Augment(**warps), torch.Generator().manual_seed(0))
    assert (mean.abs() < 1e-6).any()  # the default fills with the mean, zero: a grey frame on digits


def test_rotation_stays_within_its_limit_and_varies():
    ys, xs = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    bar = ((ys.abs() < 2) & (xs.abs() < 12)).float().expand(64, 1, 32, 32)  # horizontal, centred
    out = augment(bar, Augment(rotate=20), torch.Generator().manual_seed(0))[:, 0]
    m = out.sum((1, 2))
    cxx, cyy, cxy = ((out * xs * xs).sum((1, 2)) / m, (out * ys * ys).sum((1, 2)) / m,
                     (out * xs * ys).sum((1, 2)) / m)
    angle = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy))  # the bar's orientation, from its moments
    assert angle.abs().max() <= 20.5 and angle.max() - angle.min() > 20


def test_elastic_distortion_moves_pixels_by_a_smooth_field_of_the_given_strength():
    ramp = torch.arange(28.0).expand(16, 1, 28, 28).contiguous()  # value = column, so out - in = shift in x
    still = augment(ramp, Augment(rotate=1e-9, fill="edge"), torch.Generator().manual_seed(0))
    assert torch.allclose(still, ramp, atol=1e-3)
    shift = augment(ramp, Augment(elastic_alpha=34, fill="edge"), torch.Generator().manual_seed(0)) - ramp
    inner = shift[:, 0, 6:-6, 6:-6]  # away from the clamped border
    assert 0.2 < inner.abs().mean() < 5  # Simard's alpha 34, sigma 4: about a pixel
    assert (inner[:, :, 1:] - inner[:, :, :-1]).abs().max() < 1.0  # neighbours move together: smooth, not noise
