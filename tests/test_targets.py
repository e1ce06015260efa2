import pytest

from edgedistill.errors import UserError
from edgedistill.targets import available, load_target


def test_required_profiles_exist_and_validate():
    names = set(available())
    assert {"iphone-15-pro", "pixel-8", "raspberry-pi-5", "x86-avx2", "x86-avx512-vnni"} <= names
    for name in names:
        p = load_target(name)
        assert p.name == name and p.channel_multiple >= 1 and p.threads >= 1


def test_profile_facts():
    iphone, pixel = load_target("iphone-15-pro"), load_target("pixel-8")
    assert (iphone.runtime, iphone.compute_unit, iphone.precision) == ("coreml", "ane", "w8a8")
    assert (pixel.runtime, pixel.arch, pixel.precision, pixel.threads) == ("ort-mobile", "arm64", "int8", 4)
    assert not iphone.runs_on_host() and not pixel.runs_on_host()


def test_unknown_target_suggests(tmp_path):
    with pytest.raises(UserError, match="did you mean 'pixel-8'"):
        load_target("pixel8")
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nruntime: tflite\narch: arm64\nprecision: int8\n")
    with pytest.raises(UserError, match=r"runtime: input should be"):
        load_target(bad)


@pytest.mark.parametrize("machine, flags, block", [("x86_64", {"avx2", "avx512f"}, 16), ("x86_64", {"avx2"}, 8),
                                                    ("x86_64", {"sse4_2"}, None), ("aarch64", {"neon"}, None)])
def test_host_conv_block(monkeypatch, machine, flags, block):
    from edgedistill import targets

    monkeypatch.setattr(targets.platform, "machine", lambda: machine)
    monkeypatch.setattr(targets, "host_cpu_flags", lambda: flags)
    assert targets.host_conv_block() == block
