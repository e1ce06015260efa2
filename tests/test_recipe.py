import pytest

from edgedistill.errors import UserError
from edgedistill.recipe import builtin_names, builtin_text, load_recipe


def test_builtin_digits_loads_with_all_stages():
    r = load_recipe("digits")
    assert "digits" in builtin_names()
    assert r.stages.distill.epochs > 0 and r.stages.prune.enabled and r.stages.qat.enabled
    assert r.teacher.channels != r.student.channels


def test_override_is_type_checked_and_applied():
    r = load_recipe("digits", ["stages.distill.epochs=3", "stages.prune.macs_ratio=0.4", "stages.qat.enabled=false"])
    assert r.stages.distill.epochs == 3 and r.stages.prune.macs_ratio == 0.4 and not r.stages.qat.enabled
    with pytest.raises(UserError, match=r"stages\.distill\.epochs: .*integer.*'abc'"):
        load_recipe("digits", ["stages.distill.epochs=abc"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("stages.distil.epochs=3", r"stages\.distil: unknown key; did you mean 'distill'\?"),
        ("stages.distill.temprature=2", r"did you mean 'temperature'"),
        ("stages.distill.epochs", r"expected KEY=VALUE"),
        ("seed.x=1", r"'seed' is a value, not a section"),
        ("stages.prune.macs_ratio=1.5", r"stages\.prune\.macs_ratio"),
        ("stages.teacher.enabled=false", r"cannot be disabled"),
        ("data.dataset=npz", r"needs data\.path"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(UserError, match=message):
        load_recipe("digits", [override])


def test_recipe_file_errors(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_recipe(empty)
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: {arch: cnn\nstudent: [")
    with pytest.raises(UserError, match=r"line \d+, column \d+: invalid YAML"):
        load_recipe(bad)
    with pytest.raises(UserError, match="no such file or built-in recipe"):
        load_recipe(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text(builtin_text("digits").replace("teacher:\n  arch", "teachr:\n  arch"))
    with pytest.raises(UserError, match=r"teachr: unknown key; did you mean 'teacher'"):
        load_recipe(typo)


def test_yaml_tags_never_execute(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("seed: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_recipe(evil)
    assert not (tmp_path / "pwned").exists()


def test_paths_resolve_relative_to_the_recipe(tmp_path):
    import numpy as np

    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64))
    text = builtin_text("digits").replace("dataset: digits ", "dataset: npz\n  path: sub/d.npz ")
    (tmp_path / "r.yaml").write_text(text)
    r = load_recipe(tmp_path / "r.yaml")
    assert r.data.path == (tmp_path / "sub" / "d.npz").resolve()
    (tmp_path / "r2.yaml").write_text(text.replace("sub/d.npz", "nope.npz"))
    with pytest.raises(UserError, match=r"data\.path: nope\.npz does not exist"):
        load_recipe(tmp_path / "r2.yaml")


def test_fingerprint_tracks_stage_config():
    a, b = load_recipe("digits"), load_recipe("digits", ["stages.distill.epochs=2"])
    assert a.stage_fingerprint("teacher") == b.stage_fingerprint("teacher")
    assert a.stage_fingerprint("distill") != b.stage_fingerprint("distill")


def test_builtin_paper_recipes_validate_with_a_data_path(tmp_path):
    import numpy as np

    data = tmp_path / "d.npz"
    np.savez(data, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4, np.int64))
    mnist = load_recipe("mnist-hinton", [f"data.path={data}"])
    assert (mnist.teacher.channels, mnist.student.channels, mnist.stages.distill.temperature) == ([1200, 1200], [800, 800], 20.0)
    assert mnist.stages.teacher.augment.crop_padding == 2 and mnist.stages.distill.augment is None
    assert mnist.stages.teacher.augment.elastic_alpha > 0 and mnist.stages.teacher.augment.fill == "edge"
    cifar = load_recipe("cifar10-resnet", [f"data.path={data}"])
    assert (cifar.teacher.arch, cifar.student.arch) == ("resnet56", "resnet20") and cifar.data.augment.flip
    with pytest.raises(UserError, match=r"student: unknown arch 'resnet21'; did you mean 'resnet\d+'\?"):
        load_recipe("cifar10-resnet", [f"data.path={data}", "student.arch=resnet21"])
    with pytest.raises(UserError, match="has fixed widths; remove channels"):
        load_recipe("cifar10-resnet", [f"data.path={data}", "student.channels=[8]"])
    with pytest.raises(UserError, match="feature terms are not supported in QAT"):
        load_recipe("digits", ["stages.qat.features=[{student: a, teacher: b}]"])
