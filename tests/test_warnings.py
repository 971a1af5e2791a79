"""``theorylr._warnings.warn``: the warning names the caller's line outside theorylr and torch."""

from __future__ import annotations

import warnings

import torch

from theorylr._warnings import warn


def test_the_warning_names_this_file() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn("careful", RuntimeWarning)
    assert [(w.category, w.filename) for w in caught] == [(RuntimeWarning, __file__)]


def test_inside_a_compiled_function_no_dynamo_warning_is_added() -> None:
    """dynamo cannot trace ``sys._getframe``: without ``torch.compiler.disable`` it warned of it and broke the graph
    inside ``warn``."""

    def step(x: torch.Tensor) -> torch.Tensor:
        warn("careful", RuntimeWarning)
        return x * 2

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(step, backend="eager")(torch.ones(2))
    assert torch.equal(out, torch.full((2,), 2.0))
    assert [str(w.message) for w in caught] == ["careful"]
