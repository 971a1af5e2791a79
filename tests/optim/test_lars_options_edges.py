"""LARS's options at the edges: float32 norms whose squares leave float32's range, the bfloat16 norm fast path's
error bound, the 1-D theory's step counts at extreme but finite inputs, and the functional form's argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from theorylr.optim.lars import LARS, lars, local_norms
from theorylr.theory.lars import steps_to_fallback, steps_to_interval


@pytest.mark.parametrize("foreach", [False, True])
def test_float32_norms_out_of_range_act_as_documented(foreach: bool) -> None:
    """The norms are taken in float32 without rescaling (the LARS note): a gradient whose squares overflow (entries
    of 1e20) has an infinite norm, ratio 0, no step; one whose squares underflow (1e-24) a zero norm, the SGD
    fallback (ratio 1). Neither is nan."""
    for gscale, ratio in ((1e20, 0.0), (1e-24, 1.0)):
        w = torch.nn.Parameter(torch.ones(4))
        w.grad = torch.full((4,), gscale)
        opt = LARS([w], lr=0.1, eps=0.0, foreach=foreach)
        opt.step()
        assert float(opt.state[w]["trust_ratio"]) == ratio
        torch.testing.assert_close(w.detach(), torch.ones(4) - 0.1 * ratio * gscale)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("cls", "norm", "eps", "w0", "g"),
    [
        ("PercentDelta", "mean_ratio", 1e-8, 1e4, 1e-36),  # eps is added to |w|, not to the denominator
        ("PercentDelta", "mean_ratio", 1e-8, 1.0, 1e-39),  # a subnormal gradient
        ("PercentDelta", "l1", 0.0, 1.0, 1e-39),
        ("LARS", "linf", 0.0, 1e3, 1e-36),
    ],
)
def test_a_ratio_that_overflows_takes_the_sgd_fallback(
    cls: str, norm: str, eps: float, w0: float, g: float, foreach: bool
) -> None:
    """Finite weights over a finite, tiny denominator: the ratio overflows float32 (no square underflows first, as
    for "l2"). It takes the SGD fallback, ratio 1, instead of an infinite step to -inf."""
    import theorylr

    w = torch.nn.Parameter(torch.full((4,), w0))
    w.grad = torch.full((4,), g)
    opt = getattr(theorylr, cls)([w], lr=0.1, norm=norm, eps=eps, foreach=foreach)
    opt.step()
    assert float(opt.state[w]["trust_ratio"]) == 1.0
    assert torch.isfinite(w).all() and torch.equal(w.detach(), torch.full((4,), w0) - 0.1 * torch.full((4,), g))


def test_an_infinite_weight_keeps_its_inf() -> None:
    """The overflow fallback does not hide a diverged weight: an infinite ||w|| still gives an infinite ratio."""
    w = torch.nn.Parameter(torch.tensor([math.inf, 1.0]))
    w.grad = torch.tensor([1.0, 1.0])
    opt = LARS([w], lr=0.1)
    opt.step()
    assert math.isinf(float(opt.state[w]["trust_ratio"]))


def test_bfloat16_foreach_norm_within_its_documented_bound() -> None:
    """The bfloat16 fast path rounds the norm to bfloat16 (8 significant bits): up to 2^-8, as documented (the
    docstring said 2^-9; sqrt(256^2 + 68^2) = 264.88 comes out 264)."""
    t = torch.tensor([256.0, 68.0], dtype=torch.bfloat16)
    fast = float(local_norms([t], "l2", foreach=True)[0])
    exact = float(torch.linalg.vector_norm(t.double()))
    assert abs(fast - exact) / exact <= 2.0**-8


@pytest.mark.parametrize(("w0", "a"), [(1e-300, 1e300), (1e300, 1e-300), (5e-324, 1.0)])
def test_steps_to_interval_at_extreme_finite_inputs(w0: float, a: float) -> None:
    lr = 0.5
    k = steps_to_interval(w0, a, lr)
    factor = 1 + lr if w0 < a else 1 - lr
    expected = math.ceil((math.log(abs(a) * (1 - lr if w0 < a else 1 + lr)) - math.log(w0)) / math.log(factor))
    assert abs(k - expected) <= 1


def test_steps_to_fallback_at_extreme_finite_inputs() -> None:
    k = steps_to_fallback(1e300, 0.5, 1e-300)
    assert abs(k - math.floor((math.log(1e-300) - math.log(1e300)) / math.log(0.5)) - 1) <= 1


def test_functional_lars_refuses_unknown_denominator() -> None:
    w = torch.tensor([3.0, 4.0])
    with pytest.raises(ValueError, match="denominator"):
        lars([w], [torch.tensor([0.0, 10.0])], [None], lr=0.1, weight_decay=1.0, denominator="bogus")


def test_lars_param_groups_leaves_norm_layers_of_any_shape_to_plain_sgd() -> None:
    """A LayerNorm((2, 3)) has 2-D gains and shifts: they were adapted and weight-decayed, against the docs."""
    from theorylr.optim.param_groups import lars_param_groups

    net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Unflatten(1, (2, 3)), torch.nn.LayerNorm((2, 3)))
    adapted, plain = lars_param_groups(net, weight_decay=1e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    assert [names[id(p)] for p in adapted["params"]] == ["0.weight"]
    assert sorted(names[id(p)] for p in plain["params"]) == ["0.bias", "2.bias", "2.weight"]
    assert plain["adapt"] is False and plain["weight_decay"] == 0.0
