"""Hugging Face text classifiers end to end, on tiny random BERT configs built here (nothing downloaded):
data files, DistilBERT-style students, TinyBERT layer terms, head/FFN pruning, and the exports."""

import csv
import json
import random

import numpy as np
import pytest
import torch

from edgedistill import pipeline
from edgedistill.data import load_data
from edgedistill.errors import UserError
from edgedistill.recipe import load_recipe
from edgedistill.targets import load_target

WORDS = [f"w{i}" for i in range(60)]


def _write_teacher(d, layers=4, head=False):
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", *WORDS]))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=67, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    (BertForSequenceClassification if head else BertModel)(config).save_pretrained(d)
    return d


def _write_split(path, n, seed):
    """Sentences of random words with one 'good' (label pos) or 'bad' (neg): learnable, not trivial to
    a model that ignores positions of the one word that matters."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(["sentence", "label"])
        for _ in range(n):
            positive = rng.random() < 0.5
            words = rng.choices(WORDS, k=rng.randint(3, 12))
            words.insert(rng.randrange(len(words)), "good" if positive else "bad")
            writer.writerow([" ".join(words), "pos" if positive else "neg"])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return {"teacher": _write_teacher(root / "encoder"), "train": _write_split(root / "train.csv", 600, 0),
            "test": _write_split(root / "test.tsv", 200, 1)}


def _sets(files, *extra):
    return [f"teacher.path={files['teacher']}", f"data.train={files['train']}", f"data.test={files['test']}",
            "data.text_column=sentence", "data.max_length=32", "data.batch_size=32",
            "stages.teacher.epochs=6", "stages.teacher.lr=0.002", "stages.distill.epochs=4",
            "stages.distill.lr=0.002", "stages.prune.lr=0.001", *extra]


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = load_recipe("text-classification", _sets(files))
    state = pipeline.run(recipe, load_target("x86-avx2"), out, quiet=True)
    return out, state, json.loads((out / "report.json").read_text())


# ---------------------------------------------------------------- data


def test_text_files_are_read_and_tokenized_with_the_teachers_tokenizer(files, tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"sentence": "good w1 w2", "label": 1}\n{"sentence": "bad w3", "label": 0}\n' * 10)
    recipe = load_recipe("text-classification", [f"teacher.path={files['teacher']}", f"data.train={jsonl}",
                                                 "data.text_column=sentence", "data.max_length=8",
                                                 "data.test_fraction=0.5"])
    data = load_data(recipe.data, 0, tokenizer_dir=recipe.teacher.path)
    assert data.x_train.dtype == torch.long and tuple(data.x_train.shape) == (10, 8)
    assert data.spec.is_text and data.spec.pad_id == 0 and data.spec.labels == ("0", "1")
    row = data.x_train[0].tolist()
    assert row[0] == 2 and 3 in row and row[-1] == 0  # [CLS] ... [SEP] then padding
    csv_data = load_data(load_recipe("text-classification", _sets(files)).data, 0, tokenizer_dir=files["teacher"])
    assert csv_data.spec.labels == ("neg", "pos") and len(csv_data.y_train) == 600 and len(csv_data.y_test) == 200
    good = csv_data.x_train[csv_data.y_train == 1]
    assert bool((good == 5).any(1).all())  # every positive sentence holds the token 'good' (id 5)


def test_text_data_errors_name_the_field(files, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("words,label\nw1,0\n")
    recipe = load_recipe("text-classification", [f"teacher.path={files['teacher']}", f"data.train={bad}"])
    with pytest.raises(UserError, match=r"data.train: bad.csv has no column 'text' \(columns: words, label\); set data.text_column"):
        load_data(recipe.data, 0, tokenizer_dir=recipe.teacher.path)
    np.savez(tmp_path / "s.npz", x_train=np.array(["good w1", "bad w2"] * 5), y_train=np.array([1, 0] * 5),
             x_test=np.array(["good", "bad"]), y_test=np.array([1, 0]))
    recipe = load_recipe("text-classification", [f"teacher.path={files['teacher']}", f"data.train={tmp_path / 's.npz'}",
                                                 "data.max_length=16"])
    data = load_data(recipe.data, 0, tokenizer_dir=recipe.teacher.path)
    assert len(data.y_train) == 10 and data.y_test.tolist() == [1, 0]
    with pytest.raises(UserError, match=r"teacher.path: .* has no config.json"):
        load_data(recipe.data, 0, tokenizer_dir=tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["teacher.arch=hf", "teacher.channels=null", "teacher.path=."], "arch 'hf' needs data.dataset 'text'"),
    (["student.layers=2"], "layers applies to arch 'hf', 'hf-lm' and 'hf-vision' only"),
    (["teacher.finetune=true"], "finetune applies to arch 'hf', 'timm', 'torchvision' and 'hf-vision' only"),
])
def test_recipe_keeps_text_and_hf_together(overrides, message):
    with pytest.raises(UserError, match=message):
        load_recipe("digits", overrides)


# ---------------------------------------------------------------- models


def test_student_starts_from_every_other_teacher_layer(files):
    from edgedistill.models import hf

    teacher = hf.load_classifier(files["teacher"], ["neg", "pos"], 0)
    student = hf.build_student(teacher, num_layers=2, init_layers=None, hidden_size=None, heads=None,
                               intermediate_size=None)
    assert hf.uniform_map(12, 6) == [0, 2, 4, 6, 8, 10]
    assert student.hf.config.num_hidden_layers == 2
    t_layers, s_layers = hf.layers(teacher.hf), hf.layers(student.hf)
    assert torch.equal(s_layers[1].output.dense.weight, t_layers[2].output.dense.weight)
    assert torch.equal(student.hf.classifier.weight, teacher.hf.classifier.weight)
    narrow = hf.build_student(teacher, num_layers=2, init_layers=None, hidden_size=16, heads=2, intermediate_size=32)
    assert hf.shape(narrow) == {"heads": [2, 2], "intermediate_size": 32, "layers": 2, "hidden_size": 16}
    with pytest.raises(UserError, match=r"student.init_layers: \[0, 7\] names a layer the teacher lacks"):
        hf.build_student(teacher, num_layers=None, init_layers=[0, 7], hidden_size=None, heads=None,
                         intermediate_size=None)


def test_trailing_padding_cut_in_eager_mode_does_not_change_logits(files):
    from edgedistill.models import hf

    model = hf.load_classifier(files["teacher"], ["neg", "pos"], 0).eval()
    ids = torch.randint(5, 67, (3, 24))
    ids[0, 10:] = 0
    ids[1:, 16:] = 0
    with torch.no_grad():
        full = model.hf(input_ids=ids, attention_mask=(ids != 0).long()).logits
        assert torch.allclose(model(ids), full, atol=1e-5)


def test_macs_count_the_attention_matmuls(files):
    from edgedistill.models import hf

    model = hf.load_classifier(files["teacher"], ["neg", "pos"], 0)
    h, i, L, layers = 32, 64, 16, 4
    per_layer = 4 * L * h * h + 2 * L * h * i + 2 * L * L * h
    assert hf.transformer_macs(model, L) == layers * per_layer + h * h + h * 2  # + pooler and head on one token


def test_heads_and_ffn_pruned_model_reloads_with_from_pretrained(files, tmp_path):
    from edgedistill import head_pruning
    from edgedistill.models import hf

    model = hf.load_classifier(files["teacher"], ["neg", "pos"], 0).eval()
    pruned = head_pruning.prune_copy(model, 0.5, importance="l2", round_to=8, global_pruning=False).eval()
    shape = hf.shape(pruned)
    assert shape["heads"] == [2, 2, 2, 2] and shape["intermediate_size"] == 32
    assert hf.transformer_macs(pruned, 16) < 0.6 * hf.transformer_macs(model, 16)
    pruned.hf.save_pretrained(tmp_path / "p")
    reloaded = hf.load_classifier(tmp_path / "p", ["neg", "pos"], 0).eval()
    ids = torch.randint(5, 67, (2, 12))
    assert torch.allclose(pruned(ids), reloaded(ids), atol=1e-6)
    # a second round numbers heads as in the unpruned model (transformers' convention), and global
    # ranking keeps at least one head per layer
    again = head_pruning.prune_copy(pruned, 0.9, importance="taylor", round_to=8, global_pruning=True,
                                    calibration=(ids, torch.tensor([0, 1]))).eval()
    assert all(h >= 1 for h in hf.shape(again)["heads"]) and sum(hf.shape(again)["heads"]) < 8
    fresh = hf.load_classifier(files["teacher"], ["neg", "pos"], 0)
    from edgedistill.pruning import reshape_to

    reshape_to(fresh, again.state_dict())
    assert torch.allclose(fresh.eval()(ids), again(ids), atol=1e-6)


def test_layer_match_maps_student_layers_onto_teacher_blocks(files):
    from edgedistill.distill import DistillationTask
    from edgedistill.distill.features import transformer_layer_terms
    from edgedistill.models import hf
    from edgedistill.recipe import LayerMatch

    teacher = hf.load_classifier(files["teacher"], ["neg", "pos"], 0)
    student = hf.build_student(teacher, num_layers=2, init_layers=None, hidden_size=16, heads=2,
                               intermediate_size=32)
    terms = transformer_layer_terms(LayerMatch(), student, teacher, "stages.distill")
    pairs = [(t.student, t.teacher, t.kind) for t in terms]
    assert ("hf.bert.encoder.layer.0", "hf.bert.encoder.layer.1", "fitnet") in pairs
    assert ("hf.bert.encoder.layer.1.attention.self", "hf.bert.encoder.layer.3.attention.self", "attention_probs") in pairs
    assert ("hf.bert.embeddings", "hf.bert.embeddings", "fitnet") in pairs and len(terms) == 5
    with pytest.raises(UserError, match=r"stages.distill.layer_match.mapping: \[0\] needs one teacher layer"):
        transformer_layer_terms(LayerMatch(mapping=[0]), student, teacher, "stages.distill")
    ids = torch.randint(5, 67, (4, 12))
    task = DistillationTask(teacher, 2.0, 0.5, 0.5, student=student, features=terms, example_input=ids)
    student.train()
    losses = task(student, ids, torch.tensor([0, 1, 0, 1]))
    probs = task._taps[0].outputs["hf.bert.encoder.layer.0.attention.self", "attention_probs"]
    assert tuple(probs.shape) == (4, 2, 12, 12) and torch.allclose(probs.sum(-1), torch.ones(4, 2, 12))
    assert all(torch.isfinite(v).all() and v.item() >= 0 for k, v in losses.items() if k != "output")
    losses["loss"].backward()
    assert all(p.grad is not None for p in task.projections.parameters())  # 32 -> 16 widths: projected
    task.close()


# ---------------------------------------------------------------- the whole run


@pytest.mark.slow
def test_tiny_bert_compresses_to_a_shallower_student_that_optimum_loads(run, files):
    out, state, report = run
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["teacher"]["source"].startswith("fine-tuned from")  # an encoder without a head
    assert stages["teacher"]["transformer"]["layers"] == 4 and stages["student"]["transformer"]["layers"] == 2
    assert stages["teacher"]["accuracy"] >= 0.9 and stages["prune"]["accuracy"] >= 0.9
    assert stages["prune"]["macs"] <= 0.75 * stages["distill"]["macs"]
    assert "qat" not in stages
    kinds = {a["kind"]: a for a in report["artifacts"] if a["role"] == "student"}
    assert set(kinds) >= {"onnx-fp32", "onnx-int8", "hf-onnx", "ort", "coreml"}
    assert kinds["onnx-int8"]["quantization"] == "dynamic-ort"
    assert set(kinds["onnx-int8"]["integer_kernels"]) & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert kinds["coreml"]["coreml"]["input"] == {"name": "input_ids", "type": "multiArrayType", "shape": [1, 32],
                                                  "dtype": "INT32"}

    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    directory = out / kinds["hf-onnx"]["path"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    sentences = ["w1 good w2 w3", "w4 bad", "w9 w8 w7 good"]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    expected = state.student.module.eval()(batch["input_ids"]).detach()
    for file_name, tol in (("model.onnx", 1e-4), ("model_quantized.onnx", 0.1)):
        model = ORTModelForSequenceClassification.from_pretrained(directory, file_name=file_name)
        got = model(**batch).logits
        assert torch.allclose(got, expected, atol=tol), file_name
    assert model.config.num_hidden_layers == 2 and model.config.id2label == {0: "neg", 1: "pos"}


@pytest.mark.slow
def test_text_run_resumes_and_reports_token_inputs(run, files):
    out, _, report = run
    state = pipeline.run(load_recipe("text-classification", _sets(files)), load_target("x86-avx2"), out, quiet=True)
    assert state.records["prune"]["accuracy"] == {s["name"]: s for s in report["stages"]}["prune"]["accuracy"]
    assert report["usage"]["inputs"] == [{"name": "input", "shape": ["batch", 32], "dtype": "int64"}]
    assert report["usage"]["pad_id"] == 0
    page = (out / "report.html").read_text()
    assert "MLMultiArray(shape: [1, 32], dataType: .int32)" in page and "LongBuffer.allocate(1 * 32)" in page


def test_depth_pruned_transformer_reloads_with_from_pretrained(files, tmp_path):
    from edgedistill import head_pruning
    from edgedistill.depth_pruning import prune_blocks
    from edgedistill.errors import UserError
    from edgedistill.models import ModelSpec, count_macs_params, hf
    from edgedistill.pruning import reshape_to

    model = hf.load_classifier(files["teacher"], ["neg", "pos"], 0).eval()
    head_pruned = head_pruning.prune_copy(model, 0.5, importance="l2", round_to=1, global_pruning=True).eval()  # heads differ per layer
    spec = ModelSpec(task="text-classification", input_shape=(16,), num_classes=2, labels=("neg", "pos"),
                     mean=(), std=())
    ids = torch.randint(5, 67, (8, 16))
    base_macs = count_macs_params(head_pruned, spec)[0]
    pruned = prune_blocks(head_pruned, spec, max_macs=0.6 * base_macs, ignore=["hf.bert.encoder.layer.3"],
                          calibration=(ids,)).eval()
    heads = hf.shape(head_pruned)["heads"]
    assert count_macs_params(pruned, spec)[0] <= 0.6 * base_macs and hf.shape(pruned)["layers"] == 2
    assert hf.shape(pruned)["heads"][-1] == heads[3]  # the ignored last layer stayed, renumbered
    assert hf.shape(pruned)["heads"] in ([heads[i], heads[3]] for i in range(3))
    pruned.hf.save_pretrained(tmp_path / "p")
    reloaded = hf.load_classifier(tmp_path / "p", ["neg", "pos"], 0).eval()
    assert torch.allclose(pruned(ids), reloaded(ids), atol=1e-6)
    fresh = hf.load_classifier(files["teacher"], ["neg", "pos"], 0)
    reshape_to(fresh, pruned.state_dict())
    assert torch.allclose(fresh.eval()(ids), pruned(ids), atol=1e-6)
    with pytest.raises(UserError, match="cannot be reached by removing blocks"):  # one layer always stays
        prune_blocks(model, spec, max_macs=1, calibration=(ids,))
