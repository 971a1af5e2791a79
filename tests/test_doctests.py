"""Every docstring example in the package runs and gives what it shows (the docs' "runnable example" promise).

One test per module, found by walking the package, so a new module is covered without being listed here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import theorylr

MODULES = sorted(
    {"theorylr", *(m.name for m in pkgutil.walk_packages(theorylr.__path__, "theorylr."))} - {"theorylr.__main__"}
)
# Modules without examples: the CLI's subcommands (argparse wiring, exercised by tests/lab/test_cli.py), private
# helpers, and the figures, which draw from run files (exercised by tests/lab).
WITHOUT_EXAMPLES = {
    *(name for name in MODULES if name.startswith("theorylr.commands")),
    "theorylr.cli",
    "theorylr.estimate._state",
    "theorylr.optim._base",
    "theorylr.lab.plots",
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0
    if name not in WITHOUT_EXAMPLES:
        assert result.attempted > 0, f"{name} has no docstring example"
