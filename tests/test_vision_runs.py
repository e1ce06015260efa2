"""Whole runs on a generated folder of photos of mixed sizes and aspect ratios: a timm teacher into another timm
model, a torchvision model, a tiny Hugging Face vision transformer built from its config, and your own
nn.Module through edgedistill.compress(), each with every artifact and its parity ladder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import edgedistill
from tests.test_api import TwoConvs

SIZES = [(40, 52), (61, 37), (48, 48), (36, 70), (80, 45)]  # (W, H)
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]
FAST = {"stages.teacher.epochs": 3, "stages.teacher.lr": 0.002, "stages.teacher.optimizer": "adamw",
        "stages.distill.epochs": 3, "stages.distill.lr": 0.002, "stages.distill.optimizer": "adamw",
        "stages.prune.epochs": 1, "stages.prune.steps": 1, "stages.prune.macs_ratio": 0.7,
        "stages.prune.measure_latency": False, "stages.prune.lr": 0.0005, "stages.prune.optimizer": "adamw",
        "stages.qat.epochs": 1, "stages.qat.lr": 0.0001, "stages.qat.optimizer": "adamw",
        "stages.export.formats": ["onnx", "ort", "coreml"], "stages.bench.repeats": 3,
        "data.image_size": 32, "data.batch_size": 16, "data.workers": 0}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photos(tmp_path_factory.mktemp("photos"))


def make_photos(root):
    """Three classes told apart by the colour of a blob on a noisy background, as JPEG and PNG files of five
    sizes, with a held-out split."""
    rng = np.random.default_rng(0)
    k = 0
    for split, n in (("train", 16), ("test", 6)):
        for c, colour in enumerate(COLOURS):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                w, h = SIZES[k % len(SIZES)]
                im = rng.integers(0, 90, (h, w, 3)).astype(np.uint8)
                cy, cx, r = h // 2 + rng.integers(-4, 5), w // 2 + rng.integers(-4, 5), min(w, h) // 3
                yy, xx = np.mgrid[0:h, 0:w]
                im[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
                Image.fromarray(im).save(root / split / f"class{c}" / f"{i}.{'jpg' if k % 2 else 'png'}", quality=92)
                k += 1
    return root


def _check(report: dict, out, student_kinds=("onnx-fp32", "onnx-int8", "ort")) -> dict:
    stages = {s["name"]: s for s in report["stages"]}
    kinds = {(a["role"], a["kind"]) for a in report["artifacts"]}
    assert ("teacher", "onnx-fp32") in kinds and {("student", k) for k in student_kinds} <= kinds, kinds
    assert {a["precision"] for a in report["artifacts"] if a["kind"] == "coreml"} == {"fp16", "w8a8"}
    assert all((out / a["path"]).exists() for a in report["artifacts"])
    ladder = {(r["from"], r["to"]): r for r in report["parity"]}  # every file against what it came from
    for role in ("teacher", "student"):
        assert ladder[(f"{role} fp32 (torch)", f"{role} fp32 (onnx)")]["top1_agreement"] == 1.0
    assert any(to.startswith("student int8") for _, to in ladder) and any(to == "student (ort)" for _, to in ladder)
    assert all(np.isfinite(r["max_abs"]) for r in report["parity"]), report["parity"]
    assert stages["prune"]["macs_kept"] < 1
    assert np.isfinite(stages["qat"]["accuracy"])
    return stages


@pytest.mark.slow
def test_a_timm_teacher_distills_into_another_timm_model(photos, tmp_path):
    out = tmp_path / "run"
    report = edgedistill.compress(teacher="timm:resnet10t", student="timm:mobilenetv3_small_050", data=photos,
                                  target="pixel-8", out=out, overrides=FAST)
    stages = _check(report, out)
    assert stages["teacher"]["accuracy"] >= 0.9  # colour blobs: learnable in three epochs
    assert stages["student"]["params_vs_teacher"] < 0.5


@pytest.mark.slow
def test_a_torchvision_model_pruned_and_quantized_itself(photos, tmp_path):
    out = tmp_path / "run"
    report = edgedistill.compress(teacher="torchvision:resnet18", student="torchvision:resnet18", data=photos,
                                  target="pixel-8", out=out,
                                  overrides={**FAST, "student.from_teacher": True, "stages.distill.enabled": False})
    stages = _check(report, out)
    assert stages["teacher"]["accuracy"] >= 0.9
    assert stages["qat"]["accuracy"] >= stages["teacher"]["accuracy"] - 0.2


@pytest.mark.slow
def test_a_tiny_hugging_face_vision_transformer_from_its_config(photos, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    model_dir = tmp_path / "vit"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=96, num_labels=3)
    ViTForImageClassification(config).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model_dir)
    out = tmp_path / "run"
    sets = {**FAST, "teacher.path": str(model_dir), "teacher.finetune": True, "stages.teacher.epochs": 4}
    del sets["data.image_size"]  # the image processor's 32 px
    report = edgedistill.compress(teacher="hf-vision", student="hf-vision", data=photos, target="pixel-8", out=out,
                                  overrides=sets)
    stages = _check(report, out)
    assert stages["teacher"]["source"].startswith("fine-tuned from")
    assert stages["teacher"]["accuracy"] >= 0.6


class Student(TwoConvs):
    def __init__(self):
        super().__init__((16, 32), channels=3, classes=3, stride=2)


@pytest.mark.slow
def test_your_module_on_your_photos_through_compress_and_resumed(photos, tmp_path):
    out = tmp_path / "run"
    settings = {**FAST, "teacher.arch": "timm:resnet10t"}
    torch.manual_seed(0)
    student = Student()
    report = edgedistill.compress(student=student, data=photos, target="pixel-8", out=out, overrides=settings)
    _check(report, out)
    events = out / "events.jsonl"
    seen = len(events.read_text().splitlines())
    again = edgedistill.compress(student=student, data=photos, target="pixel-8", out=out, overrides=settings)
    new = [json.loads(line) for line in events.read_text().splitlines()[seen:]]
    assert not [e for e in new if e["event"] == "stage_start"]
    assert again["artifacts"] == report["artifacts"]
