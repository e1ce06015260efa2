"""Small causal LMs end to end on a tiny GPT-2 trained here for a second on counting sentences (nothing
downloaded): students from teacher blocks, sequence-level KD sets and losses, the KV-cache ONNX export
decoded on a bare onnxruntime session, and speculative decoding."""

import random

import numpy as np
import pytest
import torch

from edgedistill.errors import UserError
from edgedistill.generative import corpus, kv_onnx, lm, seqkd, speculative

WORDS = ("alfa bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray").split()


def _text(*idx):
    return " ".join(WORDS[i] for i in idx)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models this small run fastest on one thread, and far slower when two threads share busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sentences(n, seed):
    """Runs of consecutive words ("foxtrot golf hotel"): a pattern a tiny model learns in a hundred steps,
    so its greedy continuations differ from prompt to prompt and end with EOS. Letters only: byte-level
    BPE never merges across letters and digits, and one token per word keeps the sequences short."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start, length = rng.randrange(len(WORDS) - 10), rng.randint(3, 6)
        out.append(" ".join(WORDS[start : start + length]))
    return out


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("lm") / "teacher"
    sentences = _sentences(400, 0)
    tokenizer = corpus.train_tokenizer(sentences, vocab_size=420)
    ids, mask = corpus.encode(tokenizer, sentences, max_length=32)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=4, n_head=4, n_positions=64,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(120):
        rows = torch.randint(0, len(ids), (32,))
        labels = ids[rows].masked_fill(mask[rows] == 0, -100)
        loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return lm.load_causal_lm(teacher_dir)


def _prompt_batch(tokenizer, texts):
    """Right-padded prompts of different lengths (how a data file yields them)."""
    ids, mask = corpus.encode(tokenizer, texts, max_length=16, eos=False)
    return ids, mask


# ---------------------------------------------------------------- models


def test_load_pads_with_eos_and_names_the_field(teacher_dir, tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel, PreTrainedTokenizerFast

    model, tokenizer = lm.load_causal_lm(teacher_dir)
    assert tokenizer.pad_token == corpus.PAD and model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config._attn_implementation == "eager" and not model.training
    no_pad = tmp_path / "no-pad"
    model.save_pretrained(no_pad)
    fast = AutoTokenizer.from_pretrained(teacher_dir)
    PreTrainedTokenizerFast(tokenizer_object=fast.backend_tokenizer, eos_token=corpus.EOS).save_pretrained(no_pad)
    _, tokenizer = lm.load_causal_lm(no_pad)
    assert tokenizer.pad_token == corpus.EOS and tokenizer.pad_token_id == tokenizer.eos_token_id
    DistilBertModel(DistilBertConfig(vocab_size=30, dim=16, n_layers=1, n_heads=2, hidden_dim=32)).save_pretrained(
        tmp_path / "encoder")
    with pytest.raises(UserError, match=r"teacher.path: .*encoder does not load as a causal language model"):
        lm.load_causal_lm(tmp_path / "encoder")
    with pytest.raises(UserError, match=r"teacher.path: .* has no config.json"):
        lm.load_causal_lm(tmp_path)


def test_student_blocks_are_the_chosen_teacher_blocks(teacher):
    model, _ = teacher
    student = lm.build_student(model)  # half the layers: 0 and 2
    t_blocks, s_blocks = lm.blocks(model), lm.blocks(student)
    assert lm.block_path(model) == "transformer.h" and len(s_blocks) == 2 and student.config.n_layer == 2
    for s, t in ((0, 0), (1, 2)):
        t_state = t_blocks[t].state_dict()
        assert all(torch.equal(v, t_state[k]) for k, v in s_blocks[s].state_dict().items())
    for name in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "lm_head.weight"):
        assert torch.equal(student.get_parameter(name), model.get_parameter(name))
    assert student.lm_head.weight.data_ptr() == student.transformer.wte.weight.data_ptr()  # still tied
    picked = lm.build_student(model, num_layers=2, init_layers=[3, 1])
    assert torch.equal(lm.blocks(picked)[0].mlp.c_fc.weight, t_blocks[3].mlp.c_fc.weight)
    narrow = lm.build_student(model, num_layers=1, hidden_size=16, heads=2, intermediate_size=24)
    assert (narrow.config.n_embd, narrow.config.n_head, narrow.config.n_inner) == (16, 2, 24)
    assert lm.blocks(narrow)[0].mlp.c_fc.weight.shape == (16, 24)
    assert narrow(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, model.config.vocab_size)
    with pytest.raises(UserError, match=r"student.init_layers: \[0, 4\] names a layer the teacher lacks"):
        lm.build_student(model, init_layers=[0, 4])
    with pytest.raises(UserError, match=r"student.hidden_size: 30 is not a multiple of student.heads \(4\)"):
        lm.build_student(model, hidden_size=30)


def test_llama_layout_and_unknown_layouts():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    student = lm.build_student(llama, num_layers=2)
    assert lm.block_path(student) == "model.layers"
    assert torch.equal(student.model.layers[1].self_attn.k_proj.weight, llama.model.layers[2].self_attn.k_proj.weight)
    assert torch.equal(student.model.norm.weight, llama.model.norm.weight)
    ids = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(lm.greedy(student, ids, max_new_tokens=5)[0],
                       speculative.greedy_cached(student, ids, 5)[0, 4:])  # each block indexes its own cache slot
    narrow = lm.build_student(llama, num_layers=1, hidden_size=16, heads=2, intermediate_size=24)
    assert (narrow.config.head_dim, narrow.config.num_key_value_heads) == (8, 2)
    assert narrow(ids).logits.shape == (1, 4, 40)

    class Flat(torch.nn.Module):
        config = LlamaConfig(num_hidden_layers=3)

    with pytest.raises(UserError, match="teacher.path: Flat has no decoder-block list"):
        lm.build_student(Flat())


def test_perplexity_ignores_padding_on_either_side(teacher):
    model, tokenizer = teacher
    ids, mask = corpus.encode(tokenizer, [_text(1, 2, 3, 4), _text(7, 8), _text(3, 4, 5, 6, 7, 8)], max_length=32)
    nll = count = 0.0
    for row, m in zip(ids, mask):
        x = row[m.bool()][None]
        with torch.no_grad():
            nll += float(model(input_ids=x, labels=x).loss) * (x.shape[1] - 1)
        count += x.shape[1] - 1
    expected = float(np.exp(nll / count))
    assert lm.perplexity(model, ids, mask, batch_size=2) == pytest.approx(expected, rel=1e-4)
    left_ids, left_mask = ids.clone(), mask.clone()
    for i, m in enumerate(mask):
        left_ids[i], left_mask[i] = ids[i].roll(int((m == 0).sum())), m.roll(int((m == 0).sum()))
    assert lm.perplexity(model, left_ids, left_mask) == pytest.approx(expected, rel=1e-4)
    assert 1.0 < expected < 10.0  # trained: far below the vocabulary size


# ---------------------------------------------------------------- sequence-level KD


@pytest.fixture(scope="module")
def seqs(teacher):
    model, tokenizer = teacher
    texts = [" ".join(WORDS[i : i + n]) for i, n in ((0, 2), (5, 3), (9, 1), (2, 4), (11, 2), (7, 3))]
    ids, mask = _prompt_batch(tokenizer, texts * 4)
    return ids, mask, seqkd.teacher_sequences(model, ids, mask, max_new_tokens=12, batch_size=5,
                                              logits_topk=model.config.vocab_size)


def test_teacher_sequences_are_the_teachers_greedy_continuations(teacher, seqs, tmp_path):
    model, tokenizer = teacher
    ids, mask, s = seqs
    n = len(ids)
    assert s["input_ids"].shape == s["attention_mask"].shape and s["input_ids"].shape[0] == n
    assert torch.equal(s["prompt_lengths"], mask.sum(1))
    lengths = s["attention_mask"].sum(1)
    assert bool((s["attention_mask"][:, 0] == 1).all()) and bool((s["attention_mask"].diff(dim=1) <= 0).all())
    ended = 0
    for i in range(n):
        p = int(s["prompt_lengths"][i])
        prompt = ids[i, :p]
        assert torch.equal(s["input_ids"][i, :p], prompt)
        want = model.generate(prompt[None], max_new_tokens=12, do_sample=False, top_k=None,
                              pad_token_id=tokenizer.pad_token_id)[0, p:]
        if tokenizer.eos_token_id in want.tolist():
            want = want[: want.tolist().index(tokenizer.eos_token_id) + 1]
            ended += 1
        assert torch.equal(s["input_ids"][i, p : lengths[i]], want), i
        assert bool((s["input_ids"][i, lengths[i]:] == tokenizer.pad_token_id).all())
    assert 0 < ended and len(set(map(tuple, s["input_ids"].tolist()))) >= 6  # varied, and some stop at EOS
    # the cached top-1 at position t is the token the teacher chose for t + 1
    for i in range(n):
        p, L = int(s["prompt_lengths"][i]), int(lengths[i])
        assert torch.equal(s["topk_indices"][i, p - 1 : L - 1, 0].long(), s["input_ids"][i, p:L])
    assert s["topk_values"].dtype == torch.float16 and s["topk_indices"].dtype == torch.int32
    assert float(s["topk_mass"]) == pytest.approx(1.0, abs=1e-4)
    torch.save(s, tmp_path / "seqs.pt")
    loaded = torch.load(tmp_path / "seqs.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in s.items())


def test_sampled_sequences_are_seeded_and_leave_the_callers_rng(teacher):
    model, tokenizer = teacher
    ids, mask = _prompt_batch(tokenizer, [_text(3), _text(10, 11), _text(4, 5, 6)] * 3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = seqkd.teacher_sequences(model, ids, mask, 8, do_sample=True, temperature=2.0, seed=1, logits_topk=4)
    assert torch.equal(torch.rand(1), before)
    b = seqkd.teacher_sequences(model, ids, mask, 8, do_sample=True, temperature=2.0, seed=1)
    c = seqkd.teacher_sequences(model, ids, mask, 8, do_sample=True, temperature=2.0, seed=2)
    g = seqkd.teacher_sequences(model, ids, mask, 8)
    assert torch.equal(a["input_ids"], b["input_ids"]) and not torch.equal(a["input_ids"], c["input_ids"])
    assert not torch.equal(a["input_ids"], g["input_ids"])
    assert a["topk_values"].shape == (9, a["input_ids"].shape[1], 4) and 0.3 < float(a["topk_mass"]) < 1.0
    beam = seqkd.teacher_sequences(model, ids, mask, 8, num_beams=3)
    assert torch.equal(beam["prompt_lengths"], mask.sum(1))


@torch.no_grad()
def test_seqkd_losses_cover_the_continuation_only(teacher, seqs):
    model, _ = teacher
    _, _, s = seqs
    student = lm.build_student(model, num_layers=1)
    idx = torch.tensor([0, 3, 4, 7])
    x = s["input_ids"][idx]
    task = seqkd.SeqKDTask(model, s, temperature=2.0, kd_weight=0.0, ce_weight=1.0)
    out = task(student, x, None, idx)
    nll = count = 0.0
    for i in idx.tolist():
        p, L = int(s["prompt_lengths"][i]), int(s["attention_mask"][i].sum())
        row = s["input_ids"][i, :L][None]
        logits = student(input_ids=row).logits[0, p - 1 : L - 1]
        nll += float(torch.nn.functional.cross_entropy(logits, row[0, p:L], reduction="sum"))
        count += L - p
    assert float(out["task_loss"]) == pytest.approx(nll / count, rel=1e-5)
    assert float(out["kd_loss"]) == 0.0 and float(out["loss"]) == pytest.approx(nll / count, rel=1e-5)
    junk = x.clone()
    junk[s["attention_mask"][idx] == 0] = 7  # padding is neither context nor target
    assert float(task(student, junk, None, idx)["loss"]) == pytest.approx(float(out["loss"]), rel=1e-6)
    whole = seqkd.SeqKDTask(model, s, kd_weight=0.0, include_prompt=True)(student, x, None, idx)["task_loss"]
    assert float(whole) != pytest.approx(float(out["task_loss"]), rel=1e-3)
    mask = seqkd.target_mask(torch.tensor([[1, 1, 1, 1, 0]]), torch.tensor([2]), include_prompt=False)
    assert mask.tolist() == [[False, True, True, False]]
    with pytest.raises(ValueError, match="needs idx"):
        task(student, x, None, None)


@torch.no_grad()
def test_topk_kd_equals_full_kd_when_k_is_the_vocabulary(teacher, seqs):
    model, tokenizer = teacher
    ids, mask, s = seqs
    student = lm.build_student(model, num_layers=1)
    idx = torch.arange(8)
    x = s["input_ids"][idx]
    live = seqkd.SeqKDTask(model, s, temperature=2.0, use_cache=False)(student, x, None, idx)
    cached = seqkd.SeqKDTask(None, s, temperature=2.0)(student, x, None, idx)
    assert float(cached["kd_loss"]) == pytest.approx(float(live["kd_loss"]), rel=2e-3)
    assert float(live["kd_loss"]) > 0.01
    small = seqkd.teacher_sequences(model, ids[:8], mask[:8], 12, logits_topk=2)
    assert torch.equal(small["input_ids"], s["input_ids"][:8, : small["input_ids"].shape[1]])
    top2 = seqkd.SeqKDTask(None, small, temperature=2.0)(student, small["input_ids"], None, idx)
    assert float(top2["kd_loss"]) != pytest.approx(float(live["kd_loss"]), rel=0.05)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = torch.softmax(logits, -1)[0]
    assert seqkd.topk_mass(logits, 2) == pytest.approx(float(p[:2].sum()))
    assert seqkd.topk_mass(logits, 2, temperature=100.0) == pytest.approx(0.5, abs=0.01)
    assert 0.5 < float(small["topk_mass"]) < 1.0


def test_seqkd_trains_a_student_on_the_teachers_sequences(teacher, seqs):
    model, _ = teacher
    _, _, s = seqs
    torch.manual_seed(0)
    student = lm.build_student(model, num_layers=1, hidden_size=16, heads=2)  # random: all to learn
    task = seqkd.SeqKDTask(model, s, temperature=2.0, kd_weight=0.5, ce_weight=1.0)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    idx = torch.arange(len(s["input_ids"]))
    losses = []
    student.train()
    for _ in range(15):
        out = task(student, s["input_ids"], None, idx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append((out["task_loss"].item(), out["kd_loss"].item()))
    assert losses[-1][0] < 0.6 * losses[0][0] and losses[-1][1] < 0.6 * losses[0][1]
    assert dict(task.named_parameters()) == {} and task.state_dict() == {}  # checkpoints hold no teacher


# ---------------------------------------------------------------- ONNX with a KV cache


@pytest.fixture(scope="module")
def exported(teacher, tmp_path_factory):
    model, tokenizer = teacher
    return kv_onnx.export(model, tokenizer, tmp_path_factory.mktemp("onnx") / "lm-onnx", opset=18, int8=True)


def test_kv_onnx_decodes_like_torch_on_a_bare_session(teacher, exported):
    model, tokenizer = teacher
    assert {p.name for p in exported.iterdir()} >= {"model.onnx", "model_quantized.onnx", "config.json",
                                                     "tokenizer.json"}
    runner = kv_onnx.OrtGreedy(exported / "model.onnx")
    assert len(runner.past) == 2 * model.config.n_layer and runner.has_positions
    prompts = [_text(1, 2), _text(9), _text(12, 13, 14, 15), _text(4, 5, 6)]
    assert kv_onnx.check_matches_torch(model, exported, prompts, max_new_tokens=12) == 1.0
    ids, mask = _prompt_batch(tokenizer, prompts)
    left_ids, left_mask = ids.clone(), mask.clone()
    for i, m in enumerate(mask):
        shift = int((m == 0).sum())
        left_ids[i], left_mask[i] = ids[i].roll(shift), m.roll(shift)
    eos = tokenizer.eos_token_id
    want = lm.greedy(model, left_ids, left_mask, 10, eos_token_id=eos)
    got = runner(left_ids.numpy(), left_mask.numpy(), 10, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    assert np.array_equal(got, want.numpy()) and (got == eos).any()  # batched, left-padded, stopping at EOS
    other = seqkd.teacher_sequences(lm.build_student(model, num_layers=1), ids, mask, 6)["input_ids"]
    assert kv_onnx.check_matches_torch(model, exported, [r[r != tokenizer.pad_token_id] for r in other], 8) == 1.0


def test_kv_onnx_directory_loads_in_optimum_and_the_int8_twin_runs(teacher, exported):
    import onnx
    from onnx import numpy_helper
    from optimum.onnxruntime import ORTModelForCausalLM

    model, tokenizer = teacher
    batch = tokenizer([_text(3, 4)], return_tensors="pt")
    want = lm.greedy(model, batch["input_ids"], batch["attention_mask"], 8)
    for file_name in ("model.onnx", "model_quantized.onnx"):
        ort_model = ORTModelForCausalLM.from_pretrained(exported, file_name=file_name)
        assert ort_model.use_cache
        got = ort_model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=None)[:, batch["input_ids"].shape[1]:]
        if file_name == "model.onnx":
            assert torch.equal(got, want)
        assert got.shape == (1, 8)
    ops = {n.op_type for n in onnx.load(str(exported / "model_quantized.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    weights = {f: sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(exported / f)).graph.initializer)
               for f in ("model.onnx", "model_quantized.onnx")}
    assert weights["model_quantized.onnx"] < 0.35 * weights["model.onnx"]  # int8 weights, tied table included
    share = kv_onnx.check_matches_torch(model, exported, [_text(i, i + 1) for i in range(0, 20, 4)], 8,
                                        file_name="model_quantized.onnx")
    assert share >= 0.8  # a confident teacher: int8 rounding flips few argmaxes
    ms = kv_onnx.time_per_token(exported / "model.onnx", batch["input_ids"], new_tokens=4, threads=1, runs=2)
    assert 0.0 < ms < 1000.0


def test_export_failure_is_refused(teacher, tmp_path):
    from edgedistill.errors import RefusedError

    model, tokenizer = teacher
    with pytest.raises(RefusedError, match="export bad: optimum's ONNX exporter failed"):
        kv_onnx.export(model, tokenizer, tmp_path / "bad", opset=1)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- speculative decoding


def test_speculative_decoding_is_the_targets_greedy_decoding(teacher):
    model, tokenizer = teacher
    torch.manual_seed(1)
    draft = lm.build_student(model, num_layers=2)
    random_draft = lm.build_student(model, num_layers=1, hidden_size=16, heads=2)
    eos = tokenizer.eos_token_id
    for text in (_text(1, 2), _text(10), _text(5, 6, 7, 8)):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        want = torch.cat([ids, lm.greedy(model, ids, max_new_tokens=20)], 1)
        assert torch.equal(speculative.greedy_cached(model, ids, 20), want)
        for d, k in ((draft, 1), (draft, 3), (random_draft, 4), (model, 4)):
            got, stats = speculative.speculative_greedy(model, d, ids, 20, k=k)
            assert torch.equal(got, want), (text, k)
            assert stats["tokens"] == 20 and stats["drafted"] >= stats["accepted"]
        _, same = speculative.speculative_greedy(model, model, ids, 20, k=4)
        assert same["acceptance_rate"] == 1.0 and same["target_calls"] == 4  # 5 tokens per target pass
        _, rnd = speculative.speculative_greedy(model, random_draft, ids, 20, k=4)
        assert rnd["acceptance_rate"] < 1.0 and rnd["target_calls"] > 4
        stop, _ = speculative.speculative_greedy(model, draft, ids, 20, k=3, eos_token_id=eos)
        assert torch.equal(stop, speculative.greedy_cached(model, ids, 20, eos_token_id=eos))
        assert stop[0, -1] == eos and stop.shape[1] < ids.shape[1] + 20  # the teacher ends its sentences
    with pytest.raises(ValueError, match="batch size 1"):
        speculative.speculative_greedy(model, draft, torch.ones(2, 3, dtype=torch.long), 4)


def test_speculative_decoding_on_onnx_runtime_sessions(teacher, exported):
    """The exported target verifies k drafted tokens in one pass over its fed-back cache, and the cache is
    cropped as arrays: the output is still the target's greedy decoding, whichever runtime drafts."""
    model, tokenizer = teacher
    target, int8_draft = kv_onnx.OrtGreedy(exported / kv_onnx.FP32_FILE), kv_onnx.OrtGreedy(exported / kv_onnx.INT8_FILE)
    torch.manual_seed(2)
    random_draft = lm.build_student(model, num_layers=1, hidden_size=16, heads=2)
    for text in (_text(1, 2), _text(5, 6, 7, 8)):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        want = torch.cat([ids, lm.greedy(model, ids, max_new_tokens=16)], 1)
        assert torch.equal(speculative.greedy_cached(target, ids, 16), want)
        for draft in (int8_draft, random_draft):
            got, stats = speculative.speculative_greedy(target, draft, ids, 16, k=4)
            assert torch.equal(got, want) and stats["tokens"] == 16
        assert stats["acceptance_rate"] < 1.0  # the random draft was corrected, and the output did not change
    _, same = speculative.speculative_greedy(target, target, ids, 16, k=3)
    assert same["acceptance_rate"] == 1.0 and same["target_calls"] == 4
    result = speculative.measure(target, int8_draft, [ids], max_new_tokens=8, k=2)
    assert result["identical"] and result["tokens_per_target_call"] > 1


def test_measure_compares_like_with_like(teacher):
    model, tokenizer = teacher
    prompts = [tokenizer(t)["input_ids"] for t in (_text(1, 2), _text(9, 10, 11))]
    torch.set_num_threads(2)
    try:
        result = speculative.measure(model, model, prompts, max_new_tokens=12, k=3, threads=1)
        assert torch.get_num_threads() == 2 and result["threads"] == 1  # set for the measurement only
    finally:
        torch.set_num_threads(1)
    assert result["identical"] and result["acceptance_rate"] == 1.0 and result["tokens_per_target_call"] == 4.0
    assert result["target_s"] > 0 and result["speculative_s"] > 0
    assert result["speedup"] == pytest.approx(result["target_s"] / result["speculative_s"])


def test_corpus_splits_and_prompts(tmp_path):
    np.savez(tmp_path / "s.npz", x_train=np.array(["w1 w2 w3 ", "", "w4"]), x_test=np.array(["w5 w6"]),
             y_train=np.array([0, 1, 0]))
    assert corpus.load_sentences(tmp_path / "s.npz") == ["w1 w2 w3", "w4"]
    assert corpus.load_sentences(tmp_path / "s.npz", "test") == ["w5 w6"]
    with pytest.raises(UserError, match=r"data.train: s.npz has no x_valid"):
        corpus.load_sentences(tmp_path / "s.npz", "valid")
    with pytest.raises(UserError, match=r"data.train: .*missing.npz not found"):
        corpus.load_sentences(tmp_path / "missing.npz")
    tokenizer = corpus.train_tokenizer(_sentences(50, 1), vocab_size=280)
    ids, mask = corpus.encode(tokenizer, ["w1 w2 w3", "w4"], max_length=16)
    assert ids[0, int(mask[0].sum()) - 1] == tokenizer.eos_token_id and ids[1, -1] == tokenizer.pad_token_id
    assert tokenizer.decode(ids[0][mask[0].bool()], skip_special_tokens=True) == "w1 w2 w3"
    p_ids, p_mask, rows = corpus.prompts(ids, mask, 2)
    assert rows.tolist() == [0] + ([1] if mask[1].sum() > 2 else []) and p_ids.shape[1] == 2
    assert torch.equal(p_ids[0], ids[0, :2]) and bool(p_mask.all())


# ---------------------------------------------------------------- the lm-seqkd recipe through the pipeline


@pytest.fixture(scope="module")
def lm_run(teacher_dir, tmp_path_factory):
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe
    from edgedistill.targets import load_target

    d = tmp_path_factory.mktemp("lm-run")
    np.savez(d / "texts.npz", x_train=np.array(_sentences(200, 1)), x_test=np.array(_sentences(40, 2)))
    sets = [f"teacher.path={teacher_dir}", f"data.train={d / 'texts.npz'}", "data.max_length=16",
            "stages.distill.epochs=3", "stages.distill.lr=0.003", "stages.distill.sequence.prompt_tokens=2",
            "stages.distill.sequence.max_new_tokens=8", "stages.distill.sequence.logits_topk=8",
            "stages.bench.speculative_prompts=4"]
    target = load_target("x86-avx2")
    state = pipeline.run(load_recipe("lm-seqkd", sets), target, d / "out", quiet=True)
    return state, d / "out", sets, target


@pytest.mark.slow
def test_lm_recipe_distills_on_teacher_sequences_and_skips_what_does_not_apply(lm_run):
    import json

    state, out, _, _ = lm_run
    r = state.records
    assert "prune" not in r and "qat" not in r
    seq = r["distill"]["sequence_kd"]
    assert seq["sequences"] > 150 and 0 < seq["mean_new_tokens"] <= 8 and 0.5 < seq["topk_mass"] <= 1.0
    # it learned the teacher: held-out perplexity moves from the fresh half-depth student's towards the teacher's
    assert r["teacher"]["perplexity"] < r["distill"]["perplexity"] < r["student"]["perplexity"]
    assert r["student"]["params"] < r["teacher"]["params"] and r["student"]["macs"] < r["teacher"]["macs"]
    assert 0 <= r["distill"]["generation_agreement"] <= 1 and r["distill"]["perplexity"] > 1
    assert (out / "03-distill" / "sequences.pt").exists()
    report = json.loads((out / "report.json").read_text())
    assert any(n.startswith("causal language model:") for n in report["notes"])
    assert any(n.startswith("speculative decoding") and "ONNX Runtime" in n for n in report["notes"])


@pytest.mark.slow
def test_lm_recipe_exports_kv_cache_onnx_that_decodes_as_torch_and_benches_speculation(lm_run):
    state, out, _, _ = lm_run
    arts = state.records["export"]["artifacts"]
    assert [(a["role"], a["kind"]) for a in arts] == [("teacher", "onnx-fp32"), ("student", "onnx-fp32"),
                                                       ("student", "onnx-int8")]
    assert all(p["top1_agreement"] >= 0.99 for p in state.records["export"]["parity"][:2])
    bench = {b["path"]: b for b in state.records["bench"]["artifacts"]}
    student_fp32 = bench[arts[1]["path"]]
    assert student_fp32["accuracy"] == pytest.approx(state.records["distill"]["accuracy"], abs=0.01)
    assert all(b["latency_ms"]["p50"] > 0 for b in bench.values())
    for key in ("speculative", "speculative_onnx"):  # torch eager, and the exported files on ORT
        spec = state.records["bench"][key]
        assert spec["identical"] and 0 <= spec["acceptance_rate"] <= 1 and spec["prompts"] == 4
        assert 1 <= spec["tokens_per_target_call"] <= 5  # k = 4 drafted, plus the teacher's own


@pytest.mark.slow
def test_lm_run_resumes_with_the_teacher_sequences_kept(lm_run):
    from edgedistill import pipeline
    from edgedistill.recipe import load_recipe

    state, out, sets, target = lm_run
    kept = (out / "03-distill" / "done.json").read_text()
    again = pipeline.run(load_recipe("lm-seqkd", [*sets, "stages.bench.speculative_k=2"]), target, out, quiet=True)
    assert (out / "03-distill" / "done.json").read_text() == kept
    assert again.records["bench"]["speculative"]["k"] == 2
    assert again.records["distill"]["accuracy"] == state.records["distill"]["accuracy"]


@pytest.mark.parametrize("override, message", [
    (["student.arch=hf"], "dataset 'lm' needs teacher.arch and student.arch 'hf-lm'"),
    (["teacher.finetune=true"], "finetune applies to arch 'hf', 'timm', 'torchvision' and 'hf-vision' only"),
])
def test_lm_recipe_errors_name_the_field(teacher_dir, tmp_path, override, message):
    from edgedistill.recipe import load_recipe

    np.savez(tmp_path / "t.npz", x_train=np.array(["alfa bravo"]))
    with pytest.raises(UserError, match=message):
        load_recipe("lm-seqkd", [f"teacher.path={teacher_dir}", f"data.train={tmp_path / 't.npz'}", *override])
