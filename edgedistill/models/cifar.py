"""The CIFAR model zoo of the knowledge-distillation literature.

These are the teacher/student networks of CRD (Tian, Krishnan & Isola, "Contrastive Representation
Distillation", ICLR 2020) and of most KD papers that reuse its code (github.com/HobbitLong/RepDistiller,
`models/resnet.py` and `models/wrn.py`); the layer layout, widths, shortcuts and initialisation follow
those files, so results are comparable with the published tables.

- ``resnet{8,14,20,32,44,56,110}``: the CIFAR ResNets of He, Zhang, Ren & Sun, "Deep Residual Learning for
  Image Recognition", CVPR 2016 (section 4.2). The number is the depth 6n+2: a 3x3 stem conv, three stages
  of n BasicBlocks (two 3x3 convs each) at widths 16/32/64 and resolutions 1, 1/2, 1/4, and the classifier.
  Where the width or resolution changes the shortcut is a 1x1 conv + BN (He et al.'s option B, as in
  RepDistiller; the paper's own CIFAR models used the parameter-free option A, hence counts a little above
  the paper's: resnet20 272,474 parameters here against 0.27M there).
- ``resnet8x4``, ``resnet32x4``: the same depths with every width x4 as RepDistiller defines them: a 32-channel
  stem, then stages of 64/128/256 channels (so the first stage opens with a 1x1 projection shortcut too).
- ``wrn_{d}_{k}``: the Wide Residual Networks of Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016:
  depth d = 6n+4 and widening factor k, i.e. a 16-channel stem conv and three stages of n pre-activation
  blocks (BN-ReLU-conv3x3 twice) at widths 16k/32k/64k, then BN-ReLU, pooling and the classifier. Dropout is
  0, as in the distillation papers. Being pre-activation, each conv's BN is the one that opens the next
  block (or the final BN), and the 1x1 projection shortcut is a bare conv, exactly as in the paper's code.

Differences from RepDistiller, all for the rest of this tool and none changing the function or parameter
count: a plain forward returning logits only (no ``is_feat``/``preact``), non-inplace ReLUs and no in-place
adds (forward hooks may keep the tensors they capture), global average pooling
(``nn.AdaptiveAvgPool2d(1)``, so any input size works, e.g. 28x28 MNIST) instead of a fixed 8x8 pool, an
``in_channels`` argument for the stem, and the WRN stages named ``layer1``..``layer3`` (RepDistiller's
``block{i}.layer``) so that every model here exposes its stages for feature distillation under the same
module paths. The ResNets keep RepDistiller's parameter names (``conv1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``...). The classifier is always an ``nn.Linear`` named ``fc``, and it is the
last conv/linear module in ``model.modules()`` order (the pruner leaves that one alone).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
from torch import nn

__all__ = ["CIFAR_MODELS", "ResNet", "WideResNet"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


# --- ResNet (He et al. 2016), RepDistiller models/resnet.py ---------------------------------------------------

class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the identity (or a 1x1 conv + BN projection), then ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        # Two ReLU modules, not one called twice: int8 quantizers group nodes by the module that made
        # them, and a shared module would fuse the two activations into one pattern.
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class ResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2; `num_filters` = [stem, stage1, stage2, stage3] widths."""

    def __init__(self, depth: int, num_filters: list[int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, ...), not {depth}")
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_channels, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- Wide ResNet (Zagoruyko & Komodakis 2016), RepDistiller models/wrn.py -------------------------------------

class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the identity or, where the width
    or resolution changes, a 1x1 conv of the activated input (as in the WRN code)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.drop(self.relu2(self.bn2(self.conv1(act))))
        out = self.conv2(out)
        # The WRN code takes the projection of the *activated* input, but the identity of the raw input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for 32x32 inputs (any size works): depth 6n+4."""

    def __init__(self, depth: int, num_classes: int = 10, widen_factor: int = 1, drop_rate: float = 0.0,
                 in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, 40, ...), not {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(widths[0], widths[1], n, 1, drop_rate)
        self.layer2 = self._make_layer(widths[1], widths[2], n, 2, drop_rate)
        self.layer3 = self._make_layer(widths[2], widths[3], n, 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]

        for m in self.modules():  # RepDistiller's WRN init: He-normal fan-out by hand, Linear weights default
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(in_planes: int, out_planes: int, blocks: int, stride: int, drop_rate: float) -> nn.Sequential:
        return nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# Names as in the distillation papers' code: resnet<depth> with widths 16/32/64, resnet<depth>x4 with
# 4x widths, wrn_<depth>_<widen factor>. Each builds as fn(num_classes, in_channels=3).
_RESNETS = {**{f"resnet{d}": (d, [16, 16, 32, 64]) for d in (8, 14, 20, 32, 44, 56, 110)},
            "resnet8x4": (8, [32, 64, 128, 256]), "resnet32x4": (32, [32, 64, 128, 256])}
_WRNS = {f"wrn_{d}_{k}": (d, k) for d in (16, 40) for k in (1, 2)}

CIFAR_MODELS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(ResNet, depth, widths) for name, (depth, widths) in _RESNETS.items()},
    **{name: partial(WideResNet, depth, widen_factor=k) for name, (depth, k) in _WRNS.items()},
}
