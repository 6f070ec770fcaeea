"""The error tree: stable codes, 4xx/5xx branches, one JSON shape, docs in sync."""

from __future__ import annotations

import re

import pytest

import fyp.errors as errors_module
from fyp.errors import ClientError, FypError, ServerError, error_body, http_status


def all_error_classes() -> list[type[FypError]]:
    found: list[type[FypError]] = []
    todo: list[type[FypError]] = [FypError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors_module.__name__]


SUBCLASSES = [c for c in all_error_classes() if c is not FypError]


def test_the_tree_is_not_empty() -> None:
    names = {c.__name__ for c in SUBCLASSES}
    assert {"ClientError", "ServerError", "NotFound", "StorageError"} <= names


def test_every_error_has_a_unique_code() -> None:
    codes = [c.code for c in all_error_classes()]
    assert len(codes) == len(set(codes)), sorted(codes)
    for code in codes:
        assert re.fullmatch(r"[a-z][a-z_]*", code), code


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_status_matches_the_branch(cls: type[FypError]) -> None:
    assert issubclass(cls, ClientError) != issubclass(cls, ServerError)
    if issubclass(cls, ClientError):
        assert 400 <= cls.status < 500
    else:
        assert 500 <= cls.status < 600


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_error_body_shape(cls: type[FypError]) -> None:
    exc = cls("something went wrong", user_id="u1", n=3)
    assert exc.message == str(exc) == "something went wrong"
    assert http_status(exc) == cls.status
    assert error_body(exc) == {
        "error": {
            "code": cls.code,
            "message": "something went wrong",
            "status": cls.status,
            "details": {"user_id": "u1", "n": 3},
        }
    }


def test_details_default_to_empty() -> None:
    assert errors_module.NotFound("x").to_dict()["details"] == {}


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("secret connection string postgres://admin:hunter2@db"),
        KeyError("internal key"),
        ValueError("/srv/fyp/regions/us/store.sqlite is corrupt"),
        Exception(),
    ],
)
def test_unexpected_exceptions_are_500_without_leaking(exc: BaseException) -> None:
    assert http_status(exc) == 500
    body = error_body(exc)
    assert body == {
        "error": {
            "code": "internal_error",
            "message": "internal server error",
            "status": 500,
            "details": {},
        }
    }
    text = repr(body)
    for secret in ("hunter2", "internal key", "store.sqlite"):
        assert secret not in text


def test_internal_error_code_is_not_taken_by_a_fyp_error() -> None:
    assert "internal_error" not in {c.code for c in all_error_classes()}


# -- the module docstring documents the tree ------------------------------------------------

TREE_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?P<rest>.*)$")


def documented_tree() -> dict[str, tuple[str | None, str]]:
    """Name -> (parent name, rest of the line) from the tree in the module docstring."""
    doc = errors_module.__doc__ or ""
    lines = [ln for ln in doc.splitlines() if ln.startswith("    ") and ln.strip()]
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        m = TREE_LINE.match(line[4:])
        assert m, f"unparseable tree line: {line!r}"
        depth = len(m["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[m["name"]] = (stack[-1][1] if stack else None, m["rest"])
        stack.append((depth, m["name"]))
    return tree


def test_docstring_tree_lists_every_error_class() -> None:
    documented = documented_tree()
    assert set(documented) == {c.__name__ for c in all_error_classes()}


def test_docstring_tree_matches_the_class_hierarchy() -> None:
    documented = documented_tree()
    for cls in all_error_classes():
        parent, _ = documented[cls.__name__]
        expected = None if cls is FypError else cls.__bases__[0].__name__
        assert parent == expected, cls.__name__


def test_docstring_tree_statuses_are_right() -> None:
    for cls in all_error_classes():
        _, rest = documented_tree()[cls.__name__]
        m = re.match(r"\s+(\d)(\d\d|xx)\b", rest)
        if m is None:
            continue
        if m[2] == "xx":
            assert str(cls.status).startswith(m[1]), cls.__name__
        else:
            assert cls.status == int(m[1] + m[2]), cls.__name__
