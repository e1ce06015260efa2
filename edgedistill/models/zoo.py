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
    """Fully connected layers with ReLU on the flattened input."""

    def __init__(self, in_features: int, num_classes: int, channels: list[int]):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in channels:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            prev = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def build_model(arch: str, channels: list[int], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if arch == "cnn":
        return CNN(input_shape[0], num_classes, list(channels))
    if arch == "mlp":
        n = 1
        for d in input_shape:
            n *= d
        return MLP(n, num_classes, list(channels))
    raise ValueError(f"unknown arch {arch!r}")
