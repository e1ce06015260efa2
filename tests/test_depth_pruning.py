import pytest
import torch

from edgedistill.depth_pruning import prune_blocks, removable_blocks, removed_blocks
from edgedistill.errors import UserError
from edgedistill.models import build_model, count_macs_params
from edgedistill.pruning import reshape_to, widths
from tests.helpers import SPEC, batch, cnn


def resnet14(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet14", None, SPEC.input_shape, SPEC.num_classes).eval()


def test_removable_blocks_are_the_identity_shortcut_blocks():
    # resnet14: two blocks per stage; the first of stages 2 and 3 downsamples (shape changes), so it stays
    assert list(removable_blocks(resnet14(), SPEC)) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
    assert removable_blocks(cnn().module, SPEC) == {}  # a plain CNN's widths all differ


def test_blocks_removed_within_budget_and_the_model_reloads(tmp_path):
    model = resnet14()
    base_macs, base_params = count_macs_params(model, SPEC)
    pruned = prune_blocks(model, SPEC, max_macs=0.75 * base_macs, calibration=batch(32))
    macs, params = count_macs_params(pruned, SPEC)
    assert macs <= 0.75 * base_macs and params < base_params
    assert 1 <= len(removed_blocks(pruned)) < 4 and removed_blocks(model) == []  # the input model is untouched
    # the remaining layers keep their widths and names: a fresh model takes the state_dict by name
    torch.save(pruned.state_dict(), tmp_path / "p.pt")
    fresh = build_model("resnet14", None, SPEC.input_shape, SPEC.num_classes).eval()
    reshape_to(fresh, torch.load(tmp_path / "p.pt", weights_only=True))
    x = torch.randn(4, *SPEC.input_shape)
    assert removed_blocks(fresh) == removed_blocks(pruned) and torch.equal(fresh(x), pruned(x))
    assert len(widths(pruned)) == len(widths(model)) - 2 * len(removed_blocks(pruned))  # two convs per block


def test_the_least_harmful_block_goes_first_and_ignore_keeps_it():
    model = resnet14()
    # layer2.1 with its last BN zeroed adds nothing to its (post-ReLU, non-negative) input: removing it changes
    # no prediction, so it is the one block removed when one is enough
    bn = model.get_submodule("layer2.1.bn2")
    bn.weight.data.zero_(), bn.bias.data.zero_()
    one_block = count_macs_params(model, SPEC)[0] - 1
    assert removed_blocks(prune_blocks(model, SPEC, max_macs=one_block, calibration=batch(32))) == ["layer2.1"]
    kept = prune_blocks(model, SPEC, max_macs=one_block, ignore=["layer2"], calibration=batch(32))
    assert removed_blocks(kept) and "layer2.1" not in removed_blocks(kept)


def test_unreachable_budget_and_models_without_blocks_are_refused():
    with pytest.raises(UserError, match="cannot be reached by removing blocks"):
        prune_blocks(resnet14(), SPEC, max_macs=1000, calibration=batch(8))
    with pytest.raises(UserError, match="structure: blocks found no removable block"):
        prune_blocks(cnn().module, SPEC, max_macs=1000, calibration=batch(8))
    with pytest.raises(UserError, match="stages.prune.ignore: no module named 'layer9'"):
        prune_blocks(resnet14(), SPEC, max_macs=1000, ignore=["layer9"], calibration=batch(8))


@pytest.mark.slow
def test_block_pruning_stage_exports_a_shallower_onnx_and_int8(tmp_path):
    import onnx

    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    over = ["student.arch=resnet14", "student.channels=null", "stages.teacher.epochs=2", "stages.distill.epochs=1", "stages.prune.epochs=1",
            "stages.prune.structure=blocks", "stages.prune.macs_ratio=0.6", "stages.prune.steps=2",
            "stages.qat.epochs=1", "stages.export.formats=[onnx]",
            *[f"stages.{s}.enabled=false" for s in ("bench", "report")]]
    def run():
        return pipeline.run(load_recipe("digits", over), load_target("x86-avx2"), tmp_path, quiet=True)

    state = run()
    record = state.records["prune"]
    steps = record["steps"]
    assert record["structure"] == "blocks" and "host_conv_block" not in record  # widths are not cut
    assert steps[0]["removed_blocks"] == [] and len(steps[2]["removed_blocks"]) > len(steps[1]["removed_blocks"]) > 0
    assert steps[2]["macs"] <= 0.6 * steps[0]["macs"] and steps[2]["latency_ms"]["kind"] == "measured"
    onnx_file = next(tmp_path / a["path"] for a in state.records["export"]["artifacts"]
                     if a["kind"] == "onnx-fp32" and a["role"] == "student")
    convs = sum(n.op_type == "Conv" for n in onnx.load(onnx_file).graph.node)
    assert convs == 15 - 2 * len(steps[2]["removed_blocks"])  # resnet14: stem, 12 block convs, 2 shortcuts
    # QAT fine-tuned the shallower student under the teacher, and its int8 ONNX was written
    assert state.records["qat"]["accuracy"] > 0.5
    assert any(a["kind"] == "onnx-int8" and a["role"] == "student" for a in state.records["export"]["artifacts"])
    # a rerun restores every stage from its files: the student comes back as shallow as it was pruned
    again = run()
    assert removed_blocks(again.student.module) == steps[2]["removed_blocks"] == record["after_recovery"]["removed_blocks"]
    x = torch.randn(4, *SPEC.input_shape)
    assert torch.equal(again.student.module.eval()(x), state.student.module.eval()(x))
