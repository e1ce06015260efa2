"""timm:, torchvision: and hf-vision families: names resolved without a download, preprocessing read from the
library's own config, checkpoints with another head fine-tuned, pruned models saved and loaded back."""

from types import SimpleNamespace

import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.families import family_of
from edgedistill.models import ModelSpec
from edgedistill.pruning import prune_to_macs

SPEC = ModelSpec(task="image-classification", input_shape=(3, 32, 32), num_classes=4, labels=("a", "b", "c", "d"),
                 mean=(0.5,) * 3, std=(0.25,) * 3)


def cfg(arch, **kw):
    return SimpleNamespace(**{"arch": arch, "channels": None, "checkpoint": None, "finetune": None, "path": None, **kw})


def test_arch_names_resolve_to_their_family_and_bad_names_get_a_suggestion():
    assert family_of("timm:resnet18").name == "timm"
    assert family_of("torchvision:mobilenet_v3_small").name == "torchvision"
    assert family_of("hf-vision").name == "hf-vision"
    with pytest.raises(ValueError, match="did you mean 'timm:resnet18'"):
        family_of("timm:resnet19").check("timm:resnet19", cfg("timm:resnet19"))
    with pytest.raises(ValueError, match="remove channels"):
        family_of("timm:resnet18").check("timm:resnet18", SimpleNamespace(channels=[8]))
    with pytest.raises(ValueError, match="name a model, e.g. 'torchvision:mobilenet_v3_small'"):
        family_of("torchvision:").check("torchvision:", cfg("torchvision:"))


def test_preprocessing_comes_from_the_libraries_configs():
    timm_pre = family_of("timm:mobilenetv3_large_100").preprocessing(cfg("timm:mobilenetv3_large_100"))
    assert (timm_pre.size, timm_pre.crop_pct, timm_pre.interpolation) == ((224, 224), 0.875, "bicubic")
    assert timm_pre.mean == pytest.approx((0.485, 0.456, 0.406)) and timm_pre.resize == (256, 256)
    tv = family_of("torchvision:mobilenet_v3_small").preprocessing(cfg("torchvision:mobilenet_v3_small"))
    assert (tv.size, tv.crop_pct, tv.interpolation) == ((224, 224), 224 / 256, "bilinear")
    assert family_of("torchvision:efficientnet_b0").preprocessing(cfg("torchvision:efficientnet_b0")).interpolation \
        == "bicubic"


def test_hf_vision_preprocessing_from_its_image_processor(tmp_path):
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 48, "width": 40}, image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6],
                      resample=3).save_pretrained(tmp_path)
    pre = family_of("hf-vision").preprocessing(SimpleNamespace(arch="hf-vision", path=tmp_path))
    assert (pre.size, pre.crop_mode, pre.interpolation) == ((48, 40), "squash", "bicubic")
    assert pre.mean == pytest.approx((0.1, 0.2, 0.3)) and pre.std == pytest.approx((0.4, 0.5, 0.6))
    from transformers import BitImageProcessor, ConvNextImageProcessor

    ConvNextImageProcessor(size={"shortest_edge": 96}, crop_pct=0.8).save_pretrained(tmp_path / "convnext")
    pre = family_of("hf-vision").preprocessing(SimpleNamespace(arch="hf-vision", path=tmp_path / "convnext"))
    assert (pre.size, pre.crop_pct, pre.crop_mode, pre.resize) == ((96, 96), 0.8, "center", (120, 120))
    BitImageProcessor(size={"shortest_edge": 80}, crop_size=64).save_pretrained(tmp_path / "bit")
    pre = family_of("hf-vision").preprocessing(SimpleNamespace(arch="hf-vision", path=tmp_path / "bit"))
    assert (pre.size, pre.crop_pct, pre.crop_mode) == ((64, 64), 0.8, "center")
    with pytest.raises(UserError, match="teacher.path: .* has no readable preprocessor_config.json"):
        family_of("hf-vision").preprocessing(SimpleNamespace(arch="hf-vision", path=tmp_path / "none"))


def test_a_checkpoint_with_another_head_keeps_its_backbone_and_is_fine_tuned(tmp_path):
    family = family_of("timm:resnet10t")
    imagenet = family.create("resnet10t", 1000, 3)
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pt")
    c = cfg("timm:resnet10t", checkpoint=tmp_path / "imagenet.pt")
    handle = family.new(c, SPEC, "cpu")
    family.load_checkpoint(handle, c.checkpoint, "teacher.checkpoint")
    assert torch.equal(handle.module.conv1[0].weight, imagenet.conv1[0].weight)
    assert handle.module.fc.out_features == 4
    assert family.needs_training(c, SPEC) and family.trained_from(c).startswith("fine-tuned from")

    own = family.create("resnet10t", 4, 3)  # trained on the data's classes: used as it is
    torch.save({"state_dict": own.state_dict()}, tmp_path / "own.pt")
    c = cfg("timm:resnet10t", checkpoint=tmp_path / "own.pt")
    family.load_checkpoint(handle, c.checkpoint, "teacher.checkpoint")
    assert torch.equal(handle.module.fc.weight, own.fc.weight) and not family.needs_training(c, SPEC)
    with pytest.raises(UserError, match="teacher.finetune: false"):
        family.needs_training(cfg("timm:resnet10t", checkpoint=tmp_path / "imagenet.pt", finetune=False), SPEC)

    other = family_of("timm:resnet18").create("resnet18", 4, 3)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="teacher.checkpoint: .* does not fit arch 'timm:resnet10t'"):
        family.load_checkpoint(handle, tmp_path / "other.pt", "teacher.checkpoint")


@pytest.mark.parametrize("arch", ["timm:mobilenetv3_small_100", "torchvision:mobilenet_v3_small"])
def test_a_pruned_model_saves_and_loads_from_its_stage_files_alone(tmp_path, arch):
    family = family_of(arch)
    torch.manual_seed(0)
    handle = family.new(cfg(arch), SPEC, "cpu")
    handle.module.eval()
    handle.module, _ = prune_to_macs(handle.module, SPEC, 0.6)
    handle.module.eval()
    family.save(handle, tmp_path)
    loaded = family.load(tmp_path, SPEC, "cpu").module.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), handle.module(x))
    depthwise = [m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


def test_hf_vision_student_is_the_teachers_model_and_refuses_narrowing_fields():
    family = family_of("hf-vision")
    with pytest.raises(ValueError, match="remove layers"):
        family.check("hf-vision", SimpleNamespace(channels=None, layers=2))
    zoo_teacher = family_of("cnn").new(SimpleNamespace(arch="cnn", channels=[8], dropout=0.0), SPEC, "cpu")
    with pytest.raises(UserError, match="an 'hf-vision' student is the teacher's own model"):
        family.build(cfg("hf-vision"), SPEC, teacher=zoo_teacher)
