"""Every implementation of an extension point, so a new one is under its contract at once.

A contract parametrised over ``implementations(Base)`` covers a subclass added anywhere
in ``fyp`` without anyone listing it: every module of the package is imported first
(subclasses only exist once their module is), and classes defined by tests are left out
(pytest-xdist workers must collect the same parameters, whatever they imported before).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any

import pytest

import fyp


def _import_all() -> None:
    for module in pkgutil.walk_packages(fyp.__path__, "fyp."):
        if not module.name.endswith("__main__"):  # runs the CLI
            importlib.import_module(module.name)


def implementations(base: type) -> list[type]:
    """The concrete subclasses of ``base`` in ``fyp``, at any depth, by name."""
    _import_all()
    found: set[type] = set()
    todo: list[type] = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and cls.__module__.split(".")[0] == "fyp":
            found.add(cls)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def no_arguments(cls: type) -> Callable[..., object]:
    """Build ``cls`` with no arguments (whatever the contract passes a builder)."""

    def build(*_: object) -> object:
        try:
            return cls()
        except TypeError:
            pytest.fail(f"{cls.__name__} takes arguments: say how to build it")

    return build


def builders(
    base: type,
    built: Mapping[type, Mapping[str, Callable[..., object]]],
    default: Callable[[type], Callable[..., object]] = no_arguments,
) -> list[Any]:
    """A pytest parameter for each way to build each implementation of ``base``: those
    ``built`` names for its class, or else ``default(cls)``; ids ``Class-label``."""
    return [
        pytest.param(build, id=f"{cls.__name__}-{label}")
        for cls in implementations(base)
        for label, build in (built.get(cls) or {"default": default(cls)}).items()
    ]
