"""One suite over every registered exporter and the runtime it names: for each task an exporter serves, a tiny
model and held-out set built here (nothing downloaded) are exported the way the export stage does, each
artifact's record and file are checked against what the exporter declares, and the artifact is loaded, run and
timed with its runtime (bench's figures). A runtime this machine lacks (Core ML off macOS, a phone over adb)
skips with its reason; the export and the record checks still run. A new exporter is picked up from the
registry."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgedistill import exporters
from edgedistill.exporters import EXPORTERS
from edgedistill.exporters.job import ExportJob
from edgedistill.models import ModelHandle, ModelSpec
from edgedistill.pipeline import State
from edgedistill.recipe import load_recipe
from edgedistill.runtimes import RUNTIMES, BenchJob
from edgedistill.targets import load_target
from tests.helpers import SPEC, batch, cnn

TARGET = "pixel-8"  # int8, ships .ort: every classifier format is written for it
RECORD_KEYS = {"role", "kind", "path", "size_bytes", "precision"}
FAST = ["stages.bench.warmup=1", "stages.bench.repeats=3"]


def _image(tmp):
    x, y = batch(120, seed=3)
    data = SimpleNamespace(x_train=batch(256, seed=1)[0], y_train=None, x_test=x, y_test=y, spec=SPEC)
    return load_recipe("digits", FAST), data, cnn(seed=0), cnn((8, 16, 16), seed=1)


def _text(tmp):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from edgedistill.models import hf

    d = tmp / "bert"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(40)]]))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=45, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(d)
    spec = ModelSpec(task="text-classification", input_shape=(16,), num_classes=2, labels=("neg", "pos"),
                     mean=(), std=(), pad_id=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 45, (80, 16), generator=g)
    x[:, 10:] = 0  # padded
    data = SimpleNamespace(x_train=x, y_train=None, x_test=x, y_test=torch.randint(0, 2, (80,), generator=g), spec=spec)
    # a permissive int8 floor: an untrained transformer's logits are near-ties
    (tmp / "train.csv").write_text("text,label\nw1 w2,pos\nw3,neg\n")  # the recipe names one; nothing reads it here
    recipe = load_recipe("text-classification", [f"teacher.path={d}", f"data.train={tmp / 'train.csv'}", "stages.export.int8_min_agreement=0.5", *FAST])
    handles = [ModelHandle(hf.load_classifier(d, spec.labels, 0), spec, "hf", []) for _ in range(2)]
    return recipe, data, *handles


def _causal_lm(tmp):
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgedistill.generative import corpus, lm

    words = "alfa bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike".split()
    sentences = [" ".join(words[s : s + n]) for s in range(8) for n in range(3, 6)] * 4
    tokenizer = corpus.train_tokenizer(sentences, vocab_size=300)
    ids, mask = corpus.encode(tokenizer, sentences, max_length=16)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):  # a pattern learnt, so that greedy decoding has no near-ties
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp / "gpt2"
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    teacher, _ = lm.load_causal_lm(d)
    spec = ModelSpec(task="text-generation", input_shape=(16,), num_classes=len(tokenizer), labels=(), mean=(), std=(),
                     pad_id=tokenizer.pad_token_id)
    data = SimpleNamespace(x_train=ids, y_train=mask.sum(1), x_test=ids[:24], y_test=mask[:24].sum(1), spec=spec)
    (tmp / "train.txt").write_text("\n".join(sentences))  # the recipe names one; nothing reads it here
    recipe = load_recipe("lm-seqkd", [f"teacher.path={d}", f"data.train={tmp / 'train.txt'}", "stages.export.int8_min_agreement=0.5",
                                      "stages.bench.speculative_prompts=2", *FAST])
    return recipe, data, ModelHandle(teacher, spec, "hf-lm", []), ModelHandle(lm.load_causal_lm(d)[0], spec, "hf-lm", [])


BUILDERS = {"image-classification": _image, "text-classification": _text, "text-generation": _causal_lm}
PAIRS = [(e.name, task) for e in EXPORTERS for task in e.tasks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per task: the export stage's work, every exporter of the task in registry order (a converter's source
    is written first), built once."""
    runs = {}

    def run(task):
        if task not in runs:
            tmp = tmp_path_factory.mktemp(task)
            recipe, data, teacher, student = BUILDERS[task](tmp)
            out = tmp / "run"
            (out / "07-export").mkdir(parents=True)
            ctx = SimpleNamespace(recipe=recipe, target=load_target(TARGET), data=data, out=out, log=lambda m: None,
                                  cache={})
            state = State(teacher=teacher, student=student)
            job = ExportJob(ctx, state, out / "07-export")
            written = {}
            for exporter in exporters.serving(task):
                if not exporter_installed(exporter):
                    continue
                written[exporter.name] = list(exporter.export(job))
                job.artifacts += written[exporter.name]
            runs[task] = ctx, state, job, written
        return runs[task]

    return run


def exporter_installed(exporter) -> bool:
    """False for a format whose optional package (its extra) is absent: it can neither write nor run its files."""
    runtime = RUNTIMES.get(exporter.runtime)
    return runtime.available() or exporter.runtime not in OPTIONAL_RUNTIMES


OPTIONAL_RUNTIMES = ("executorch", "litert")  # pyproject.toml's extras; scripts/setup.sh installs both


def test_registry_names_match_and_runtimes_are_registered():
    for exporter in EXPORTERS:
        assert EXPORTERS.get(exporter.name) is exporter
        assert exporter.runtime in RUNTIMES and exporter.tasks and exporter.kinds and exporter.suffix
        assert exporter.device_runtime is None or exporter.device_runtime in RUNTIMES
        assert set(exporter.tasks) <= set(BUILDERS), f"{exporter.name}: add a tiny model for its task here"
    for runtime in RUNTIMES:
        assert RUNTIMES.get(runtime.name) is runtime


@pytest.mark.parametrize("name, task", PAIRS, ids=[f"{n}-{t}" for n, t in PAIRS])
def test_exporter_writes_what_it_declares_and_its_runtime_runs_it(exported, name, task):
    ctx, state, job, written = exported(task)
    exporter = EXPORTERS.get(name)
    if not exporter_installed(exporter):
        pytest.skip(RUNTIMES.get(exporter.runtime).unavailable)
    artifacts = written[name]
    assert artifacts, f"{name} wrote nothing"
    records = [a.record(ctx.out) for a in job.artifacts]
    for artifact in artifacts:
        record = artifact.record(ctx.out)
        assert RECORD_KEYS <= set(record) and record["kind"] in exporter.kinds
        assert record["size_bytes"] > 0 and (ctx.out / record["path"]).exists()
        assert Path(record["path"]).suffix == exporter.suffix
        assert artifact.exporter == name and artifact.runtime == exporter.runtime
        assert artifact.parity or not RUNTIMES.get(artifact.runtime).available()  # judged where it can run
        # bench rebuilds the artifacts from the stage's records (also after a resume)
        restored = exporters.restore(records, task, ctx.out)[job.artifacts.index(artifact)]
        assert restored.record(ctx.out) == record and restored.file == artifact.file
    assert set(exporter.usage(job.spec)) <= set(exporters.usage(task, job.spec))

    runtime = RUNTIMES.get(exporter.runtime)
    if not runtime.available():
        pytest.skip(f"{runtime.name}: {runtime.unavailable}")
    bench = BenchJob(ctx, state, threads=1, kind="measured-host")
    for artifact in artifacts:
        entry = runtime.bench(artifact, bench)
        assert entry["latency_ms"]["p50"] > 0 and 0 <= entry["accuracy"] <= 1
        if task != "text-generation":  # a classifier's outputs against torch's
            torch_logits = job.torch_logits(artifact.role)
            outputs = runtime.outputs(artifact, job.x.numpy(), job.spec)
            agreement = float((outputs.argmax(-1) == torch_logits.argmax(-1)).mean())
            assert agreement >= (0.8 if artifact.int8 else 0.99), (artifact.path.name, agreement)
            if precision_is_fp32(artifact) and outputs.shape == torch_logits.shape:
                assert np.abs(outputs - torch_logits).max() <= ctx.recipe.stages.export.fp32_max_abs * 10
    runtime.bench_run(bench)
    if exporter.device_runtime:
        pytest.skip(f"{exporter.device_runtime}: timing on a device needs an attached phone")


def precision_is_fp32(artifact) -> bool:
    return artifact.precision == "fp32" and artifact.file.suffix in (".onnx", ".ort")


@pytest.mark.parametrize("task, target, required", [
    ("image-classification", "pixel-8", "ort"), ("image-classification", "iphone-15-pro", "coreml"),
    ("image-classification", "x86-avx2", "onnx"), ("text-generation", "pixel-8", "onnx"),
    ("image-classification", "pixel-8-executorch", "executorch"), ("image-classification", "pixel-8-litert", "litert"),
    ("image-classification", "iphone-15-pro-executorch", "executorch")])
def test_the_targets_own_format_is_required(task, target, required):
    assert exporters.required_format(task, load_target(target)) == required


def test_exporters_run_in_their_builtin_order_whatever_was_imported_first():
    import edgedistill.exporters.ort_mobile  # noqa: F401 (imported before the registry loads, as a test may)

    order = [e.name for e in exporters.serving("text-classification")]
    assert order == ["onnx-fp32", "hf-onnx", "onnx-int8", "ort", "coreml"]
