"""Causal language models (GPT-2, Llama-style and kin) from local Hugging Face directories: the teacher, a
shallower student built from it, and the two measurements every stage needs (perplexity, greedy decoding)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch
from torch import nn

from edgedistill.errors import UserError
from edgedistill.generative.decoding import positions
from edgedistill.models.hf import _quiet, check_dir, uniform_map

# Where the decoder blocks live, by layout; anything else falls back to the one ModuleList as long as the
# config says the model has layers.
BLOCK_PATHS = ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers", "transformer.layers")


def load_causal_lm(path: Path, field: str = "teacher.path"):
    """(model, tokenizer) from a local directory, eager attention (the attention maps stay reachable), model
    in eval mode. A tokenizer without a pad token pads with EOS (GPT-2 ships without one)."""
    from transformers import AutoModelForCausalLM

    _quiet()
    check_dir(path, field)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager", local_files_only=True)
    except Exception as e:
        raise UserError(f"{field}: {path} does not load as a causal language model "
                        f"({str(e).splitlines()[0][:160]}); give a GPT-2, Llama-style or other *ForCausalLM "
                        "directory") from None
    tokenizer = load_tokenizer(path, field)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_tokenizer(path: Path, field: str = "teacher.path"):
    """The directory's tokenizer; without a pad token it pads with EOS (GPT-2 ships without one)."""
    from edgedistill.models.hf import load_tokenizer as load

    tokenizer = load(path, field)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"{field}: the tokenizer in {path} has neither a pad nor an EOS token; "
                            "add one (tokenizer.add_special_tokens) and save it again")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def block_path(model: nn.Module) -> str:
    """The module path of the decoder blocks (e.g. transformer.h for GPT-2, model.layers for Llama)."""
    modules = dict(model.named_modules())
    n = getattr(model.config, "num_hidden_layers", None)
    for path in BLOCK_PATHS:
        if isinstance(modules.get(path), nn.ModuleList) and len(modules[path]) == n:
            return path
    found = [name for name, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) == n]
    if n is None or len(found) != 1:
        raise UserError(f"teacher.path: {type(model).__name__} has no decoder-block list this tool knows "
                        f"(looked for {', '.join(BLOCK_PATHS)}); use a GPT-2 or Llama-style causal LM")
    return found[0]


def blocks(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(block_path(model))


def _narrow(config, hidden_size, heads, intermediate_size) -> dict:
    """The config fields a narrower student changes (GPT-2 calls the FFN width n_inner)."""
    ffn = "n_inner" if config.model_type == "gpt2" else "intermediate_size"
    if intermediate_size is not None and not hasattr(config, ffn):
        raise UserError(f"student.intermediate_size: {config.model_type} has no FFN width field; leave it unset")
    wanted = {"hidden_size": hidden_size, "num_attention_heads": heads, ffn: intermediate_size}
    return {k: v for k, v in wanted.items() if v is not None and v != getattr(config, k)}


def build_student(teacher: nn.Module, num_layers: int | None = None, init_layers: list[int] | None = None,
                  hidden_size: int | None = None, heads: int | None = None,
                  intermediate_size: int | None = None) -> nn.Module:
    """A shallower (and optionally narrower) causal LM of the teacher's family (default: half the layers).

    At the teacher's width it starts from the teacher's embeddings, final norm, LM head and the blocks
    `init_layers` (default: evenly spaced, DistilBERT's every other layer); a narrower one starts random.
    Returned in eval mode.
    The weights are copied by state_dict rather than by module so each block keeps its own layer index,
    which the KV cache is addressed by."""
    from transformers import AutoModelForCausalLM

    _quiet()
    n_teacher = int(teacher.config.num_hidden_layers)
    path = block_path(teacher)
    picked = list(init_layers) if init_layers else uniform_map(n_teacher, num_layers or max(n_teacher // 2, 1))
    if num_layers and init_layers and len(picked) != num_layers:
        raise UserError(f"student.init_layers: {picked} names {len(picked)} layers but student.layers is "
                        f"{num_layers}; give one teacher layer per student layer")
    if any(not 0 <= i < n_teacher for i in picked):
        raise UserError(f"student.init_layers: {picked} names a layer the teacher lacks (it has {n_teacher}: "
                        f"0..{n_teacher - 1})")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(picked)
    if isinstance(getattr(config, "layer_types", None), list) and len(config.layer_types) == n_teacher:
        config.layer_types = [config.layer_types[i] for i in picked]  # per-layer attention kinds (Qwen2, Gemma)
    narrower = _narrow(config, hidden_size, heads, intermediate_size)
    for k, v in narrower.items():
        setattr(config, k, v)
    if config.hidden_size % config.num_attention_heads:
        raise UserError(f"student.hidden_size: {config.hidden_size} is not a multiple of student.heads "
                        f"({config.num_attention_heads})")
    if narrower and getattr(config, "head_dim", None) is not None:
        config.head_dim = config.hidden_size // config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None)
    if kv is not None and config.num_attention_heads % kv:
        config.num_key_value_heads = config.num_attention_heads  # grouped-query heads must divide the heads
    student = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    student.to(next(teacher.parameters()).dtype)
    if not narrower:
        own, theirs = student.state_dict(), teacher.state_dict()
        pattern = re.compile(rf"^{re.escape(path)}\.(\d+)\.(.*)$")
        for key in own:
            match = pattern.match(key)
            source = f"{path}.{picked[int(match.group(1))]}.{match.group(2)}" if match else key
            own[key] = theirs[source].clone()
        student.load_state_dict(own)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.eval()  # like a loaded model; training switches it to train mode


@torch.no_grad()
def next_tokens(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Teacher-forced predictions at every position whose next token is not padding (padding on either side;
    the first token of each row is only context): (argmax (M,), targets (M,), summed negative log-likelihood)."""
    model.eval()
    device = next(model.parameters()).device
    preds, targets, nll = [], [], 0.0
    for i in range(0, len(ids), batch_size):
        m = attention_mask[i : i + batch_size]
        width = int(m.any(0).nonzero().max()) + 1  # drop the columns that are padding in every row
        x, m = ids[i : i + batch_size, :width].to(device), m[:, :width].to(device)
        logits = model(input_ids=x, attention_mask=m, position_ids=positions(m)).logits[:, :-1].float()
        keep = (m[:, 1:] * m[:, :-1]).bool()
        preds.append(logits[keep].argmax(-1).cpu())
        targets.append(x[:, 1:][keep].cpu())
        nll += float(torch.nn.functional.cross_entropy(logits[keep], x[:, 1:][keep], reduction="sum"))
    return torch.cat(preds), torch.cat(targets), nll


def perplexity_from(nll: float, tokens: int) -> float:
    """exp(mean token negative log-likelihood), from next_tokens' summed NLL and the number of its targets:
    every perplexity figure is this one, so a model's perplexity reads the same wherever it is reported."""
    return math.exp(nll / max(tokens, 1))


def perplexity(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 32) -> float:
    """Perplexity over every predicted token that is not padding."""
    _, targets, nll = next_tokens(model, ids, attention_mask, batch_size)
    return perplexity_from(nll, len(targets))


def greedy(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
           max_new_tokens: int = 32, eos_token_id: int | None = None) -> torch.Tensor:
    """Greedy continuation of (left-padded) prompts with the KV cache: the new tokens only, (N, max_new_tokens).
    With `eos_token_id` a row stops after it and the rest is the pad id; None generates every token. The loop
    is decoding.greedy_tokens, the one an exported model decodes with on ONNX Runtime too."""
    from edgedistill.generative.decoding import TorchLM, greedy_tokens

    pad = model.generation_config.pad_token_id
    new = greedy_tokens(TorchLM(model), input_ids, attention_mask, max_new_tokens, eos_token_id,
                        0 if pad is None else pad)
    return torch.from_numpy(new).to(input_ids.device)
