"""Finding a subject by name: the built-ins, the ``harness.subjects`` entry point group, or
``module:factory`` for the user's own.

A factory is any callable taking a ``SubjectConfig`` and returning a subject. Every way this can
go wrong (an unknown name, a module that fails to import, an attribute that is missing or not
callable, a factory that returns something else) is a ``SubjectError`` with a one-line message
naming the subject; never a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from harness.subjects.base import SubjectConfig, SubjectError, check_subject

ENTRY_POINT_GROUP = "harness.subjects"
BUILTINS = {
    "harness": "harness.subjects.harness_client:create",
    "openai": "harness.subjects.openai_sdk:create",
    "litellm": "harness.subjects.litellm_sdk:create",
}
EXTRAS = {"openai": "openai", "litellm": "litellm"}  # pip extra that brings a built-in's client

Factory = Callable[[SubjectConfig], Any]


@dataclass(frozen=True, slots=True)
class SubjectSpec:
    """A resolved ``--subject`` value: its name in reports and the factory that builds it."""

    spec: str
    name: str
    factory: Factory

    def build(self, config: SubjectConfig) -> Any:
        """Call the factory and check the result is a subject (its ``name`` becomes ours)."""
        return check_subject(self.factory(config), self.spec)


def available() -> list[str]:
    """Built-in and entry-point subject names."""
    names = set(BUILTINS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _import(module_name: str, paths: tuple[str, ...]) -> Any:
    """Import, retrying with ``paths`` (the project's root) on ``sys.path`` if not found:
    ``pytest`` started as a script does not put the working directory there."""
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        extra = [p for p in paths if p not in sys.path]
        if exc.name != top or not extra:
            raise
        sys.path.extend(extra)
        return importlib.import_module(module_name)


def _load(spec: str, target: str, name: str, paths: tuple[str, ...] = ()) -> Factory:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SubjectError(f"subject {spec!r}: expected module:factory, got {target!r}")
    try:
        module = _import(module_name, paths)
    except ImportError as exc:
        hint = f" (pip install 'lmstudio-harness[{EXTRAS[name]}]')" if name in EXTRAS else ""
        raise SubjectError(f"subject {spec!r}: cannot import {module_name}: "
                           f"{type(exc).__name__}: {exc}{hint}") from None
    except Exception as exc:  # a user's module that crashes on import
        raise SubjectError(f"subject {spec!r}: importing {module_name} failed: "
                           f"{type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise SubjectError(f"subject {spec!r}: module {module_name} has no {attr!r}")
    if not callable(factory):
        raise SubjectError(f"subject {spec!r}: {module_name}:{attr} is a "
                           f"{type(factory).__name__}, not a factory")
    return factory


def resolve(spec: str, paths: tuple[str, ...] = ()) -> SubjectSpec:
    """``harness`` / ``openai`` / an entry point name / ``module:factory`` -> its factory;
    ``paths``: where a user's module may live if it is not importable as is."""
    spec = spec.strip()
    if not spec:
        raise SubjectError("empty subject name")
    if spec in BUILTINS:
        target, name = BUILTINS[spec], spec
    elif ":" in spec:
        target, name = spec, spec
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            raise SubjectError(f"unknown subject {spec!r}; known: {', '.join(available())} "
                               "(or module:factory)")
        target, name = found[0].value, spec
    return SubjectSpec(spec, name, _load(spec, target, name, paths))
