"""Built-in architectures, addressed by name from a recipe (a recipe never imports code)."""

from __future__ import annotations

from torch import nn


class CNN(nn.Module):
    """Conv3x3-BN-ReLU blocks, the first at full resolution and each later one halving it, then global
    average pooling and a linear classifier. `features` and `classifier` are the module names a recipe
    can refer to (the classifier is never pruned)."""

    def __init__(self, in_channels: int, num_classes: int, channels: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(channels):
            layers += [
                nn.Conv2d(prev, width, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MLP(nn.Module):
    """Fully connected layers with ReLU (and optional dropout) on the flattened input: Hinton et al.'s
    MNIST teacher is channels [1200, 1200] with dropout, the student [800, 800]."""

    def __init__(self, in_features: int, num_classes: int, channels: list[int], dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in channels:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


WIDTH_ARCHS = ("cnn", "mlp")  # sized by `channels` in the recipe


def _fixed_archs() -> dict:
    from edgedistill.models.cifar import CIFAR_MODELS

    return CIFAR_MODELS


def arch_names() -> list[str]:
    return [*WIDTH_ARCHS, *sorted(_fixed_archs())]


def check_arch(arch: str, channels: list[int] | None) -> None:
    """Raise ValueError (shown against the recipe field) unless zoo `arch` with `channels` can be built."""
    if arch in WIDTH_ARCHS:
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"arch '{arch}' needs channels: a non-empty list of positive widths")
    elif channels is not None:
        raise ValueError(f"arch '{arch}' has fixed widths; remove channels")


def build_model(arch: str, channels: list[int] | None, input_shape: tuple[int, ...], num_classes: int,
                dropout: float = 0.0) -> nn.Module:
    if arch == "cnn":
        return CNN(input_shape[0], num_classes, list(channels))
    if arch == "mlp":
        n = 1
        for d in input_shape:
            n *= d
        return MLP(n, num_classes, list(channels), dropout)
    return _fixed_archs()[arch](num_classes=num_classes, in_channels=input_shape[0])
