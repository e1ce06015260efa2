"""A causal LM as an ONNX directory with a KV cache, the form a phone app decodes with: model.onnx takes
input_ids, attention_mask, position_ids (when the family has them) and past_key_values.{i}.{key,value}, and
returns logits and present.{i}.{key,value}; model_quantized.onnx is its dynamic-int8 twin. optimum's
ORTModelForCausalLM.from_pretrained(dir) loads either (file_name=...).

OrtGreedy decodes on a bare onnxruntime session, feeding the cache back by hand as an app does, so the
checks and timings here measure what ships rather than optimum's wrapper; it is a decoding backend
(edgedistill.generative.decoding), so its greedy loop is the one torch models decode with."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from edgedistill.errors import RefusedError
from edgedistill.exporters.hf_onnx import FP32_FILE, INT8_FILE  # noqa: F401 (INT8_FILE: for callers)
from edgedistill.generative.decoding import Incremental, greedy_tokens

PAST, PRESENT = "past_key_values.", "present."


def export(model, tokenizer, out_dir: Path, opset: int = 18, int8: bool = True,
           weight_range: tuple[int, int] = (-128, 127)) -> Path:
    """Export `model` (a *ForCausalLM) with its tokenizer through optimum's text-generation-with-past task,
    atomically; with int8 also write the dynamic-int8 twin (weights in `weight_range`, the target's). Returns
    the directory."""
    from edgedistill.exporters.hf_onnx import export_directory

    out_dir = Path(out_dir)

    def has_cache(out: Path) -> None:
        if not any(i.name.startswith(PAST) for i in _session(out / FP32_FILE).get_inputs()):
            raise RefusedError(f"export {out_dir.name}: the exported model has no KV-cache inputs ({PAST}*)")

    export_directory(model, tokenizer, out_dir, "text-generation-with-past", opset, int8=int8, check=has_cache,
                     weight_range=weight_range)
    return out_dir


def _session(path: Path, threads: int | None = None, reference: bool = False):
    """`reference`: the file's int8 arithmetic by reference execution (edgedistill.runtimes.onnxruntime.session)."""
    import onnxruntime as ort

    if reference:
        from edgedistill.runtimes.onnxruntime import session

        return session(path, threads or 1, reference=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtGreedy:
    """Greedy decoding with the KV cache on an onnxruntime session of an exported model.onnx (or its int8
    twin). Prompts are left-padded (N, P) int64 with their attention mask."""

    def __init__(self, path: Path, threads: int | None = None, reference: bool = False):
        self.session = _session(path, threads, reference)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past = [name for name in inputs if name.startswith(PAST)]
        self.present = [PRESENT + name[len(PAST):] for name in self.past]
        self.has_mask, self.has_positions = "attention_mask" in inputs, "position_ids" in inputs
        self.cache_shapes, self.cache_dtypes = {}, {}
        for name in self.past:
            _, heads, _, head_dim = inputs[name].shape
            if not (isinstance(heads, int) and isinstance(head_dim, int)):
                raise RefusedError(f"{Path(path).name}: {name} has no fixed heads/head size ({inputs[name].shape})")
            self.cache_shapes[name] = (heads, head_dim)
            self.cache_dtypes[name] = np.float16 if "float16" in inputs[name].type else np.float32

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, h, 0, d), self.cache_dtypes[name]) for name, (h, d) in self.cache_shapes.items()}

    def step(self, ids: np.ndarray, mask: np.ndarray, past: dict[str, np.ndarray]):
        """One forward pass: `ids` (N, S) are the new tokens, `mask` (N, past + S) covers cache and new tokens.
        Returns (logits (N, S, V), the new cache)."""
        feed = {"input_ids": ids, **past}
        if self.has_mask:
            feed["attention_mask"] = mask
        if self.has_positions:
            feed["position_ids"] = np.clip(mask.cumsum(-1) - 1, 0, None)[:, -ids.shape[1]:].astype(np.int64)
        logits, *present = self.session.run(["logits", *self.present], feed)
        return logits, dict(zip(self.past, present))

    def crop(self, past: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The cache's first `n` positions (the sequence axis)."""
        return {k: np.ascontiguousarray(v[:, :, :n]) for k, v in past.items()}

    def __call__(self, input_ids, attention_mask=None, max_new_tokens: int = 32, eos_token_id: int | None = None,
                 pad_token_id: int = 0) -> np.ndarray:
        """The new tokens (N, max_new_tokens); with `eos_token_id` a row stops after it and is padded."""
        return greedy_tokens(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id)


def open_runner(source, threads: int | None = None, reference: bool = False) -> OrtGreedy:
    """`source` itself when it is an OrtGreedy already (one session serves every measurement of a file), else a
    new one on the file at that path."""
    return source if isinstance(source, OrtGreedy) else OrtGreedy(source, threads, reference)


def _prompt_ids(prompts, directory: Path) -> list[list[int]]:
    if all(isinstance(p, str) for p in prompts):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return [list(torch.as_tensor(p).reshape(-1).tolist()) for p in prompts]


def check_matches_torch(model, directory: Path, prompts, max_new_tokens: int = 16,
                        file_name: str = FP32_FILE) -> float:
    """The share of greedily generated tokens (batch 1 per prompt, no EOS stop) that the exported model
    decodes identically to `model` in torch. Prompts: strings (tokenized by the directory's tokenizer) or
    token ids. 1.0 is expected for fp32; the int8 twin drifts once a near-tie flips."""
    from edgedistill.generative.lm import greedy

    runner = OrtGreedy(Path(directory) / file_name)
    same = total = 0
    for ids in _prompt_ids(prompts, Path(directory)):
        x = torch.tensor([ids], dtype=torch.long)
        want = greedy(model, x, max_new_tokens=max_new_tokens)[0].numpy()
        got = runner(x.numpy(), max_new_tokens=max_new_tokens)[0]
        same, total = same + int((want == got).sum()), total + len(want)
    return same / max(total, 1)


def time_per_token(onnx, prompt_ids, new_tokens: int = 32, threads: int | None = None, runs: int = 5) -> float:
    """Milliseconds per generated token with the KV cache, batch 1: the decode steps after the prompt's
    prefill (which is excluded), exactly `new_tokens` of them, median over `runs` after one warm-up run.
    `onnx`: an OrtGreedy, or a model.onnx path opened with `threads`."""
    runner = open_runner(onnx, threads)
    prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1).tolist()
    times = []
    for r in range(runs + 1):
        lm = Incremental(runner)
        token = lm(prompt)[-1]
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            token = lm([token])[-1]
        if r:
            times.append((time.perf_counter() - t0) * 1000 / new_tokens)
    return statistics.median(times)
