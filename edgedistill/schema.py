"""Strict pydantic models and one-line validation errors, shared by recipes and target profiles."""

from __future__ import annotations

import collections.abc
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgedistill.errors import UserError


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `Foo`, `Foo | None` or `Optional[Foo]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found:
                return found
    return None


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model at an error location, stepping into list items (`features.0` -> FeatureMatch) and mapping
    values."""
    annotation: Any = root
    for key in loc:
        model = _submodel(annotation)
        if model is not None:
            if not isinstance(key, str) or key not in model.model_fields:
                return None
            annotation = model.model_fields[key].annotation
            continue
        container = _unwrap_optional(annotation)
        origin, args = typing.get_origin(container), typing.get_args(container)
        if isinstance(key, int) and origin in (list, tuple, collections.abc.Sequence) and args:
            annotation = args[0]
        elif isinstance(key, str) and origin is dict and len(args) == 2:
            annotation = args[1]
        else:
            return None
    return _submodel(annotation)


def describe_error(root: type[BaseModel], err: ValidationError) -> str:
    """The first problem of a ValidationError as 'field.path: what is wrong; how to fix it'."""
    errors = err.errors()
    # A typo'd key shows up twice (unknown key + missing key): name the typo, it carries the fix.
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(e["loc"])
    where = ".".join(str(p) for p in loc).encode("unicode_escape").decode() or "(top level)"
    if e["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        known = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else (f"; known keys: {', '.join(known)}" if known else "")
        return f"{where}: unknown key{hint}"
    if e["type"] == "missing":
        return f"{where}: required key is missing"
    got = e.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error":  # our own validators: the message already says what to do
        return f"{where}: {msg}"
    return f"{where}: {msg.lower()} (got {shown})"


def validate(model: type[BaseModel], data: Any, source: str) -> Any:
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{source}: is {kind}, expected a mapping of keys (see `edgedistill recipe digits`)")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{source}: {describe_error(model, e)}") from None


def read_yaml(path: Path) -> Any:
    """Parse YAML without constructing any Python object beyond plain data (no tags that import code)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    return parse_yaml(text, str(path))


class DuplicateKey(yaml.constructor.ConstructorError):
    """The same key twice in one mapping: YAML would silently keep the last value."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing duplicate keys at any depth (merge keys `<<` may still override)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    shown = str(key).encode("unicode_escape").decode()  # one line, whatever the key holds
                    raise DuplicateKey(None, None, f"duplicate key '{shown}' (first on line "
                                                   f"{seen[key].start_mark.line + 1})", key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader: plain data only
    except DuplicateKey as e:
        mark = e.problem_mark
        raise UserError(f"{source}: line {mark.line + 1}: {e.problem}; keep one of them") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{source}:{where}: invalid YAML ({problem}); fix the syntax there") from None
