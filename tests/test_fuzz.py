"""Whatever a user types into a recipe or `--set`, the answer is a result or one UserError, never a traceback."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedistill.errors import UserError
from edgedistill.recipe import Recipe, load_recipe
from edgedistill.schema import parse_yaml, validate

KEYS = st.sampled_from(["seed", "device", "data.batch_size", "data.dataset", "stages.distill.epochs",
                        "stages.distill.temperature", "stages.prune.macs_ratio", "stages.prune.importance",
                        "teacher.arch", "student.channels", "stages.export.formats", "stages.qat.enabled",
                        "stages.bogus", "nope.deeper.key", "data.augment.flip", "training.precision"])
VALUES = st.one_of(st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str), st.booleans().map(str),
                   st.text(string.printable, max_size=20), st.sampled_from(["[1, 2]", "{a: 1}", "null", "[", "]:", "- x"]))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS | st.text(string.printable, min_size=0, max_size=12), VALUES), max_size=3))
def test_set_overrides_never_traceback(pairs):
    try:
        load_recipe("digits", [f"{k}={v}" for k, v in pairs])
    except UserError as e:
        assert "\n" not in str(e) and str(e)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(string.printable, max_size=120))
def test_recipe_text_never_tracebacks(text):
    try:
        validate(Recipe, parse_yaml(text, "fuzz.yaml"), "fuzz.yaml")
    except UserError as e:
        assert str(e).startswith("fuzz.yaml") and "\n" not in str(e)
