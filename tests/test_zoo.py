"""The CIFAR model zoo (edgedistill.models.cifar): sizes against the papers, shapes, hooks, pruning, ONNX."""

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.models.cifar import CIFAR_MODELS
from edgedistill.models.handle import ModelSpec, count_macs_params
from edgedistill.pruning import prune_to_macs, widths

SPEC32 = ModelSpec(task="image-classification", input_shape=(3, 32, 32), num_classes=10,
                   labels=tuple(str(i) for i in range(10)), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

# name -> ("resnet", depth, [stem, stage1, stage2, stage3]) or ("wrn", depth, widen factor)
ARCHS = {
    "resnet8": ("resnet", 8, [16, 16, 32, 64]),
    "resnet14": ("resnet", 14, [16, 16, 32, 64]),
    "resnet20": ("resnet", 20, [16, 16, 32, 64]),
    "resnet32": ("resnet", 32, [16, 16, 32, 64]),
    "resnet44": ("resnet", 44, [16, 16, 32, 64]),
    "resnet56": ("resnet", 56, [16, 16, 32, 64]),
    "resnet110": ("resnet", 110, [16, 16, 32, 64]),
    "resnet8x4": ("resnet", 8, [32, 64, 128, 256]),
    "resnet32x4": ("resnet", 32, [32, 64, 128, 256]),
    "wrn_16_1": ("wrn", 16, 1),
    "wrn_16_2": ("wrn", 16, 2),
    "wrn_40_1": ("wrn", 40, 1),
    "wrn_40_2": ("wrn", 40, 2),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is as fast, and far faster when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def expected_params(name: str, num_classes: int, in_channels: int = 3) -> int:
    """Parameter count worked out from the RepDistiller definitions, independently of the module code."""
    kind, depth, cfg = ARCHS[name]

    def conv(i, o, k):  # all convs are bias-free
        return i * o * k * k

    def bn(c):
        return 2 * c

    if kind == "resnet":
        n = (depth - 2) // 6
        total, inplanes = conv(in_channels, cfg[0], 3) + bn(cfg[0]), cfg[0]
        for stage, planes in enumerate(cfg[1:]):
            for b in range(n):
                i = inplanes if b == 0 else planes
                total += conv(i, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
                if b == 0 and (stage > 0 or inplanes != planes):  # 1x1 conv + BN projection shortcut
                    total += conv(inplanes, planes, 1) + bn(planes)
            inplanes = planes
    else:  # pre-activation WRN blocks: BN-ReLU-conv twice; a bare 1x1 conv shortcut where widths differ
        n, k = (depth - 4) // 6, cfg
        w = [16, 16 * k, 32 * k, 64 * k]
        total = conv(in_channels, w[0], 3)
        for s in range(3):
            for b in range(n):
                i = w[s] if b == 0 else w[s + 1]
                total += bn(i) + conv(i, w[s + 1], 3) + bn(w[s + 1]) + conv(w[s + 1], w[s + 1], 3)
                if i != w[s + 1]:
                    total += conv(i, w[s + 1], 1)
        total += bn(w[3])
        inplanes = w[3]
    return total + inplanes * num_classes + num_classes  # fc


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_names():
    assert list(CIFAR_MODELS) == list(ARCHS)


@pytest.mark.parametrize("name", list(ARCHS))
def test_param_counts_match_the_definitions(name):
    for classes in (10, 100):
        assert n_params(CIFAR_MODELS[name](classes)) == expected_params(name, classes)
    assert n_params(CIFAR_MODELS[name](10, in_channels=1)) == expected_params(name, 10, in_channels=1)


# Published, rounded sizes: (millions, number of classes the figure is for, source).
# - He et al. 2016, Table 6 (CIFAR-10). Their CIFAR ResNets use the parameter-free option-A shortcut; RepDistiller
#   (and this zoo) uses 1x1 conv + BN projections where the shape changes (+2,752 parameters for the 16/32/64
#   nets), so e.g. resnet110 is 1.731M here against the paper's "1.7M" (1.8% above), resnet20 272,474 vs 0.27M.
# - Zagoruyko & Komodakis 2016, Table 1: WRN-40-1 0.6M, WRN-40-2 2.2M (wrn_40_2 is 2.244M at 10 classes).
# - The KD literature quotes RepDistiller's models with their CIFAR-100 classifier (CRD-style teacher/student
#   tables): resnet8x4 1.23M, resnet32x4 7.43M, wrn_16_2 0.70M, wrn_40_2 2.26M, resnet56 0.86M, resnet110 1.74M.
#   These are RepDistiller's own counts; they are what the "~1.2M / ~7.4M / ~0.70M / ~2.2M" figures round.
LITERATURE = [
    ("resnet20", 0.27, 10, "He et al. 2016"),
    ("resnet32", 0.46, 10, "He et al. 2016"),
    ("resnet44", 0.66, 10, "He et al. 2016"),
    ("resnet56", 0.85, 10, "He et al. 2016"),
    ("resnet110", 1.7, 10, "He et al. 2016"),
    ("wrn_40_1", 0.57, 100, "KD papers (WRN paper rounds it to 0.6M)"),
    ("wrn_40_2", 2.2, 10, "Zagoruyko & Komodakis 2016"),
    ("resnet8x4", 1.2, 10, "CRD/RepDistiller"),
    ("resnet32x4", 7.4, 10, "CRD/RepDistiller"),
    ("wrn_16_2", 0.70, 10, "CRD/RepDistiller"),
    ("resnet20", 0.28, 100, "KD papers, CIFAR-100"),
    ("resnet32", 0.47, 100, "KD papers, CIFAR-100"),
    ("resnet56", 0.86, 100, "KD papers, CIFAR-100"),
    ("resnet110", 1.74, 100, "KD papers, CIFAR-100"),
    ("resnet8x4", 1.23, 100, "KD papers, CIFAR-100"),
    ("resnet32x4", 7.43, 100, "KD papers, CIFAR-100"),
    ("wrn_16_2", 0.70, 100, "KD papers, CIFAR-100"),
    ("wrn_40_2", 2.26, 100, "KD papers, CIFAR-100"),
]


@pytest.mark.parametrize("name,millions,classes,source", LITERATURE)
def test_param_counts_match_the_literature(name, millions, classes, source):
    count = expected_params(name, classes)
    assert abs(count / 1e6 - millions) <= 0.02 * millions, f"{name}: {count} vs {millions}M ({source})"


@pytest.mark.parametrize("name", list(ARCHS))
def test_shapes_structure_and_stage_hooks(name):
    fn = CIFAR_MODELS[name]
    model = fn(10).eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers[-1][0] == "fc" and isinstance(layers[-1][1], nn.Linear)  # the pruner never touches it
    assert all(isinstance(m, nn.Conv2d) for _, m in layers[:-1])
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())
    modules = dict(model.named_modules())
    captured = {}
    for stage in ("layer1", "layer2", "layer3"):
        modules[stage].register_forward_hook(lambda _m, _i, out, stage=stage: captured.__setitem__(stage, out))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)
        assert {k: tuple(v.shape[2:]) for k, v in captured.items()} == {
            "layer1": (32, 32), "layer2": (16, 16), "layer3": (8, 8)}
        assert captured["layer3"].shape[1] == model.fc.in_features
        mono = fn(10, in_channels=1).eval()  # global pooling: any input size works
        assert mono(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_hooked_features_are_not_modified_in_place():
    model = CIFAR_MODELS["resnet20"](10).eval()
    kept = {}
    for name in ("bn1", "layer1.0", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.downsample", "relu"):
        dict(model.named_modules())[name].register_forward_hook(
            lambda _m, _i, out, name=name: kept.__setitem__(name, (out, out.clone())))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for name, (live, copy) in kept.items():
        assert torch.equal(live, copy), name


def test_resnet20_prunes_to_half_the_macs():
    torch.manual_seed(0)
    model = CIFAR_MODELS["resnet20"](10).eval()
    base_macs, base_params = count_macs_params(model, SPEC32)
    pruned, _ratio = prune_to_macs(model, SPEC32, 0.5, round_to=8)
    macs, params = count_macs_params(pruned, SPEC32)
    assert 0.3 * base_macs <= macs <= 0.5 * base_macs and params < base_params
    assert pruned.fc.out_features == 10
    assert widths(model)[0] == 16 and n_params(model) == base_params  # the input model is untouched
    w = widths(pruned)
    assert all(c % 8 == 0 for c in w[:-1]) and w[:-1] != widths(model)[:-1]
    # Residual coupling: each block's output width equals its shortcut's, stage to stage through to fc.
    width = pruned.bn1.num_features
    for stage in (pruned.layer1, pruned.layer2, pruned.layer3):
        for block in stage:
            assert block.conv1.in_channels == width
            width_out = block.bn2.num_features
            if block.downsample is None:
                assert width_out == width
            else:
                assert block.downsample[0].in_channels == width and block.downsample[1].num_features == width_out
            width = width_out
    assert pruned.fc.in_features == width
    pruned.eval()
    with torch.no_grad():
        assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_onnx_matches_torch(tmp_path):
    from edgedistill.exporters.onnx import export_onnx
    from edgedistill.runtimes import onnxruntime as ortr

    torch.manual_seed(0)
    model = CIFAR_MODELS["resnet20"](10).eval()
    with torch.no_grad():  # non-trivial BN statistics, so the folded graph is really checked
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    path = tmp_path / "resnet20.onnx"
    export_onnx(model, SPEC32, path, 18)
    x = torch.randn(3, 3, 32, 32)  # a batch size other than the export example's: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    got = ortr.logits(ortr.session(path), x.numpy())
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
