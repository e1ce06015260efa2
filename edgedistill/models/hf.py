"""Hugging Face sequence classifiers (the BERT family: BERT, MiniLM, RoBERTa, ELECTRA...) as pipeline models.

A teacher is a local model directory; a student is built from it DistilBERT-style (every other layer, weights
copied) or as a narrower config; pruning removes attention heads and FFN neurons and keeps the config in step,
so the student saves with `save_pretrained` and reloads with `from_pretrained`. Nothing is downloaded."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn

from edgedistill.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a recipe names local directories; never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "some weights were newly initialized" is expected for a new head
    logging.getLogger("transformers").setLevel(logging.ERROR)


class TextClassifier(nn.Module):
    """Token ids (N, L), int64, padded with `pad_id` -> class logits.

    The attention mask is derived from the padding, so the pipeline (training, ONNX, Core ML) passes one
    tensor, as it does for images. In eager mode the trailing columns that are padding for the whole batch
    are cut first: the result is the same (those positions are masked) and short sentences padded to 128
    train several times faster."""

    def __init__(self, hf: nn.Module, pad_id: int):
        super().__init__()
        self.hf = hf
        self.pad_id = int(pad_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_id
        if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
            keep = max(int(mask.sum(1).max()), 1)
            ids, mask = ids[:, :keep], mask[:, :keep]
        return self.hf(input_ids=ids, attention_mask=mask.long()).logits


def base(hf: nn.Module) -> nn.Module:
    return getattr(hf, hf.base_model_prefix)


def layers(hf: nn.Module) -> nn.ModuleList:
    encoder = getattr(base(hf), "encoder", None)
    found = getattr(encoder, "layer", None)
    if not isinstance(found, nn.ModuleList):
        raise UserError(f"teacher.path: {type(hf).__name__} is not a BERT-family encoder (no encoder.layer); "
                        "use a BERT, MiniLM, RoBERTa or ELECTRA sequence classifier")
    return found


def layer_path(module: TextClassifier, i: int, part: str = "") -> str:
    """Module path of layer i inside a TextClassifier (for feature taps), e.g. hf.bert.encoder.layer.3."""
    return f"hf.{module.hf.base_model_prefix}.encoder.layer.{i}" + (f".{part}" if part else "")


def embeddings_path(module: TextClassifier) -> str:
    return f"hf.{module.hf.base_model_prefix}.embeddings"


def check_dir(path: Path, field: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"{field}: {path} has no config.json; give a local Hugging Face model directory "
                        "(as written by save_pretrained)")


def load_tokenizer(path: Path, field: str = "teacher.path"):
    from transformers import AutoTokenizer

    _quiet()
    check_dir(path, field)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise UserError(f"{field}: no tokenizer could be loaded from {path} ({str(e).splitlines()[0][:120]}); "
                        "save the tokenizer into the model directory") from None


def max_positions(path: Path) -> int | None:
    """The longest sequence the model's position embeddings cover (RoBERTa reserves pad_token_id + 1 slots)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    return n - (config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta") else 0)


def head_classes(path: Path) -> int | None:
    """The number of classes of the directory's sequence-classification head; None for a bare encoder."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return config.num_labels
    return None


def _label_maps(labels) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def load_classifier(path: Path, labels, pad_id: int, field: str = "teacher.path") -> TextClassifier:
    """The directory's model with a sequence-classification head for `labels` (a new, randomly initialised
    head when it has none or one of another size: then the teacher stage fine-tunes it)."""
    from transformers import AutoModelForSequenceClassification

    _quiet()
    check_dir(path, field)
    try:
        hf = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(labels), **_label_maps(labels), ignore_mismatched_sizes=True,
            attn_implementation="eager", local_files_only=True)  # eager: attention probabilities for KD
    except Exception as e:
        raise UserError(f"{field}: {path} does not load as a sequence classifier "
                        f"({str(e).splitlines()[0][:160]})") from None
    layers(hf)
    return TextClassifier(hf, pad_id)


def uniform_map(teacher_layers: int, student_layers: int) -> list[int]:
    """DistilBERT's initialisation: student layer i starts from teacher layer i * (L_t / L_s), i.e. every
    other layer when halving (12 -> 6: 0, 2, 4, 6, 8, 10)."""
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def build_student(teacher: TextClassifier, *, num_layers: int | None, init_layers: list[int] | None,
                  hidden_size: int | None, heads: int | None, intermediate_size: int | None) -> TextClassifier:
    """A shallower (and optionally narrower) copy of the teacher. At the teacher's width it starts from the
    teacher's embeddings, pooler, head and the layers in `init_layers` (default: uniform_map); a narrower
    config starts from random weights and learns everything from the teacher."""
    from transformers import AutoModelForSequenceClassification

    _quiet()
    t_hf = teacher.hf
    n_teacher = t_hf.config.num_hidden_layers
    picked = list(init_layers) if init_layers else uniform_map(n_teacher, num_layers or max(n_teacher // 2, 1))
    if any(not 0 <= i < n_teacher for i in picked):
        raise UserError(f"student.init_layers: {picked} names a layer the teacher lacks (it has {n_teacher}: "
                        f"0..{n_teacher - 1})")
    config = copy.deepcopy(t_hf.config)
    config.num_hidden_layers = len(picked)
    config.pruned_heads = {}
    narrower = {k: v for k, v in (("hidden_size", hidden_size), ("num_attention_heads", heads),
                                  ("intermediate_size", intermediate_size))
                if v is not None and v != getattr(config, k)}
    for k, v in narrower.items():
        setattr(config, k, v)
    if config.hidden_size % config.num_attention_heads:
        raise UserError(f"student.hidden_size: {config.hidden_size} is not a multiple of student.heads "
                        f"({config.num_attention_heads})")
    hf = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    if not narrower:
        own = hf.state_dict()
        teacher_state = t_hf.state_dict()
        prefix = f"{t_hf.base_model_prefix}.encoder.layer."
        for key in own:
            source = key
            if key.startswith(prefix):
                i, rest = key[len(prefix):].split(".", 1)
                source = f"{prefix}{picked[int(i)]}.{rest}"
            own[key] = teacher_state[source].clone()
        hf.load_state_dict(own)
    return TextClassifier(hf, teacher.pad_id)


# ---------------------------------------------------------------- size and shape


def layer_macs(layer: nn.Module, seq_len: int) -> int:
    """One encoder layer's multiply-accumulates for `seq_len` tokens: its linear layers and the two attention
    matmuls (scores and context), which a module-hook counter misses."""
    linear = sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, nn.Linear))
    return seq_len * linear + 2 * seq_len * seq_len * layer.attention.self.all_head_size


def transformer_macs(module: TextClassifier, seq_len: int) -> int:
    """Multiply-accumulates for one sequence of `seq_len` tokens: every encoder layer, then the pooler and
    head on the first token."""
    stack = layers(module.hf)
    inside = {id(m) for layer in stack for m in layer.modules()}
    macs = sum(layer_macs(layer, seq_len) for layer in stack)
    for name, m in module.hf.named_modules():
        if isinstance(m, nn.Linear) and id(m) not in inside:
            tokens = 1 if ("pooler" in name or "classifier" in name) else seq_len
            macs += m.in_features * m.out_features * tokens
    return int(macs)


def head_size(module: TextClassifier) -> int:
    return layers(module.hf)[0].attention.self.attention_head_size


def shape(module: TextClassifier) -> dict:
    """Heads and FFN width per layer: what pruning changed."""
    return {"heads": [layer.attention.self.num_attention_heads for layer in layers(module.hf)],
            "intermediate_size": module.hf.config.intermediate_size,
            "layers": module.hf.config.num_hidden_layers, "hidden_size": module.hf.config.hidden_size}


def keep_ffn(module: TextClassifier, keep: dict[int, torch.Tensor]) -> None:
    """Keep only the FFN neurons `keep[i]` (indices) of each layer i, in place; all layers keep the same
    number, so config.intermediate_size stays the truth and from_pretrained rebuilds the shape."""
    from transformers.pytorch_utils import prune_linear_layer

    sizes = {len(idx) for idx in keep.values()}
    if len(sizes) != 1:
        raise ValueError("every layer must keep the same number of FFN neurons")
    for i, idx in keep.items():
        layer = layers(module.hf)[i]
        idx = idx.sort().values.to(layer.intermediate.dense.weight.device)
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, idx, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, idx, dim=1)
    module.hf.config.intermediate_size = sizes.pop()


def keep_layers(module: TextClassifier, keep: list[int]) -> None:
    """Keep only the encoder layers `keep`, in that order, in place: the layer list, config.num_hidden_layers
    and the layer numbers in config.pruned_heads follow, so save_pretrained/from_pretrained see the shallower
    model."""
    stack = layers(module.hf)
    base(module.hf).encoder.layer = nn.ModuleList([stack[i] for i in keep])
    config = module.hf.config
    config.num_hidden_layers = len(keep)
    pruned = {int(k): v for k, v in (config.pruned_heads or {}).items()}
    config.pruned_heads = {new: pruned[old] for new, old in enumerate(keep) if old in pruned}


def prune_heads(module: TextClassifier, heads: dict[int, list[int]]) -> None:
    """Remove attention heads (transformers rewrites the modules and records config.pruned_heads, which
    from_pretrained replays)."""
    heads = {i: h for i, h in heads.items() if h}
    if heads:
        module.hf.prune_heads(heads)


def reshape_to(module: TextClassifier, state: dict) -> None:
    """Give a freshly built student the depth, head counts and FFN width found in a pruned state_dict (the
    values come from load_state_dict afterwards)."""
    n = len(layers(module.hf))
    depth = sum(f"{layer_path(module, i)}.attention.self.query.weight" in state for i in range(n))
    if depth < n:  # layers removed by depth pruning: the first ones take their names
        keep_layers(module, list(range(depth)))
    size = head_size(module)
    cut, ffn = {}, {}
    for i, layer in enumerate(layers(module.hf)):
        prefix = layer_path(module, i)
        kept = state[f"{prefix}.attention.self.query.weight"].shape[0] // size
        have = layer.attention.self.num_attention_heads
        cut[i] = list(range(kept, have))
        ffn[i] = torch.arange(state[f"{prefix}.intermediate.dense.weight"].shape[0])
    prune_heads(module, cut)
    if any(len(v) != module.hf.config.intermediate_size for v in ffn.values()):
        keep_ffn(module, ffn)
