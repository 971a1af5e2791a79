"""Gaps a mutation review of theorylr.optim (param_groups, _norms) found: each test kills a mutant that survived
the rest of the suite (the docstrings name the mutation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from theorylr.optim._norms import local_norms
from theorylr.optim.lars import LARS
from theorylr.optim.param_groups import lars_param_groups

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# optim/param_groups.py
# ----------------------------------------------------------------------------------------------------------------
def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def test_exclude_with_a_non_string_among_the_patterns_is_refused() -> None:
    """P04 (param_groups.py:29, ``all`` -> ``any``): one bad pattern among good ones must be a ValueError up front,
    not a TypeError from fnmatch later."""
    with pytest.raises(ValueError, match="exclude"):
        lars_param_groups(nn.Linear(2, 2), exclude=("*.bias", 3))  # type: ignore[arg-type]


def test_several_exclude_patterns_each_exclude() -> None:
    """P05 (param_groups.py:31, ``any`` -> ``all``): a tensor matching any one pattern is left out."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4), nn.Linear(4, 1))
    groups = lars_param_groups(model, exclude=("0.*", "2.weight"))
    assert _ids(groups[0]) == {id(model[1].weight)}
    assert _ids(groups[1]) == {id(p) for p in (model[0].weight, model[2].weight)} | {id(m.bias) for m in model}


def test_exclude_weight_decay_false_leaves_the_plain_groups_decay_to_the_optimizer() -> None:
    """P15 (param_groups.py:128, ``if exclude_weight_decay`` -> ``if True``): the flag was ignored."""
    groups = lars_param_groups(nn.Linear(2, 2), exclude_weight_decay=False)
    assert groups[1] == {"adapt": False, "params": groups[1]["params"]}
    assert "weight_decay" not in groups[1]


def test_a_triple_among_the_named_params_is_refused_with_the_helpers_message() -> None:
    """P20 (param_groups.py:101, ``len(item) == 2`` dropped): a 3-tuple failed in the unpacking instead, with
    Python's "too many values to unpack"."""
    with pytest.raises(ValueError, match="model_or_named_params must be a module or"):
        lars_param_groups([("w", torch.zeros(2, 2), "extra")])  # type: ignore[list-item]


# ----------------------------------------------------------------------------------------------------------------
# optim/_norms.py
# ----------------------------------------------------------------------------------------------------------------
def test_foreach_l1_norms_of_a_mix_of_autograd_and_plain_tensors() -> None:
    """N20 (_norms.py:254, ``any`` -> ``all``): one tensor that autograd records is enough to leave the chunked
    kernel (``abs(out=)`` refuses it), even when another tensor does not require grad."""
    p = torch.ones(70_000, requires_grad=True)
    norms = local_norms([p, torch.ones(70_000)], "l1", foreach=True)
    assert [float(n.detach()) for n in norms] == [70_000.0, 70_000.0]


def _foreach_equals_loop(
    w0: list[torch.Tensor], make_grad: Callable[[int], torch.Tensor], threads: int, **options: Any
) -> None:
    """Two LARS steps with ``foreach`` and with the loop, from ``w0``, on ``threads`` torch threads: equal."""
    fast = [nn.Parameter(w.clone()) for w in w0]
    slow = [nn.Parameter(w.clone()) for w in w0]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        opts = [LARS(ps, lr=0.05, foreach=fe, **options) for ps, fe in ((fast, True), (slow, False))]
        for _ in range(2):
            grads = [make_grad(i) for i in range(len(w0))]
            for ps, opt in zip((fast, slow), opts):
                for p, g in zip(ps, grads):
                    p.grad = g.clone()
                opt.step()
    finally:
        torch.set_num_threads(before)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm_kind", ["l2_threads", "l1"])
def test_lars_with_only_large_cpu_tensors_matches_the_loop(norm_kind: str) -> None:
    """N09 (_norms.py:111, ``large.sort()`` deleted): when every tensor of a bucket is large, the dot/slice kernel's
    norms are returned as they are, so they must be in the bucket's order (weights, then the other tensors); the
    mutant gave [w0, u0, w1, u1] and paired each weight with the wrong norm."""
    torch.manual_seed(3)
    shapes = [(300, 300), (256, 300)]
    w0 = [torch.randn(s, dtype=F64) * (i + 1) for i, s in enumerate(shapes)]
    extra = {} if norm_kind == "l2_threads" else {"norm": "l1"}
    threads = 2 if norm_kind == "l2_threads" else 1
    _foreach_equals_loop(w0, lambda i: torch.randn(shapes[i], dtype=F64) * 10, threads, **extra)


def test_lars_with_a_large_non_contiguous_parameter_on_two_threads() -> None:
    """N08 (_norms.py:110, the contiguity filter dropped): a transposed weight (or its gradient) cannot be viewed
    flat for the dot kernel; it must go to _foreach_norm instead of raising."""
    torch.manual_seed(4)
    w0 = [torch.randn(400, 300, dtype=F64).t(), torch.randn(300, 300, dtype=F64)]
    _foreach_equals_loop(
        w0, lambda i: torch.randn(400, 300, dtype=F64).t() if i == 0 else torch.randn(300, 300, dtype=F64), 2
    )
