"""Plug-ins by name: tasks, model families, exporters, runtimes and stages each have one registry.

A built-in registers itself when its module is imported (`@TASKS.register("image-classification")`); the
registry imports its built-in modules on first lookup, so importing edgedistill stays cheap. Another package
adds its own through an entry point in the registry's group, e.g. in its pyproject.toml:

    [project.entry-points."edgedistill.families"]
    timm = "my_package.timm_family"

A recipe still only names what is registered: it never imports code itself."""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtins: tuple[str, ...] = ()):
        self.kind = kind  # "task", "family", ...: how errors name an entry
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on a class (instantiated once) or an object."""

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj() if isinstance(obj, type) else obj
            return obj

        return add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before the imports: a plug-in module may look itself up while it loads
        try:
            for module in self._builtins:
                importlib.import_module(module)
            from importlib.metadata import entry_points

            for ep in entry_points(group=f"edgedistill.{self.kind.replace(' ', '_')}s"):
                ep.load()
        except BaseException:
            self._loaded = False  # a failed import is raised again by the next lookup, not hidden as "unknown"
            raise

    def get(self, name: str) -> T:
        """The entry, or ValueError naming the known ones (a recipe field shows it as its own error)."""
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown {self.kind} '{name}'; {hint}known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        """Built-ins in the order their modules are listed (whatever imported one first), then the others in
        the order they registered."""
        self._load()
        return iter(sorted(self._entries.values(), key=self._rank))

    def _rank(self, entry: T) -> int:
        module = type(entry).__module__
        return self._builtins.index(module) if module in self._builtins else len(self._builtins)
