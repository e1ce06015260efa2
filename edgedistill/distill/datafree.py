"""Data-free distillation: a generator synthesizes the inputs the student learns on, when the training data
cannot be used (privacy, licence, size). It combines the DAFL / DFAD family's terms:

- adversarial (Fang et al. 2019, DFAD): the generator seeks inputs where student and teacher disagree (L1 of
  their logits), the student then learns to agree there;
- BatchNorm statistics (Yin et al. 2020, DeepInversion): the batch mean/variance that generated images produce
  at every teacher BatchNorm layer are pulled towards the running statistics the teacher saw in training;
- one-hot and information entropy (Chen et al. 2019, DAFL): each image should be confidently one class for the
  teacher, and the batch should cover all classes evenly.

One round: a generator step, then `student_steps` student steps on fresh samples (generator frozen)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.distill.losses import kd_loss
from edgedistill.epochs import run_epochs


class Generator(nn.Module):
    """DAFL's generator: z -> (width, H/4, W/4) -> two 2x upsampling conv blocks -> C channels. The last
    BatchNorm (no affine) gives images with zero mean and unit variance per channel, like normalized inputs."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], width: int = 128):
        super().__init__()
        channels, height, width_px = shape
        self.z_dim, self.shape = z_dim, tuple(shape)
        self.init = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.fc = nn.Linear(z_dim, width * self.init[0] * self.init[1])
        self.width = width
        self.net = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(self.fc(z).view(len(z), self.width, *self.init))
        if x.shape[-2:] != self.shape[1:]:  # sides that are not multiples of 4 (MNIST's 28 is; digits' 8 is)
            x = F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False)
        return x


class BNStatistics:
    """Forward hooks on the teacher's BatchNorm layers: the distance between the statistics of the current batch
    at each layer's input and the running statistics the layer holds, summed over layers (DeepInversion's R_feature)."""

    def __init__(self, teacher: nn.Module):
        self.terms: list[torch.Tensor] = []
        self.enabled = True  # off while the teacher only labels the student's batches
        self._hooks = [m.register_forward_hook(self._hook) for m in teacher.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]

    def _hook(self, module, inputs, output) -> None:
        if not self.enabled:
            return
        x = inputs[0].float()
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.terms.append(torch.linalg.vector_norm(mean - module.running_mean, 2)
                          + torch.linalg.vector_norm(var - module.running_var, 2))

    def __len__(self) -> int:
        return len(self._hooks)

    def take(self, device) -> torch.Tensor:
        total = torch.stack(self.terms).sum() if self.terms else torch.zeros((), device=device)
        self.terms = []
        return total

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def student_loss(kind: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """l1: DFAD's mean absolute logit difference (its gradient does not vanish where the student already agrees
    on the top class); kl: Hinton's soft targets at `temperature`."""
    if kind == "l1":
        return F.l1_loss(student_logits.float(), teacher_logits.float())
    return kd_loss(student_logits, teacher_logits, temperature)


def _entropy_term(teacher_logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information entropy loss: the negative entropy of the batch's mean prediction (minimal when the
    classes are used evenly), offset by log K so that a perfectly balanced batch scores 0."""
    p = torch.softmax(teacher_logits.float(), -1).mean(0)
    return (p * torch.log(p + 1e-8)).sum() + math.log(p.numel())


def train(teacher: nn.Module, student: nn.Module, generator: nn.Module, cfg, *, checkpoint: Path,
          device: torch.device, evaluate: Callable[[nn.Module], float], progress=None,
          on_epoch: Callable[[dict], None] | None = None, stage: str = "distill",
          say: Callable[[str], None] | None = None) -> list[dict]:
    """Train `student` (and `generator`) in place for cfg.epochs epochs of cfg.data_free.iterations rounds;
    per epoch the held-out accuracy (`evaluate`) and a checkpoint of both models, both optimizers, schedules, RNG
    and history, written atomically: a killed run resumes after its last finished epoch."""
    from edgedistill.training import _lr_factor, _optimizer

    df = cfg.data_free
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    bn = BNStatistics(teacher)
    opt_s = _optimizer([p for p in student.parameters() if p.requires_grad], cfg)
    opt_g = torch.optim.Adam(generator.parameters(), lr=df.generator_lr, betas=(0.5, 0.999))
    factor = _lr_factor(cfg)
    sched_s = torch.optim.lr_scheduler.LambdaLR(opt_s, factor)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, factor)
    parts = {"model": student, "generator": generator, "optimizer": opt_s, "generator_optimizer": opt_g,
             "scheduler": sched_s, "generator_scheduler": sched_g}  # checkpoint key -> what it holds
    bf16 = device.type == "cuda"

    def train_epoch(epoch: int, step: Callable[[], None]) -> dict[str, float]:
        sums: dict[str, torch.Tensor] = {}
        for _ in range(df.iterations):
            losses = _round(teacher, student, generator, bn, opt_s, opt_g, cfg, device, bf16)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v
            step()
        return {k: float(v) / df.iterations for k, v in sums.items()}

    def restore(saved: dict) -> None:
        for key, obj in parts.items():
            obj.load_state_dict(saved[key])

    def schedule() -> float:
        sched_s.step()
        sched_g.step()
        return opt_s.param_groups[0]["lr"]

    try:
        history = run_epochs(
            train_epoch, stage=stage, checkpoint=checkpoint, epochs=cfg.epochs, steps=df.iterations,
            samples=df.iterations * df.batch_size * df.student_steps,
            sync=torch.cuda.synchronize if bf16 else lambda: None,
            state=lambda: {key: obj.state_dict() for key, obj in parts.items()}, restore=restore,
            schedule=schedule, evaluate=lambda: evaluate(student),
            non_finite=lambda loss, epoch: (
                f"stage {stage}: the data-free loss became {loss} in epoch {epoch}; "
                f"lower stages.{stage}.lr or stages.{stage}.data_free.generator_lr and rerun"),
            progress=progress, on_epoch=on_epoch, say=say)
    finally:
        bn.close()
    student.eval()
    return history


def _trainable(optimizer, flag: bool) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.requires_grad_(flag)


def _round(teacher, student, generator, bn, opt_s, opt_g, cfg, device, bf16) -> dict[str, torch.Tensor]:
    df = cfg.data_free

    def z() -> torch.Tensor:
        return torch.randn(df.batch_size, generator.z_dim, device=device)

    # Generator step: the student is the fixed adversary (eval mode: its BatchNorm statistics are not updated
    # by images it is not learning from; no weight gradients: only the generator learns here).
    generator.train()
    student.eval()
    _trainable(opt_s, False)
    bn.enabled = True
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        x = generator(z())
        t = teacher(x)
        bn_term = bn.take(device)
        s = student(x)
    adversarial = -F.l1_loss(s.float(), t.float())
    one_hot = F.cross_entropy(t.float(), t.argmax(-1))
    entropy = _entropy_term(t)
    loss_g = (df.adversarial_weight * adversarial + df.bn_weight * bn_term + df.oh_weight * one_hot
              + df.entropy_weight * entropy)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    # Student steps on fresh samples from the updated generator.
    student.train()
    _trainable(opt_s, True)
    bn.enabled = False
    kd = torch.zeros((), device=device)
    for _ in range(df.student_steps):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            x = generator(z())
            t = teacher(x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            s = student(x)
        loss_s = student_loss(df.student_loss, s, t, cfg.temperature)
        opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        if cfg.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip_norm)
        opt_s.step()
        kd = kd + loss_s.detach() / df.student_steps
    return {"loss": kd, "kd_loss": kd, "generator_loss": loss_g.detach(), "bn_loss": bn_term.detach(),
            "adversarial_loss": -adversarial.detach(), "entropy_loss": entropy.detach()}


@torch.no_grad()
def synthesize(generator: nn.Module, teacher: nn.Module, n: int, batch_size: int, seed: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` generated images and the teacher's labels for them: the transfer set that pruning recovery,
    quantization-aware training and int8 calibration use in place of training data. Sampled in training
    mode (batch statistics, as the generator was trained), from a seeded generator: the same set every time."""
    generator.train()
    teacher.eval()
    rng = torch.Generator(device="cpu").manual_seed(seed)
    xs, ys = [], []
    state = {k: v.clone() for k, v in generator.state_dict().items()}  # sampling must not move running stats
    for size in torch.arange(n).tensor_split(math.ceil(n / batch_size)):  # even chunks: none of a single image
        z = torch.randn(len(size), generator.z_dim, generator=rng).to(device)
        x = generator(z).float()
        xs.append(x)
        ys.append(teacher(x).argmax(-1))
    generator.load_state_dict(state)
    generator.eval()
    return torch.cat(xs), torch.cat(ys)
