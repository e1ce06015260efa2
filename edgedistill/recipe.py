"""The recipe: what to compress and how, as validated data. A recipe never executes code."""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.errors import UserError
from edgedistill.schema import Strict, parse_yaml, read_yaml, validate

# Upper bounds on counts: a typo of a few zeros is refused at once instead of running for years.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_REPEATS = 1_000_000

# ---------------------------------------------------------------- sections


class Normalization(Strict):
    """Per-channel mean/std applied to inputs scaled to [0, 1]; Core ML's image input reproduces it."""

    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> "Normalization":
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need one value per channel and std > 0")
        return self


class Augment(Strict):
    """Random augmentation, done on the training device per batch (a CPU loader cannot feed a GPU)."""

    crop_padding: int = Field(0, ge=0, description="random crop after padding each side by this many pixels")
    flip: bool = Field(False, description="random horizontal flip")
    cutout: int = Field(0, ge=0, description="side of a random square set to the mean (0: off)")
    rotate: float = Field(0.0, ge=0, le=180, description="random rotation of up to this many degrees either way")
    scale: float = Field(0.0, ge=0, lt=1, description="random zoom by a factor in [1 - scale, 1 + scale]")
    elastic_alpha: float = Field(0.0, ge=0, description="elastic distortion strength in pixels (Simard et al. "
                                                        "2003; 34 for 28x28 digits; 0: off)")
    elastic_sigma: float = Field(4.0, gt=0, description="smoothness of the elastic field, in pixels")
    random_resized_crop: float = Field(0.0, ge=0, lt=1, description="random crop of a share in [this, 1] of the "
                                       "image's area, aspect 3/4..4/3, resized to the model's size (0.08 as for "
                                       "ImageNet; 0: off). Image folders crop from the stored, slightly larger image")
    fill: Literal["mean", "edge"] = Field(
        "mean", description="what moves in from outside the image: the mean colour, or the nearest edge pixel "
                            "(right for digits and scans on a plain background)")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout or self.warps or self.random_resized_crop)

    @property
    def warps(self) -> bool:
        return bool(self.rotate or self.scale or self.elastic_alpha)


class DataConfig(Strict):
    dataset: Literal["digits", "npz", "folder", "text", "lm"] = "digits"
    path: Path | None = Field(None, description="npz arrays/encoded images (dataset: npz), or an image folder "
                                                "or a .csv/.jsonl list of path,label rows (dataset: folder)")
    train: Path | None = Field(None, description="text: the training split, a .csv/.tsv/.jsonl file or an npz "
                                                 "of strings (x_train, y_train and optionally x_test, y_test); "
                                                 "lm: an npz of strings (x_train, optionally x_test) or a .txt "
                                                 "file, one text per line")
    test: Path | None = Field(None, description="text: the held-out split (same formats); None: the npz's "
                                                "x_test/y_test, else test_fraction of train")
    text_column: str = Field("text", description="text: the column (CSV/TSV header, JSONL key) with the text")
    label_column: str = Field("label", description="text: the column with the label (class index or name)")
    max_length: int = Field(128, ge=4, le=4096, description="text: tokens per example (padded/truncated)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share when the data has no test split")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    limit_train: int | None = Field(None, ge=1, description="train on a seeded random subset of this many "
                                                            "examples (quick trials); the test split stays whole")
    normalization: Normalization | None = Field(None, description="None: computed from the training split")
    labels: list[str] | None = None
    augment: Augment = Augment()
    image_size: tuple[int, int] | None = Field(None, description="folder: the (H, W) (or one side) that images of "
                                                                 "mixed sizes are resized (shorter side) and "
                                                                 "center-cropped to; with a timm, torchvision or "
                                                                 "Hugging Face teacher, the size its preprocessing"
                                                                 " is used at")
    cache: bool | Path = Field(False, description="folder: keep the resized images as one uint8 file (true: in "
                                                  "~/.cache/edgedistill, or this folder); later epochs and runs "
                                                  "read it instead of decoding")
    workers: int | None = Field(None, ge=0, le=64, description="folder: image decoding processes (0: in the "
                                                               "training process; None: the usable cores, at most 8)")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v):
        return (v, v) if isinstance(v, int) else v

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v):
        if v is not None and min(v) < 1:
            raise ValueError("image_size: give sides of at least 1 pixel")
        return v

    @model_validator(mode="after")
    def _path_for_files(self) -> "DataConfig":
        if self.dataset in ("text", "lm"):
            if self.train is None:
                kinds = "an .npz of strings or a .txt file" if self.dataset == "lm" else "a .csv, .tsv, .jsonl or .npz file"
                raise ValueError(f"dataset '{self.dataset}' needs data.train ({kinds})")
            if self.augment.active:
                raise ValueError(f"data.augment is for images; remove it for dataset '{self.dataset}'")
        elif self.dataset != "digits" and self.path is None:
            raise ValueError(f"dataset '{self.dataset}' needs data.path")
        elif self.train is not None or (self.test is not None and not self.listed):
            raise ValueError("data.train/data.test are for dataset 'text'; images use data.path (data.test: a "
                             "held-out .csv/.jsonl list beside a list in data.path)")
        return self

    @property
    def listed(self) -> bool:
        """data.path is a .csv/.jsonl list of images, not a folder."""
        return self.dataset == "folder" and self.path is not None and self.path.suffix.lower() in (".csv", ".jsonl")


def _family(arch: str):
    from edgedistill.families import family_of

    return family_of(arch)


def _archs_that(has) -> str:
    """'hf' and 'hf-lm': the families with a property, as a message names them."""
    from edgedistill.families import FAMILIES

    names = [f"'{f.name}'" for f in FAMILIES if has(f)]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


class ModelConfig(Strict):
    arch: str = Field("cnn", description="a name from the model zoo: cnn, mlp, resnet20, wrn_40_2, ..., hf "
                                         "(a Hugging Face BERT-family sequence classifier) or hf-lm (a Hugging "
                                         "Face causal language model: GPT-2, Llama-style)")
    channels: list[int] | None = Field(None, description="cnn: conv widths per block; mlp: hidden sizes")
    dropout: float = Field(0.0, ge=0, lt=1, description="mlp: dropout after each hidden layer")

    @model_validator(mode="after")
    def _known(self) -> "ModelConfig":
        from edgedistill.families import family_of

        family_of(self.arch).check(self.arch, self)
        return self


class StudentConfig(ModelConfig):
    from_teacher: bool = Field(False, description="start from the teacher's weights (same arch): prune and "
                                                  "quantize the teacher itself, the original still supervising")
    layers: int | None = Field(None, ge=1, description="hf: transformer layers (default: half the teacher's)")
    init_layers: list[int] | None = Field(
        None, description="hf: the teacher layers the student's start from (default: evenly spaced, as DistilBERT)")
    hidden_size: int | None = Field(None, ge=1, description="hf: a narrower width (then randomly initialised)")
    heads: int | None = Field(None, ge=1, description="hf: attention heads of a narrower student")
    intermediate_size: int | None = Field(None, ge=1, description="hf: FFN width of a narrower student")
    checkpoint: Path | None = Field(None, description="state_dict to start from (a student distilled earlier); "
                                                      "with stages.distill.enabled=false the run goes on to prune/qat")

    @model_validator(mode="after")
    def _hf_fields(self) -> "StudentConfig":
        given = [k for k in ("layers", "init_layers", "hidden_size", "heads", "intermediate_size")
                 if getattr(self, k) is not None]
        if given and not _family(self.arch).student_needs_teacher:
            raise ValueError(f"{given[0]} applies to arch {_archs_that(lambda f: f.student_needs_teacher)} only")
        if given and self.from_teacher:
            raise ValueError(f"from_teacher keeps the teacher's shape; remove {given[0]}")
        if self.checkpoint is not None and (self.from_teacher or _family(self.arch).loads_from_path):
            raise ValueError("checkpoint applies to students built from an arch (not from_teacher or a model directory); remove it")
        if self.layers is not None and self.init_layers is not None and len(self.init_layers) != self.layers:
            raise ValueError(f"init_layers lists {len(self.init_layers)} layers but layers is {self.layers}")
        return self


class TeacherConfig(ModelConfig):
    checkpoint: Path | None = Field(None, description="state_dict to load; None: train the teacher")
    normalization: Normalization | None = Field(
        None, description="the teacher's own input normalization when it differs from the student's")
    path: Path | None = Field(None, description="hf: a local Hugging Face model directory (config, weights, "
                                                "tokenizer): a sequence classifier, or an encoder to fine-tune")
    finetune: bool | None = Field(None, description="hf: fine-tune with stages.teacher; None: only when the "
                                                    "directory has no classification head for the data's classes")

    @model_validator(mode="after")
    def _hf_fields(self) -> "TeacherConfig":
        family = _family(self.arch)
        if family.loads_from_path and self.path is None:
            raise ValueError(f"arch '{self.arch}' needs teacher.path, a local Hugging Face model directory")
        if not family.loads_from_path and self.path is not None:
            raise ValueError(f"path applies to arch {_archs_that(lambda f: f.loads_from_path)} only; "
                             "other teachers load teacher.checkpoint")
        if not family.finetunes and self.finetune is not None:
            raise ValueError(f"finetune applies to arch {_archs_that(lambda f: f.finetunes)} only (a causal LM "
                             "teacher is used as it is)")
        if family.loads_from_path and (self.checkpoint is not None or self.normalization is not None):
            raise ValueError(f"arch '{self.arch}' loads from teacher.path; remove checkpoint/normalization")
        return self


class StageBase(Strict):
    enabled: bool = True


class TrainStage(StageBase):
    epochs: int = Field(ge=0, le=MAX_EPOCHS)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: Augment | None = Field(None, description="this stage's augmentation; None: data.augment")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the gradients' global L2 norm")


class LayerMatch(Strict):
    """Transformer layer-to-layer terms (TinyBERT): student layer i learns the hidden states (through a
    learned projection where widths differ) and the attention probabilities of teacher layer mapping[i]."""

    mapping: Literal["uniform"] | list[int] = Field(
        "uniform", description="uniform: student layer i <- teacher layer (i+1)*L_t/L_s - 1; or teacher indices")
    hidden_weight: float = Field(1.0, ge=0, description="MSE of hidden states (and of the embeddings' output)")
    attention_weight: float = Field(1.0, ge=0, description="KL of attention probabilities, averaged over heads")


class FeatureMatch(Strict):
    """One intermediate-layer term: the student's module output at `student` learns from the teacher's at
    `teacher` (module paths as in model.named_modules(), e.g. layer2)."""

    student: str
    teacher: str
    kind: Literal["fitnet", "attention", "attention_probs"] = Field(
        "fitnet", description="fitnet: MSE through a learned projection (Romero et al. 2015); attention: "
                              "spatial attention maps (Zagoruyko & Komodakis 2017); attention_probs: a "
                              "transformer self-attention module's probabilities (TinyBERT)")
    weight: float = Field(1.0, ge=0)


class KDStage(TrainStage):
    """loss = ce_weight * CE(s, y) + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + sum of feature terms."""

    temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(0.9, ge=0)
    ce_weight: float = Field(0.1, ge=0)
    features: list[FeatureMatch] = Field(default_factory=list)
    layer_match: LayerMatch | None = Field(None, description="hf models: layer-to-layer hidden and attention terms")
    cache_teacher: bool | None = Field(
        None, description="compute teacher logits once and reuse them; None: when the data has no augmentation")
    cache_topk: int | None = Field(
        None, ge=1, description="keep only the teacher's k largest logits per example in the cache (sparse "
                                "soft targets); the probability mass they hold is reported")


class TeacherStage(TrainStage):
    """Trains the teacher with cross-entropy when teacher.checkpoint is not given."""


class DataFree(Strict):
    """Distillation without the training data (edgedistill.distill.datafree): a generator synthesizes the
    inputs, trained to make teacher and student disagree (DFAD) while matching the teacher's BatchNorm
    statistics (DeepInversion) and covering its classes (DAFL). Needs a trained teacher (teacher.checkpoint);
    the held-out split is used for the report only. Later stages learn and calibrate on `transfer_set`
    generated images labelled by the teacher."""

    enabled: bool = False
    iterations: int = Field(50, ge=1, le=100_000, description="generator/student rounds per epoch (stages.distill.epochs)")
    batch_size: int = Field(256, ge=2, le=MAX_BATCH, description="generated images per step")
    student_steps: int = Field(5, ge=1, le=1000, description="student updates per generator update")
    generator_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the generator")
    z_dim: int = Field(256, ge=1, description="generator noise dimension")
    width: int = Field(128, ge=4, description="generator channels")
    student_loss: Literal["l1", "kl"] = Field("l1", description="l1: DFAD's logit L1; kl: soft targets at "
                                                               "stages.distill.temperature")
    adversarial_weight: float = Field(1.0, ge=0, description="generator: maximize teacher-student L1 (DFAD)")
    bn_weight: float = Field(1.0, ge=0, description="generator: match the teacher's BatchNorm statistics")
    oh_weight: float = Field(0.5, ge=0, description="generator: confident teacher predictions (DAFL one-hot)")
    entropy_weight: float = Field(5.0, ge=0, description="generator: classes used evenly (DAFL information entropy)")
    transfer_set: int = Field(10000, ge=2, le=10_000_000, description="generated images kept for prune, qat and calibration")


class SequenceKD(Strict):
    """Causal language models (dataset lm): sequence-level KD (Kim & Rush 2016). The teacher continues the
    first `prompt_tokens` tokens of every training text once; the student learns those sequences (cross-entropy,
    ce_weight) and, with kd_weight > 0, the teacher's per-token distributions (top `logits_topk` kept)."""

    prompt_tokens: int = Field(8, ge=1, description="tokens of each training text that prompt the teacher")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="longest teacher continuation")
    num_beams: int = Field(1, ge=1, le=64, description="1: greedy; more: beam search (Kim & Rush's mode seeking)")
    sample: bool = Field(False, description="sample the continuations instead (top_k, temperature 1)")
    top_k: int | None = Field(None, ge=1, description="sampling: keep the k most likely tokens")
    logits_topk: int | None = Field(None, ge=1, description="also cache the teacher's k largest logits per token "
                                                            "for the word-level term (None: live teacher)")
    include_prompt: bool = Field(False, description="also learn the prompt tokens")


class DistillStage(KDStage):
    data_free: DataFree = DataFree()
    sequence: SequenceKD = SequenceKD()
    generations: int = Field(
        1, ge=1, le=100, description="born-again networks (Furlanello et al. 2018): generation g+1 is a fresh student "
                             "distilled from generation g; use with student.arch = teacher.arch")
    ensemble_generations: bool = Field(False, description="also report the accuracy of all generations averaged")


class PruneStage(KDStage):
    """Removes whole channels/neurons until the budgets hold, in `steps` steps with KD recovery between them
    (`step_epochs`) and after the last (`epochs`); each step is measured (MACs, params, accuracy, latency)."""

    macs_ratio: float | None = Field(0.5, gt=0, le=1, description="keep at most this share of the student's MACs")
    params_ratio: float | None = Field(None, gt=0, le=1, description="keep at most this share of its parameters")
    latency_ms: float | None = Field(None, gt=0, description="batch-1 p50 of the fp32 ONNX on the target, in ms "
                                                            "(measured on this machine: host targets only)")
    structure: Literal["channels", "blocks"] = Field(
        "channels", description="remove channels/neurons/heads (width), or whole residual blocks (depth: the least "
                                "harmful per MAC first; importance, scope and round_to then do not apply)")
    importance: Literal["l2", "l1", "taylor", "bn_scale"] = "l2"
    scope: Literal["global", "per_layer"] = Field("global", description="one threshold across layers, or one ratio per layer")
    steps: int = Field(1, ge=1, le=100, description="MACs/params budgets: reached in this many geometric steps")
    step_epochs: int = Field(1, ge=0, le=MAX_EPOCHS, description="KD recovery epochs after each step but the last")
    latency_step: float = Field(0.8, gt=0, lt=1, description="latency budget: each step keeps this share of the MACs")
    max_steps: int = Field(10, ge=1, le=100, description="latency budget: give up after this many steps")
    measure_latency: bool = Field(True, description="time an exported copy after every step (the evidence)")
    round_to: int | None = Field(None, ge=1, description="None: the target's channel multiple")
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")
    lr: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _a_budget(self) -> "PruneStage":
        if self.macs_ratio is None and self.params_ratio is None and self.latency_ms is None:
            raise ValueError("give at least one budget: macs_ratio, params_ratio or latency_ms")
        return self


class QatStage(KDStage):
    """Quantization-aware fine-tuning (torchao PT2E, int8) under the teacher (logit terms only: the
    quantized graph no longer has the module paths that feature terms hook)."""

    lr: float = Field(0.005, gt=0)

    @model_validator(mode="after")
    def _logits_only(self) -> "QatStage":
        if self.features or self.layer_match:
            raise ValueError("feature terms are not supported in QAT; keep them in distill and prune")
        return self


class Training(Strict):
    """How training runs on the device; none of it changes what is learned beyond numerics."""

    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    channels_last: bool | None = Field(None, description="None: on CUDA for image models")
    compile: bool = Field(False, description="torch.compile the training step's model")


class PrecisionStage(StageBase):
    """Which blocks of a CNN/MLP student run int8 and which stay fp32: every combination is quantized and
    measured on the target (edgedistill.precision); qat trains that plan and export writes it."""

    enabled: bool = False
    tolerance: float = Field(0.002, ge=0, le=1, description="accuracy a plan may lose against the best one (on "
                                                             "training images the calibration did not use)")
    latency_ms: float | None = Field(None, gt=0, description="choose the most accurate plan within this p50; "
                                                            "None: the fastest within the tolerance")
    keep_fp32: list[str] = Field([], description="blocks that stay fp32 whatever is measured (e.g. [fc])")
    check_samples: int = Field(2000, ge=64, le=1_000_000, description="labelled training images for the accuracy check")
    rounds: int = Field(7, ge=1, le=1000, description="alternating timing rounds per candidate")


class ExportStage(StageBase):
    formats: list[str] = Field(
        ["onnx", "hf-onnx", "ort", "coreml"], description="registered export formats (edgedistill.exporters); the "
                                                        "format the target loads is written whether named or not; "
                                                        "hf-onnx: an optimum directory (ONNX + config + tokenizer), "
                                                        "written for Hugging Face students only")
    ptq: Literal["ort", "nncf"] = Field("ort", description="int8 method when the qat stage is off: ONNX Runtime "
                                                         "static quantization or NNCF's ONNX post-training quantization")
    coreml_variants: list[Literal["fp16", "int8"]] = Field(
        ["fp16", "int8"], min_length=1, description="Core ML packages to write: fp16, and int8 (W8A8 from QAT, "
                                                   "else int8 weights with fp16 compute)")
    opset: int = Field(18, ge=13)
    fp32_max_abs: float = Field(1e-3, gt=0, description="ONNX fp32 vs torch: max abs logit difference")
    fp32_max_rel: float = Field(1e-5, gt=0, description="ONNX fp32 vs torch: a larger difference is accepted "
                                                       "within this share of the largest logit")
    int8_min_agreement: float = Field(0.97, ge=0, le=1, description="ONNX int8 vs fake-quant torch: top-1")
    int8_max_rel: float = Field(0.05, gt=0, description="ONNX int8 vs the torch int8 model: max abs logit "
                                                       "difference over the largest reference logit magnitude")

    @field_validator("formats")
    @classmethod
    def _registered(cls, formats: list[str]) -> list[str]:
        try:
            from edgedistill.exporters import EXPORTERS

            known = list(dict.fromkeys(e.format for e in EXPORTERS))
        except ImportError:  # a training-only install: the export stage says what is missing
            return formats
        unknown = [f for f in formats if f not in known]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown format '{unknown[0]}'; {hint}known: {', '.join(known)}")
        return formats


class BenchStage(StageBase):
    warmup: int = Field(20, ge=0, le=MAX_REPEATS)
    repeats: int = Field(200, ge=1, le=MAX_REPEATS)
    threads: int | None = Field(None, ge=1, le=1024, description="None: the target's thread count")
    on_device: bool = Field(False, description="also time the .ort on the attached Android phone (adb and "
                                               "onnxruntime_perf_test from EDGEDISTILL_ORT_PERF_TEST)")
    speculative_k: int = Field(4, ge=1, le=64, description="causal LMs: tokens the student drafts per teacher pass")
    speculative_prompts: int = Field(20, ge=1, le=100_000, description="causal LMs: held-out prompts decoded speculatively")


class Stages(Strict):
    teacher: TeacherStage = TeacherStage(epochs=10)
    student: StageBase = StageBase()
    distill: DistillStage = DistillStage(epochs=10)
    prune: PruneStage = PruneStage(epochs=3)
    precision: PrecisionStage = PrecisionStage()
    qat: QatStage = QatStage(epochs=2)
    export: ExportStage = ExportStage()
    bench: BenchStage = BenchStage()
    report: StageBase = StageBase()

    @model_validator(mode="after")
    def _required(self) -> "Stages":
        for name in ("teacher", "student"):
            if not getattr(self, name).enabled:
                raise ValueError(f"stage '{name}' cannot be disabled: every later stage needs it")
        return self


class Recipe(Strict):
    name: str = "custom"
    description: str = ""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    training: Training = Training()
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: StudentConfig
    stages: Stages = Stages()

    @model_validator(mode="after")
    def _from_teacher_same_arch(self) -> "Recipe":
        if self.student.from_teacher and (self.student.arch, self.student.channels) != (self.teacher.arch, self.teacher.channels):
            raise ValueError("student.from_teacher needs student.arch and channels equal to the teacher's")
        return self

    @model_validator(mode="after")
    def _data_free(self) -> "Recipe":
        distill = self.stages.distill
        if not distill.data_free.enabled:
            return self
        used = [k for k in ("features", "layer_match") if getattr(distill, k)] + (["generations"] if distill.generations > 1 else [])
        if not distill.enabled:
            raise ValueError("stages.distill.data_free needs stages.distill.enabled: true")
        if _family(self.teacher.arch).task != "image-classification" or self.teacher.checkpoint is None:
            raise ValueError("stages.distill.data_free needs a trained image teacher: set teacher.checkpoint")
        if self.data.normalization is None:
            raise ValueError("stages.distill.data_free: set data.normalization to the teacher's input statistics "
                             "(without training data they cannot be computed)")
        if used:
            raise ValueError(f"stages.distill.data_free: remove stages.distill.{used[0]} (logit terms only)")
        return self

    @model_validator(mode="after")
    def _families_serve_the_task(self) -> "Recipe":
        """Teacher and student must be of families made for the data's task."""
        from edgedistill.families import FAMILIES, family_of
        from edgedistill.tasks import TASKS, for_dataset

        task = for_dataset(self.data.dataset)
        wrong = [m.arch for m in (self.teacher, self.student) if family_of(m.arch).task != task.name]
        if not wrong:
            return self
        serving = [name for f in FAMILIES if f.task == task.name for name in f.arch_names()]
        if len(serving) == 1:  # one family for this data: name it
            raise ValueError(f"dataset '{self.data.dataset}' needs teacher.arch and student.arch '{serving[0]}'")
        datasets = TASKS.get(family_of(wrong[0]).task).datasets
        raise ValueError(f"arch '{wrong[0]}' needs data.dataset " + " or ".join(f"'{d}'" for d in datasets))

    def stage_fingerprint(self, stage: str) -> str:
        """Hash of everything that decides a stage's output: data, models, seed and its config."""
        keep = {k: v for k, v in self.model_dump(mode="json").items() if k not in ("name", "description", "stages")}
        keep["stage"] = getattr(self.stages, stage).model_dump(mode="json")
        for how in ("workers", "cache"):  # how images are read, not which pixels: a resume keeps its stages
            keep["data"].pop(how)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edgedistill.recipes").iterdir() if p.name.endswith(".yaml"))


def builtin_text(name: str) -> str:
    if name not in builtin_names():
        raise UserError(f"recipe '{name}': no such built-in recipe (built-ins: {', '.join(builtin_names())})")
    return (resources.files("edgedistill.recipes") / f"{name}.yaml").read_text(encoding="utf-8")


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set a.b.c=value`; the value is parsed as YAML (3 -> int, [1,2] -> list, off -> bool)."""
    shown = assignment.encode("unicode_escape").decode()  # one line, whatever was typed
    if "=" not in assignment:
        raise UserError(f"--set {shown}: expected KEY=VALUE, e.g. --set stages.distill.epochs=3")
    key, _, text = assignment.partition("=")
    key_shown = key.encode("unicode_escape").decode()
    parts = key.strip().split(".")
    if not all(p.strip() for p in parts):
        raise UserError(f"--set {shown}: '{key_shown}' is not a dotted key like stages.distill.epochs")
    value = parse_yaml(text, f"--set {key_shown}") if text.strip() else None
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key_shown}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


PATH_FIELDS = (("data", "path"), ("data", "train"), ("data", "test"), ("teacher", "checkpoint"), ("teacher", "path"),
               ("student", "checkpoint"))


def _override_key(assignment: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in assignment.partition("=")[0].strip().split("."))


def load_recipe(ref: str | Path, overrides: list[str] = ()) -> Recipe:
    """A recipe from a file path or a built-in name, with `--set` overrides, validated.

    Relative paths inside a recipe file are resolved against the file's folder; relative paths typed on the
    command line (`--set teacher.checkpoint=t.pt`, or a whole section `--set teacher={...}`) against the
    working directory."""
    path = Path(ref)
    if path.is_file():
        raw, source, base = read_yaml(path), str(path), path.resolve().parent
    elif str(ref) in builtin_names():
        raw, source, base = parse_yaml(builtin_text(str(ref)), f"recipe {ref}"), f"recipe {ref}", Path.cwd()
    else:
        raise UserError(
            f"--recipe {ref}: no such file or built-in recipe (built-ins: {', '.join(builtin_names())})"
        )
    if raw is None or not isinstance(raw, dict):
        validate(Recipe, raw, source)  # raises with a clear message
    raw = copy.deepcopy(raw)
    typed: set[tuple[str, str]] = set()  # the path fields whose value now comes from the command line
    for assignment in overrides:
        apply_override(raw, assignment)
        key = _override_key(assignment)
        typed |= {f for f in PATH_FIELDS if f[: len(key)] == key[:2]}
    recipe = validate(Recipe, raw, source)
    for section, field in PATH_FIELDS:
        obj = getattr(recipe, section)
        value = getattr(obj, field)
        if value is not None:
            origin = Path.cwd() if (section, field) in typed else base
            resolved = value if value.is_absolute() else (origin / value).resolve()
            if not resolved.exists():
                raise UserError(f"{section}.{field}: {value} does not exist (resolved to {resolved})")
            setattr(obj, field, resolved)
    return recipe
