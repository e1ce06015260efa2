import math

import torch
import torch.nn.functional as F

from edgedistill.distill import DistillationTask, kd_loss


def test_kd_loss_matches_definition():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    T = 3.0
    p_t = F.softmax(t / T, -1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, T), expected, atol=1e-6)


def test_kd_loss_zero_when_equal_and_positive_otherwise():
    x = torch.randn(4, 10)
    assert float(kd_loss(x, x, 4.0)) < 1e-6
    assert float(kd_loss(x, -x, 4.0)) > 0.1


def test_t_squared_keeps_gradient_scale():
    # Hinton et al.: soft-target gradients scale as 1/T^2, the T^2 factor undoes it (for large T the
    # gradient tends to (s - t) / N, independent of T).
    torch.manual_seed(1)
    t = torch.randn(16, 10) * 0.1
    grads = []
    for T in (8.0, 32.0):
        s = (torch.randn(16, 10, generator=torch.Generator().manual_seed(2)) * 0.1).requires_grad_()
        kd_loss(s, t, T).backward()
        grads.append(s.grad.norm().item())
    assert math.isclose(grads[0], grads[1], rel_tol=0.1)


def test_distillation_task_weights_terms():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    out = DistillationTask(teacher, temperature=2.0, kd_weight=0.7, ce_weight=0.3)(student, x, y)
    assert set(out) >= {"loss", "task_loss", "kd_loss", "output"}
    assert torch.allclose(out["loss"], 0.3 * out["task_loss"] + 0.7 * out["kd_loss"])
    assert torch.allclose(out["kd_loss"], kd_loss(student(x), teacher(x), 2.0))
    out["loss"].backward()
    assert student.weight.grad is not None and teacher.weight.grad is None


def test_kd_loss_with_sparse_teacher_logits_renormalizes_over_topk():
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    values, idx = t.topk(2, dim=1)
    sparse = torch.full_like(t, float("-inf")).scatter(1, idx, values)
    loss = kd_loss(s, sparse, 2.0)
    p_t = torch.softmax(values / 2.0, -1)  # the teacher's top-2, renormalized
    log_p_s = torch.log_softmax(s / 2.0, -1).gather(1, idx)
    expected = (p_t * (p_t.log() - log_p_s)).sum(-1).mean() * 4.0
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()
