"""The docstring examples of theorylr.data run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["__init__", "batching", "dataset", "files", "registry", "scaling", "synthetic"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    name = "theorylr.data" if module == "__init__" else f"theorylr.data.{module}"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
