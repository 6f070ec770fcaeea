"""The public API is what ``fyp.__all__`` exports."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import fyp

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_everything_in_all_is_importable() -> None:
    assert len(fyp.__all__) == len(set(fyp.__all__))
    for name in fyp.__all__:
        assert hasattr(fyp, name), name
        obj = getattr(fyp, name)
        module = getattr(obj, "__module__", None)
        if module is not None and callable(obj):
            assert module.startswith("fyp."), f"{name} comes from {module}"


def test_star_import_matches_all() -> None:
    namespace: dict[str, object] = {}
    exec("from fyp import *", namespace)
    exported = {k for k in namespace if k != "__builtins__"}
    assert exported == set(fyp.__all__)


def test_exports_are_the_same_objects_as_their_home_modules() -> None:
    for name in fyp.__all__:
        obj = getattr(fyp, name)
        module = getattr(obj, "__module__", None)
        if module and module.startswith("fyp.") and hasattr(obj, "__qualname__"):
            assert getattr(importlib.import_module(module), obj.__qualname__) is obj


def test_version_matches_pyproject() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert fyp.__version__ == project["version"]
    assert "__version__" in fyp.__all__


def test_the_whole_error_tree_is_public() -> None:
    """A library caller must be able to catch every documented error from ``fyp``."""
    import inspect

    from fyp import errors

    tree = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, errors.FypError)
        and obj.__module__ == errors.__name__
    }
    assert tree <= set(fyp.__all__), sorted(tree - set(fyp.__all__))
