"""Small models and data the tests build themselves (nothing downloaded)."""

import torch

from edgedistill.models import ModelHandle, ModelSpec, build_model

SPEC = ModelSpec(task="image-classification", input_shape=(1, 8, 8), num_classes=10,
                 labels=tuple(str(i) for i in range(10)), mean=(0.3,), std=(0.4,))


def cnn(channels=(16, 32, 64), seed=0):
    torch.manual_seed(seed)
    return ModelHandle(build_model("cnn", list(channels), SPEC.input_shape, SPEC.num_classes), SPEC, "cnn", list(channels))


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SPEC.input_shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def digits(n_test=200):
    """scikit-learn's 8x8 digits normalized as SPEC says: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16 - SPEC.mean[0]) / SPEC.std[0]
    y = torch.tensor(d.target)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def runs_right_here(int8_path) -> bool:
    """True when this CPU's fused int8 kernels compute the file exactly: exact (VNNI/ARM) arithmetic, or no weight
    pair that the non-VNNI kernels saturate. Otherwise tests judge the file by reference execution."""
    import onnx

    from edgedistill import int8_arithmetic as ia

    return ia.host_arithmetic() == ia.EXACT or not ia.saturation_findings(onnx.load(str(int8_path)))
