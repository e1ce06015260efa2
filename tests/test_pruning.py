import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.models import build_model, count_macs_params
from edgedistill.pruning import prune_to_macs, reshape_to, widths
from tests.helpers import SPEC, cnn


@pytest.mark.parametrize("round_to", [1, 8])
def test_prune_to_macs_removes_channels_within_budget(round_to):
    handle = cnn()
    base_macs, base_params = count_macs_params(handle.module, SPEC)
    pruned, ratio = prune_to_macs(handle.module, SPEC, 0.5, round_to=round_to)
    macs, params = count_macs_params(pruned, SPEC)
    assert macs <= 0.5 * base_macs and macs >= 0.3 * base_macs  # the budget, not far below it
    assert params < 0.6 * base_params
    w = widths(pruned)
    assert w[-1] == 10  # the classifier keeps every class
    assert all(c % round_to == 0 for c in w[:-1]) and w[:-1] != [16, 32, 64]
    assert widths(handle.module) == [16, 32, 64, 10]  # the input model is untouched
    out = pruned(torch.randn(3, *SPEC.input_shape))
    assert out.shape == (3, 10)


def test_pruned_model_reloads_from_plain_tensors(tmp_path):
    pruned, _ = prune_to_macs(cnn().module, SPEC, 0.4, round_to=4)
    pruned.eval()
    torch.save(pruned.state_dict(), tmp_path / "p.pt")
    fresh = build_model("cnn", [16, 32, 64], SPEC.input_shape, SPEC.num_classes).eval()
    reshape_to(fresh, torch.load(tmp_path / "p.pt", weights_only=True))
    x = torch.randn(5, *SPEC.input_shape)
    assert widths(fresh) == widths(pruned)
    assert torch.equal(fresh(x), pruned(x))


def test_mlp_neurons_and_ignore():
    mlp = build_model("mlp", [128, 64], SPEC.input_shape, SPEC.num_classes)
    pruned, _ = prune_to_macs(mlp, SPEC, 0.75, round_to=8, ignore=["features.1"])
    w = widths(pruned)
    assert w[0] == 128 and w[1] < 64 and w[-1] == 10  # features.1 (first hidden layer) was left alone
    with pytest.raises(UserError, match="macs_ratio: 0.4 cannot be reached"):  # the ignored layer alone is 47%
        prune_to_macs(mlp, SPEC, 0.4, round_to=8, ignore=["features.1"])
    with pytest.raises(UserError, match="stages.prune.ignore: no module named 'nope'"):
        prune_to_macs(mlp, SPEC, 0.5, ignore=["nope"])
