"""Text for language models: sentences from an .npz split, a byte-level BPE tokenizer trained on them,
sentences as right-padded token rows ending in EOS, and prompts cut from their first tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgedistill.errors import UserError

EOS, PAD = "<|endoftext|>", "<pad>"


def load_sentences(path: Path, split: str = "train", field: str = "data.train") -> list[str]:
    """The non-empty strings of x_{split} in an .npz (as the SST-2 and text datasets store them)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{field}: {path} not found; give an .npz with x_train/x_test string arrays")
    with np.load(path, allow_pickle=False) as data:
        key = f"x_{split}"
        if key not in data.files:
            raise UserError(f"{field}: {path.name} has no {key} (it has {', '.join(data.files)})")
        column = data[key]
    if column.dtype.kind != "U":
        raise UserError(f"{field}: {path.name}'s {key} holds {column.dtype}, not strings")
    return [s for s in (str(x).strip() for x in column) if s]


def train_tokenizer(sentences: list[str], vocab_size: int = 4096):
    """A byte-level BPE tokenizer (GPT-2's scheme: no unknown tokens) with EOS and a separate pad token,
    as a PreTrainedTokenizerFast that save_pretrained / AutoTokenizer round-trip."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences, trainer)
    # token_type_ids are an encoder's input; a causal LM's forward and its ONNX export take none
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   model_input_names=["input_ids", "attention_mask"])


def encode(tokenizer, sentences: list[str], max_length: int, eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), (N, L) int64, right-padded with the pad id: each sentence's tokens then EOS
    (the model learns to stop), cut at max_length."""
    rows = []
    for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]:
        rows.append((ids + ([tokenizer.eos_token_id] if eos else []))[:max_length])
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)], mask[i, : len(r)] = torch.tensor(r, dtype=torch.long), 1
    return out, mask


def prompts(ids: torch.Tensor, mask: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n_tokens of each right-padded row that is longer (so it has a continuation):
    (prompt ids (M, n_tokens), their mask (all ones), the rows they came from (M,))."""
    rows = torch.nonzero(mask.sum(1) > n_tokens).flatten()
    return ids[rows, :n_tokens].clone(), mask[rows, :n_tokens].clone(), rows


def mask_of(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Attention mask (N, width) of right-padded rows with these lengths."""
    return (torch.arange(width, device=lengths.device)[None] < lengths[:, None]).long()


def leading_prompts(ids: torch.Tensor, lengths: torch.Tensor, n_tokens: int,
                    n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`prompts` of texts given as (ids, lengths), at most `n` of them: (prompt ids, their mask). A run's
    prompts are these with its recipe's prompt_tokens, so scripts re-measuring a run's files take the same."""
    p_ids, p_mask, _ = prompts(ids, mask_of(lengths, ids.shape[1]), n_tokens)
    return (p_ids[:n], p_mask[:n]) if n else (p_ids, p_mask)
