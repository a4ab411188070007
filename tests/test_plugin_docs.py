"""docs/plugins.md documents every hook with its exact signature."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from plugins import hookspecs

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
HOOKS = [name for name, value in vars(hookspecs).items() if name.startswith("tandem_") and inspect.isfunction(value)]


def test_there_are_hooks():
    assert HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_exact_signature(name):
    signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
    assert f"### {name}\n" in DOCS, f"docs/plugins.md has no '### {name}' section"
    assert f"{name}{signature}" in DOCS, f"docs/plugins.md does not show {name}{signature}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_typed_signature_and_a_docstring(name):
    hook = getattr(hookspecs, name)
    assert inspect.getdoc(hook)
    signature = inspect.signature(hook)
    assert signature.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
