"""LARS / PercentDelta specific references (the generic suite in test_generic.py covers the structural checks).

Expected values come from plain-Python arithmetic on the entries (a second, independent implementation of the
update rule), from torch.optim.SGD where LARS must reduce to it, and from hand computations.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from theorylr.optim._norms import _L1_CHUNK_BYTES, local_norms
from theorylr.optim.lars import LARS, PercentDelta, lars
from theorylr.optim.param_groups import lars_param_groups

W0 = [0.5, -1.5, 2.0, 0.25]
G0 = [0.3, 0.1, -0.4, 0.2]


# ----------------------------------------------------------------------------------------------------------------
# An independent reference of one step without momentum, on Python floats
# ----------------------------------------------------------------------------------------------------------------
def _norm(xs: list[float], norm: str) -> float:
    if norm == "l2":
        return math.sqrt(sum(x * x for x in xs))
    if norm == "l1":
        return sum(abs(x) for x in xs)
    return max(abs(x) for x in xs)


def _reference_ratio(
    w: list[float],
    g: list[float],
    *,
    norm: str,
    denominator: str,
    wd: float,
    tc: float,
    eps: float,
    min_norm: float,
    clip: bool,
) -> float:
    d = [gi + wd * wi for gi, wi in zip(g, w)]
    if norm == "mean_ratio":
        u = d if denominator == "decayed" else g
        den = sum(abs(ui) / (abs(wi) + eps) for ui, wi in zip(u, w)) / len(w)
        if denominator == "sum":
            den += wd
        w_norm = _norm(w, "l1")
        raw = tc / den if den else math.inf
    else:
        w_norm = _norm(w, norm)
        den = _norm(d, norm) if denominator == "decayed" else _norm(g, norm) + wd * w_norm
        raw = tc * w_norm / (den + eps) if den + eps else math.inf
    ratio = 1.0 if (w_norm < min_norm or w_norm == 0 or den == 0) else raw
    return min(ratio, 1.0) if clip else ratio


def _one_step(w: list[float], g: list[float], *, foreach: bool, **kwargs: Any) -> tuple[Tensor, Tensor]:
    p = nn.Parameter(torch.tensor(w, dtype=torch.float64).reshape(2, 2))
    p.grad = torch.tensor(g, dtype=torch.float64).reshape(2, 2)
    opt = LARS([p], foreach=foreach, **kwargs)
    opt.step()
    return p.detach().flatten(), opt.state[p]["trust_ratio"]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("tc", [0.7, 0.05])
@pytest.mark.parametrize(
    ("norm", "denominator", "clip"),
    list(itertools.product(["l2", "l1", "linf", "mean_ratio"], ["decayed", "sum"], [False, True])),
)
def test_one_step_matches_the_hand_computed_rule(
    norm: str, denominator: str, clip: bool, tc: float, foreach: bool
) -> None:
    kw = {"norm": norm, "denominator": denominator, "wd": 0.1, "tc": tc, "eps": 1e-3, "min_norm": 0.01, "clip": clip}
    ratio = _reference_ratio(W0, G0, **kw)  # type: ignore[arg-type]
    expected = [wi - 0.1 * ratio * (gi + 0.1 * wi) for wi, gi in zip(W0, G0)]
    got, trust = _one_step(
        W0,
        G0,
        foreach=foreach,
        lr=0.1,
        weight_decay=0.1,
        trust_coefficient=tc,
        eps=1e-3,
        norm=norm,
        denominator=denominator,
        trust_clip=clip,
    )
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=1e-15)
    assert trust.shape == () and trust.dtype == torch.float64
    assert float(trust) == pytest.approx(ratio, rel=1e-14)
    if clip:
        assert float(trust) <= 1.0


def test_hand_computed_l2_step() -> None:
    """w = (3, 4), g = (0, 10): ||w|| = 5, ||g|| = 10, ratio 1/2, w -= 0.1 * 0.5 * g."""
    for foreach in (False, True):
        got, trust = _one_step([3.0, 4.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], foreach=foreach, lr=0.1, eps=0.0)
        torch.testing.assert_close(got, torch.tensor([3.0, 3.5, 0.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
        assert float(trust) == 0.5


def test_mean_ratio_is_the_mean_elementwise_ratio_and_l1_the_aggregate_one() -> None:
    """The two PercentDelta readings: mean_i |dw_i| / |w_i| = lr (mean_ratio) versus ||dw||_1 / ||w||_1 = lr (l1)."""
    w = torch.tensor([0.5, -2.0, 4.0, 1.0], dtype=torch.float64)
    g = torch.tensor([0.2, 0.3, -0.1, 0.05], dtype=torch.float64)
    lr = 0.05
    for norm, measure in (
        ("mean_ratio", lambda dw: (dw.abs() / w.abs()).mean()),
        ("l1", lambda dw: dw.abs().sum() / w.abs().sum()),
    ):
        p = nn.Parameter(w.clone())
        p.grad = g.clone()
        PercentDelta([p], lr=lr, eps=0.0, norm=norm).step()
        assert float(measure(p.detach() - w)) == pytest.approx(lr, rel=1e-13)


# ----------------------------------------------------------------------------------------------------------------
# Reductions to torch.optim.SGD
# ----------------------------------------------------------------------------------------------------------------
SGD_CASES = [
    {"momentum": 0.0},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.8, "nesterov": True},
    {"momentum": 0.9, "weight_decay": 0.05},
    {"momentum": 0.9, "weight_decay": 0.05, "maximize": True},
    {"momentum": 0.0, "weight_decay": 0.05, "maximize": True},
]


def _twin_runs(make_a: Any, make_b: Any, steps: int = 5, scale: float = 1.0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    twin = copy.deepcopy(model)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    opt_a, opt_b = make_a(model.parameters()), make_b(twin.parameters())
    for _ in range(steps):
        for opt, net in ((opt_a, model), (opt_b, twin)):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
    return model, twin


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", SGD_CASES, ids=[str(c) for c in SGD_CASES])
def test_adapt_false_is_torch_sgd(case: dict[str, Any], foreach: bool) -> None:
    a, b = _twin_runs(
        lambda ps: LARS(ps, lr=0.05, adapt=False, foreach=foreach, **case),
        lambda ps: torch.optim.SGD(ps, lr=0.05, foreach=foreach, **case),
    )
    # Without momentum the loop is torch's SGD bit for bit; with momentum LARS keeps its buffer factored (buf = k v,
    # one lerp_ per step), which rounds differently from torch's buf.mul_(m).add_(d) by an ulp or so.
    exact = not foreach and not case.get("momentum")
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {"rtol": 1e-14, "atol": 1e-16}
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, **tol)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("case", SGD_CASES[:5], ids=[str(c) for c in SGD_CASES[:5]])
def test_below_min_norm_is_torch_sgd(case: dict[str, Any], foreach: bool) -> None:
    """Weights of norm below min_norm get ratio 1: the paper's SGD fallback near the origin (§3.2, §6.1)."""
    a, b = _twin_runs(
        lambda ps: LARS(ps, lr=0.05, min_norm=1e3, foreach=foreach, **case),
        lambda ps: torch.optim.SGD(ps, lr=0.05, foreach=foreach, **case),
    )
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("foreach", [False, True])
def test_first_momentum_step_buffer_is_the_first_update(foreach: bool) -> None:
    """As torch.optim.SGD: buffer = first update (no dampening on step 1), here ratio * d."""
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    p.grad = torch.tensor(G0, dtype=torch.float64)
    opt = LARS([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1, eps=0.0, foreach=foreach)
    opt.step()
    w, g = torch.tensor(W0, dtype=torch.float64), torch.tensor(G0, dtype=torch.float64)
    d = g + 0.1 * w
    ratio = w.norm() / d.norm()
    torch.testing.assert_close(opt.momentum_buffer(p), ratio * d, rtol=1e-15, atol=0)
    torch.testing.assert_close(p.detach(), w - 0.1 * (ratio * d), rtol=1e-14, atol=0)
    # Second step: buf = 0.9 * buf + (1 - 0.5) * ratio2 * d2
    w1, buf1 = p.detach().clone(), (ratio * d).clone()
    p.grad = torch.tensor(G0[::-1], dtype=torch.float64)
    opt.step()
    d2 = p.grad + 0.1 * w1
    buf2 = 0.9 * buf1 + 0.5 * (w1.norm() / d2.norm()) * d2
    torch.testing.assert_close(opt.momentum_buffer(p), buf2, rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(p.detach(), w1 - 0.1 * buf2, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("foreach", [False, True])
def test_nesterov_two_steps_by_hand(foreach: bool) -> None:
    p = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([p], lr=0.1, momentum=0.5, nesterov=True, eps=0.0, foreach=foreach)
    p.grad = torch.tensor([0.0, 10.0], dtype=torch.float64)
    opt.step()  # u = 0.5 * g = (0, 5); buf = u; w -= 0.1 * (u + 0.5 buf) = 0.1 * (0, 7.5)
    torch.testing.assert_close(p.detach(), torch.tensor([3.0, 3.25], dtype=torch.float64), rtol=1e-15, atol=0)
    p.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    opt.step()
    # ||w|| = sqrt(9 + 10.5625) = 4.4230..., ||g|| = 10: u = 0.44230 * g; buf = 0.5 * (0, 5) + u; w -= 0.1 (u + 0.5 buf)
    r = math.sqrt(9 + 3.25**2) / 10
    u = [r * 6.0, r * 8.0]
    buf = [0.5 * 0.0 + u[0], 0.5 * 5.0 + u[1]]
    expected = [3.0 - 0.1 * (u[0] + 0.5 * buf[0]), 3.25 - 0.1 * (u[1] + 0.5 * buf[1])]
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=0)
    torch.testing.assert_close(opt.momentum_buffer(p), torch.tensor(buf, dtype=torch.float64), rtol=1e-14, atol=0)


def test_maximize_ascends_with_the_same_ratio() -> None:
    for foreach in (False, True):
        p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
        p.grad = torch.tensor(G0, dtype=torch.float64)
        LARS([p], lr=0.1, maximize=True, eps=0.0, foreach=foreach).step()
        w, g = torch.tensor(W0, dtype=torch.float64), torch.tensor(G0, dtype=torch.float64)
        torch.testing.assert_close(p.detach(), w + 0.1 * w.norm() / g.norm() * g, rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Telemetry, degenerate tensors, hooks
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [False, True])
def test_trust_ratio_telemetry(foreach: bool) -> None:
    big = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    tiny = nn.Parameter(torch.tensor([1e-3, 0.0], dtype=torch.float64))  # ||w|| < min_norm
    zero_w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    zero_g = nn.Parameter(torch.ones(2, dtype=torch.float64))
    frozen = nn.Parameter(torch.ones(2, dtype=torch.float64))
    params = [big, tiny, zero_w, zero_g]
    opt = LARS([{"params": params}, {"params": [frozen], "adapt": False}], lr=0.1, eps=0.0, foreach=foreach)
    big.grad = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    tiny.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    zero_w.grad = torch.ones(3, dtype=torch.float64)
    zero_g.grad = torch.zeros(2, dtype=torch.float64)
    frozen.grad = torch.full((2,), 7.0, dtype=torch.float64)
    opt.step()
    ratios = torch.stack([opt.state[p]["trust_ratio"] for p in [*params, frozen]])
    torch.testing.assert_close(ratios, torch.tensor([2.5, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64), rtol=0, atol=0)
    for p in [*params, frozen]:
        assert opt.state[p]["trust_ratio"].shape == ()
        assert "momentum_buffer" not in opt.state[p]
        assert torch.isfinite(p).all()
    # The ratio follows the weights: after the step ||big|| changed, so does the next ratio.
    w = big.detach().clone()
    opt.step()
    assert float(opt.state[big]["trust_ratio"]) == pytest.approx(float(w.norm()) / 2.0, rel=1e-15)


@pytest.mark.parametrize("norm", ["l2", "l1", "linf", "mean_ratio"])
@pytest.mark.parametrize("foreach", [False, True])
def test_zero_weight_entries_and_zero_gradients_never_give_nan_even_with_eps_zero(norm: str, foreach: bool) -> None:
    p = nn.Parameter(torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64))
    q = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    r = nn.Parameter(torch.zeros(0, dtype=torch.float64))
    opt = LARS([p, q, r], lr=0.1, momentum=0.9, eps=0.0, norm=norm, min_norm=0.0, foreach=foreach)
    for grad in ([1.0, 0.0, 0.5], [0.0, 0.0, 0.0]):
        p.grad = torch.tensor(grad, dtype=torch.float64)
        q.grad = torch.zeros(2, 2, dtype=torch.float64)
        r.grad = torch.zeros(0, dtype=torch.float64)
        opt.step()
        for t in (p, q, *(opt.state[x]["trust_ratio"] for x in (p, q, r))):
            assert torch.isfinite(t).all()
    assert float(opt.state[q]["trust_ratio"]) == 1.0


class _CountingNorms:
    def __init__(self, factor: float = 1.0) -> None:
        self.calls: list[tuple[int, str]] = []
        self.factor = factor

    def __call__(self, tensors: list[Tensor], norm: str) -> list[Tensor]:
        self.calls.append((len(tensors), norm))
        out = local_norms(tensors, norm)
        n = len(tensors) // 2
        return [v * self.factor for v in out[:n]] + out[n:]  # scale the weight norms only


@pytest.mark.parametrize("foreach", [False, True])
def test_norm_fn_is_called_once_per_step_and_its_norms_are_used(foreach: bool) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    twin = copy.deepcopy(model)
    hook = _CountingNorms(factor=2.0)
    groups = lars_param_groups(model)
    opt = LARS(groups, lr=0.05, momentum=0.9, norm_fn=hook, foreach=foreach)
    ref = LARS(lars_param_groups(twin), lr=0.05, momentum=0.9, trust_coefficient=2.0, foreach=foreach)
    x = torch.randn(8, 3, dtype=torch.float64)
    for step in range(3):
        for o, net in ((opt, model), (ref, twin)):
            o.zero_grad()
            net(x).square().mean().backward()
            o.step()
        # one call per step (the adapt=False group of biases needs no norms), with the 2 weights and 2 directions
        assert hook.calls == [(4, "l2")] * (step + 1)
    # Doubling ||w|| in the hook is the same as trust_coefficient=2: the hook's norms are what the step uses.
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def test_norm_fn_asks_for_l1_in_mean_ratio_mode_and_is_checked() -> None:
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    p.grad = torch.tensor(G0, dtype=torch.float64)
    hook = _CountingNorms()
    LARS([p], lr=0.1, norm="mean_ratio", norm_fn=hook).step()
    assert hook.calls == [(2, "l1")]
    for answer, got in (
        (lambda tensors: [tensors[0].norm()], "got 1 norms"),
        (lambda tensors: [float(t.norm()) for t in tensors], "got float among them"),
        (lambda tensors: torch.stack([t.norm() for t in tensors])[:, None], r"got a tensor of shape \(2, 1\)"),
        (lambda tensors: {t.norm() for t in tensors}, "got set"),
    ):
        bad = LARS([p], lr=0.1, norm_fn=lambda tensors, norm, answer=answer: answer(tensors))
        with pytest.raises(RuntimeError, match=rf"norm_fn must return one 0-dim tensor per input tensor \(2\).*{got}"):
            bad.step()
    with pytest.raises(ValueError, match="norm_fn"):
        LARS([p], lr=0.1, norm_fn="l2")  # type: ignore[arg-type]


def test_loss_scale_leaves_the_adapted_update_unchanged() -> None:
    """The AMP note: with wd = 0 and eps << s ||g||, gradients times s give the same step and ratio / s."""
    s = 1024.0
    for foreach in (False, True):
        a = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
        b = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
        opt_a = LARS([a], lr=0.1, momentum=0.9, eps=1e-16, foreach=foreach)
        opt_b = LARS([b], lr=0.1, momentum=0.9, eps=1e-16, foreach=foreach)
        for grad in (G0, G0[::-1]):
            a.grad = torch.tensor(grad, dtype=torch.float64)
            b.grad = s * a.grad
            opt_a.step()
            opt_b.step()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        assert float(opt_b.state[b]["trust_ratio"]) * s == pytest.approx(
            float(opt_a.state[a]["trust_ratio"]), rel=1e-12
        )


# ----------------------------------------------------------------------------------------------------------------
# Construction, PercentDelta, functional form, mixed dtypes
# ----------------------------------------------------------------------------------------------------------------
def test_percent_delta_is_lars_with_l1_by_default() -> None:
    p = nn.Parameter(torch.ones(2))
    assert PercentDelta([p]).defaults["norm"] == "l1"
    assert PercentDelta([p], norm="mean_ratio").defaults["norm"] == "mean_ratio"
    assert PercentDelta([p], 0.5, 0.9).defaults["momentum"] == 0.9
    a, b = _twin_runs(
        lambda ps: PercentDelta(ps, lr=0.02, momentum=0.9), lambda ps: LARS(ps, lr=0.02, momentum=0.9, norm="l1")
    )
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("group", "name"),
    [
        ({"norm": "l3"}, "norm"),
        ({"denominator": "max"}, "denominator"),
        ({"momentum": 1.0}, "momentum"),
        ({"dampening": 0.5, "nesterov": True, "momentum": 0.9}, "nesterov"),
        ({"adapt": "yes"}, "adapt"),
        ({"trust_clip": 1}, "trust_clip"),
        ({"foreach": "auto"}, "foreach"),
        ({"min_norm": math.nan}, "min_norm"),
    ],
)
def test_param_group_overrides_are_validated(group: dict[str, Any], name: str) -> None:
    p, q = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = LARS([p], lr=0.1)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [q], **group})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match=name):
        LARS([{"params": [q], **group}], lr=0.1)


def test_local_norms_foreach_equals_loop_with_empty_tensors_and_mixed_dtypes() -> None:
    ts = [torch.randn(3, 4), torch.zeros(0), torch.randn(5, dtype=torch.float64), torch.tensor([-7.0, 2.0])]
    expected = {"l1": ts[0].abs().sum(), "l2": ts[0].square().sum().sqrt(), "linf": ts[0].abs().max()}
    for norm in ("l1", "l2", "linf"):
        fast, slow = local_norms(ts, norm, foreach=True), local_norms(ts, norm)
        for a, b, t in zip(fast, slow, ts):
            assert a.shape == b.shape == () and a.dtype == b.dtype == t.dtype
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
        assert float(fast[0]) == pytest.approx(float(expected[norm]), rel=1e-6)
        assert float(fast[1]) == 0.0
    assert float(local_norms(ts, "linf", foreach=True)[3]) == 7.0
    assert float(local_norms(ts, "l1", foreach=True)[3]) == 9.0
    with pytest.raises(ValueError, match="norm"):
        local_norms(ts, "mean_ratio")


@pytest.mark.parametrize("norm", ["l2", "l1", "linf", "mean_ratio"])
@pytest.mark.parametrize("foreach", [False, True])
def test_float16_norms_do_not_overflow(norm: str, foreach: bool) -> None:
    """||w||_1 of 90,000 float16 entries of size ~0.8 is ~72,000 > 65,504: norms are taken in float32."""
    torch.manual_seed(0)
    w64, g64 = torch.randn(300, 300, dtype=torch.float64), torch.randn(300, 300, dtype=torch.float64)
    p = nn.Parameter(w64.half())
    p.grad = g64.half()
    LARS([p], lr=0.1, eps=0.0, norm=norm, foreach=foreach).step()
    w, g = w64.half().double(), g64.half().double()  # the float16 values, in float64
    ref = nn.Parameter(w.clone())
    ref.grad = g.clone()
    ref_opt = LARS([ref], lr=0.1, eps=0.0, norm=norm, foreach=foreach)
    ref_opt.step()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.detach().double(), ref.detach(), rtol=1e-2, atol=1e-2)  # a few float16 ulps


@pytest.mark.parametrize("cls", [LARS, PercentDelta], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": 0.0},
        {"momentum": 0.9},  # the factored buffer: its scale k tends to ratio / (1 - momentum), 10x the ratio
        {"momentum": 0.9, "nesterov": True},
        {"momentum": 0.9, "factored_momentum": False},
        {"momentum": 0.9, "factored_momentum": False, "nesterov": True, "dampening": 0.0},
    ],
    ids=["sgd", "factored", "factored-nesterov", "plain", "plain-nesterov"],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_float16_parameters_take_trust_ratios_beyond_float16s_range(
    cls: type[LARS], kwargs: dict[str, Any], foreach: bool
) -> None:
    """||w|| = 10 and ||g|| = 1e-4: a ratio of about 1e5 (float16's largest value is 65,504). The step itself,
    lr * ratio * g, is small; a float16 run follows the float32 run of the same float16 values."""
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(64, generator=gen)
    w0 = (w0 / w0.norm() * 10).half()
    half, single = nn.Parameter(w0.clone()), nn.Parameter(w0.float())
    opts = [cls([q], lr=1e-2, foreach=foreach, **kwargs) for q in (half, single)]
    drift = torch.randn(64, generator=gen)  # a steady direction, so that the steps add up
    for _ in range(30):
        g = drift + 0.3 * torch.randn(64, generator=gen)
        g = (g / g.norm() * 1e-4).half()
        half.grad, single.grad = g, g.float()
        for opt in opts:
            opt.step()
    assert torch.isfinite(half).all()
    ratio = opts[0].state[half]["trust_ratio"]
    assert ratio.dtype == torch.float32 and float(ratio) > 65504
    # Steps of about 0.1 in norm (lr ||w||), 0.0125 per entry, against a float16 spacing of 1e-3 to 4e-3 for these
    # entries: the float16 run's displacement is the float32 run's to a few percent.
    moved, ref = half.detach().float() - w0.float(), single.detach() - w0.float()
    assert float(ref.norm()) > 1.0
    assert float((moved - ref).norm()) <= 0.03 * float(ref.norm())


def test_functional_form_without_state() -> None:
    w, g = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])
    bufs: list[Tensor | None] = [None]
    lars([w], [g], bufs, lr=0.1, momentum=0.9, eps=0.0, foreach=False)
    torch.testing.assert_close(w, torch.tensor([3.0, 3.5]))
    assert bufs[0] is not None
    torch.testing.assert_close(bufs[0], torch.tensor([0.0, 5.0]))
    lars([], [], [], lr=0.1)  # nothing to do


def test_mixed_dtypes_in_one_group_foreach_equals_loop() -> None:
    torch.manual_seed(3)
    ps = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64), torch.randn(2, 2)]
    gs = [torch.randn_like(p) for p in ps]

    def run(foreach: bool) -> list[Tensor]:
        params = [nn.Parameter(p.clone()) for p in ps]
        opt = LARS(params, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=foreach)
        for _ in range(3):
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        return [p.detach() for p in params] + [opt.state[p]["trust_ratio"] for p in params]

    for a, b in zip(run(True), run(False)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# lars_param_groups
# ----------------------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 2)
        self.tied = self.head  # a shared module: its parameters appear once in named_parameters()


def _holds(group: dict[str, Any], tensor: Tensor) -> bool:
    return any(p is tensor for p in group["params"])


def test_param_groups_split_1d_tensors_out_by_default() -> None:
    block = _Block()
    groups = lars_param_groups(block, momentum=0.9)
    assert [len(g["params"]) for g in groups] == [3, 4]
    adapted, plain = groups
    assert {id(p) for p in adapted["params"]} == {id(block.conv.weight), id(block.embed.weight), id(block.head.weight)}
    assert plain["adapt"] is False and plain["weight_decay"] == 0.0
    assert adapted["momentum"] == plain["momentum"] == 0.9
    assert "adapt" not in adapted and "weight_decay" not in adapted
    n_params = sum(1 for _ in block.parameters())
    assert sum(len(g["params"]) for g in groups) == n_params


def test_param_groups_exclude_patterns_callables_and_flags() -> None:
    block = _Block()
    by_glob = lars_param_groups(block, exclude=("embed.*",))
    assert _holds(by_glob[1], block.embed.weight)
    by_str = lars_param_groups(block, exclude="embed.*")
    assert [len(g["params"]) for g in by_str] == [len(g["params"]) for g in by_glob]
    by_callable = lars_param_groups(block, exclude=lambda name, p: p.ndim == 4)
    assert _holds(by_callable[1], block.conv.weight)
    keep_1d = lars_param_groups(block, exclude_1d=False, exclude_weight_decay=False)
    assert len(keep_1d) == 1 and len(keep_1d[0]["params"]) == 7
    pairs = lars_param_groups([("w", block.head.weight), ("again", block.head.weight), ("b", block.head.bias)])
    assert [len(g["params"]) for g in pairs] == [1, 1]
    assert lars_param_groups([]) == []
    with pytest.raises(ValueError, match="exclude"):
        lars_param_groups(block, exclude=[1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="exclude"):
        lars_param_groups(block, exclude=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model_or_named_params .* \(got an item of type Parameter\)"):
        lars_param_groups(block.parameters())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exclude_1d"):
        lars_param_groups(block, exclude_1d="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="params"):
        lars_param_groups(block, params=[])


def test_param_groups_make_biases_plain_sgd_in_lars() -> None:
    """Through the helper, 1-D tensors move exactly as torch SGD (no weight decay) would move them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 1)).double()
    twin = copy.deepcopy(model)
    opt = LARS(lars_param_groups(model, momentum=0.9), lr=0.05, weight_decay=0.01)
    plain = [p for p in twin.parameters() if p.ndim <= 1]
    sgd = torch.optim.SGD(plain, lr=0.05, momentum=0.9)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    for _ in range(4):
        for o, net in ((opt, model), (sgd, twin)):
            o.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
        opt.step()
        sgd.step()
        with torch.no_grad():  # the twin's matrices follow the model's, so both see the same gradients
            for p, q in zip(model.parameters(), twin.parameters()):
                if p.ndim > 1:
                    q.copy_(p)
    for p, q in zip(model.parameters(), twin.parameters()):
        if p.ndim <= 1:
            torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-16)  # an ulp: the factored momentum buffer
            assert float(opt.state[p]["trust_ratio"]) == 1.0


# ----------------------------------------------------------------------------------------------------------------
# The factored momentum buffer (buf = momentum_scale * momentum_buffer) against the plain heavy-ball recursion
# ----------------------------------------------------------------------------------------------------------------
def _plain_lars_momentum(
    ws: list[Tensor],
    grads_per_step: list[list[Tensor]],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize_per_step: list[bool],
) -> tuple[list[Tensor], list[Tensor]]:
    """The textbook recursion with an explicit buffer (L2 norms, eps = 0, no fallback): the reference."""
    ws = [w.clone() for w in ws]
    bufs: list[Tensor | None] = [None] * len(ws)
    for grads, maximize in zip(grads_per_step, maximize_per_step):
        for i, (w, g) in enumerate(zip(ws, grads)):
            d = (-g if maximize else g) + weight_decay * w
            u = (w.norm() / d.norm()) * d
            prev = bufs[i]
            buf = u.clone() if prev is None else momentum * prev + (1 - dampening) * u
            bufs[i] = buf
            ws[i] = w - lr * (u + momentum * buf if nesterov else buf)
    return ws, [b for b in bufs if b is not None]


@pytest.mark.parametrize("factored", [None, False], ids=["factored", "plain"])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "case",
    [
        {"momentum": 0.9},
        {"momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
        {"momentum": 0.9, "dampening": 1.0},
        {"momentum": 0.9, "weight_decay": 0.1, "maximize": [False, True, True, False, True, False]},
    ],
    ids=str,
)
def test_momentum_buffer_equals_the_plain_recursion(case: dict[str, Any], foreach: bool, factored: bool | None) -> None:
    """Both forms of the buffer (factored, the CPU default; plain, the default elsewhere) follow the recursion."""
    torch.manual_seed(5)
    shapes = [(3, 4), (5,), (2, 2, 2), (256, 257)]  # the last is large: the CPU foreach path sweeps it on its own
    w0 = [torch.randn(s, dtype=torch.float64) for s in shapes]
    steps = 6
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(steps)]
    case = dict(case)
    maximize = case.pop("maximize", [False] * steps)
    hyper = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, **case}
    ref_w, ref_bufs = _plain_lars_momentum(w0, grads, lr=0.05, maximize_per_step=maximize, **hyper)
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = LARS(params, lr=0.05, eps=0.0, min_norm=0.0, foreach=foreach, factored_momentum=factored, **case)
    for gs, mx in zip(grads, maximize):
        opt.param_groups[0]["maximize"] = mx
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    for p, w, b in zip(params, ref_w, ref_bufs):
        torch.testing.assert_close(p.detach(), w, rtol=1e-13, atol=1e-13)  # atol: 65,792-term norms' rounding
        torch.testing.assert_close(opt.momentum_buffer(p), b, rtol=1e-12, atol=1e-13)
        assert opt.state[p]["momentum_buffer"].shape == p.shape
        if factored is None:
            assert opt.state[p]["momentum_scale"].shape == ()
        else:
            assert "momentum_scale" not in opt.state[p]
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], b, rtol=1e-12, atol=1e-13)


def _stepped(opt: LARS, p: nn.Parameter) -> dict[str, Any]:
    p.grad = torch.ones_like(p)
    opt.step()
    return dict(opt.state[p])


def _forms(opt: LARS, params: list[nn.Parameter], grads: list[list[torch.Tensor]], momenta: list[float]) -> list[float]:
    """Step ``opt`` through ``grads`` (the group's momentum set to ``momenta[t]`` at step ``t``) and return the
    buffers' growth after each step; every tensor of the group must have the same."""
    seen = []
    for gs, m in zip(grads, momenta):
        opt.param_groups[0]["momentum"] = m
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        growths = {opt.state[p]["momentum_growth"] for p in params}
        assert len(growths) == 1  # the tensors of a group change form together
        seen.append(growths.pop())
    return seen


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.9])
def test_factored_buffer_alternates_its_two_forms_and_follows_the_recursion(momentum: float, foreach: bool) -> None:
    """The factored buffer accumulates (``v += a u``, ``k *= momentum``) while ``v`` stays within 2^16 of its size
    after the last renormalisation, then renormalises once: 4 steps then 1 for momentum 0.1, 16 and 1 for 0.5, 105
    and 1 for 0.9. Over runs that cross several renormalisations it still follows the plain recursion."""
    period = {0.1: 4, 0.5: 16, 0.9: 105}[momentum]
    torch.manual_seed(6)
    shapes = [(3, 4), (5,), (256, 257)]
    w0 = [torch.randn(s, dtype=torch.float64) for s in shapes]
    steps = 2 * (period + 1) + 3  # two renormalisations
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(steps)]
    hyper = {"momentum": momentum, "dampening": 0.1, "nesterov": False, "weight_decay": 0.01}
    ref_w, ref_bufs = _plain_lars_momentum(w0, grads, lr=0.01, maximize_per_step=[False] * steps, **hyper)
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = LARS(params, lr=0.01, eps=0.0, min_norm=0.0, foreach=foreach, **hyper)
    seen = _forms(opt, params, grads, [momentum] * steps)
    steps_in_a_row = [0] + [(t - 1) % (period + 1) + 1 if (t % (period + 1)) else 0 for t in range(1, steps)]
    assert seen == pytest.approx([-math.log2(momentum) * n for n in steps_in_a_row], rel=1e-12)
    for p, w, b in zip(params, ref_w, ref_bufs):
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(opt.momentum_buffer(p), b, rtol=1e-11, atol=1e-13)
        v, k = opt.state[p]["momentum_buffer"], opt.state[p]["momentum_scale"]
        assert float(v.abs().max()) <= 2.0**16 * float(b.abs().max() / k.abs() * (1 - momentum)) + 1.0


@pytest.mark.parametrize("foreach", [False, True])
def test_a_momentum_changed_by_a_scheduler_is_counted_step_by_step(foreach: bool) -> None:
    """The growth adds ``-log2(momentum)`` of each accumulating step, so a momentum that changes mid-stretch (as
    OneCycleLR cycles it) is counted as it was: three steps at 0.5 and then 0.9 renormalise after 13 more at 0.5
    or (16 - 3) / 0.152 = 85 more at 0.9, not after 105; the buffer still follows the recursion."""
    torch.manual_seed(9)
    shapes = [(4, 3), (70, 1000)]
    w0 = [torch.randn(s, dtype=torch.float64) for s in shapes]
    momenta = [0.5] * 4 + [0.9] * 116
    grads = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in momenta]
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = LARS(params, lr=0.01, momentum=0.5, eps=0.0, min_norm=0.0, foreach=foreach)
    seen = _forms(opt, params, grads, momenta)
    assert seen[:4] == [0.0, 1.0, 2.0, 3.0]
    step = -math.log2(0.9)
    first_reset = next(t for t, g in enumerate(seen) if t > 0 and g == 0.0)
    assert first_reset == 4 + int((16.0 - 3.0) / step)
    assert max(seen) <= 16.0
    plain = [nn.Parameter(w.clone()) for w in w0]
    reference = LARS(plain, lr=0.01, momentum=0.5, eps=0.0, min_norm=0.0, foreach=False, factored_momentum=False)
    for gs, m in zip(grads, momenta):
        reference.param_groups[0]["momentum"] = m
        for p, g in zip(plain, gs):
            p.grad = g.clone()
        reference.step()
    for p, q in zip(params, plain):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(opt.momentum_buffer(p), reference.momentum_buffer(q), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("foreach", [False, True])
def test_a_state_without_momentum_growth_renormalises_first_and_continues_the_run(foreach: bool) -> None:
    """A checkpoint written before ``momentum_growth`` existed (or one whose growth was removed) takes one
    renormalising step, then accumulates again; the run continues as the uninterrupted one."""
    torch.manual_seed(7)
    w0, grads = torch.randn(6, 5, dtype=torch.float64), [torch.randn(6, 5, dtype=torch.float64) for _ in range(6)]
    a = nn.Parameter(w0.clone())
    opt = LARS([a], lr=0.05, momentum=0.5, foreach=foreach)
    for g in grads[:3]:
        a.grad = g.clone()
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["momentum_growth"] == 2.0
    del sd["state"][0]["momentum_growth"]
    b = nn.Parameter(a.detach().clone())
    twin = LARS([b], lr=0.05, momentum=0.5, foreach=foreach)
    twin.load_state_dict(sd)
    for step, g in enumerate(grads[3:]):
        a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        twin.step()
        assert twin.state[b]["momentum_growth"] == float(step)  # 0 after the renormalising step, then counting
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(twin.momentum_buffer(b), opt.momentum_buffer(a), rtol=1e-13, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_float16_factored_buffers_always_renormalise(foreach: bool) -> None:
    """A float16 buffer keeps the plain form by default; factored on request, it never accumulates (its range ends
    at 65504): its growth stays 0."""
    p = nn.Parameter(torch.randn(8, 8).half())
    assert "momentum_scale" not in _stepped(LARS([p], lr=0.01, momentum=0.9, foreach=foreach), p)
    opt = LARS([p], lr=0.01, momentum=0.9, foreach=foreach, factored_momentum=True)
    for _ in range(4):
        p.grad = torch.randn(8, 8).half()
        opt.step()
        assert opt.state[p]["momentum_growth"] == 0.0
    assert torch.isfinite(opt.state[p]["momentum_buffer"]).all()


@pytest.mark.parametrize("foreach", [False, True])
def test_switching_between_factored_and_plain_buffers_continues_the_same_run(foreach: bool) -> None:
    """A factored state (CPU) loaded where buffers are plain (a GPU, or ``factored_momentum=False``) is folded once
    into the plain buffer, and back: the run continues as if nothing had changed."""
    torch.manual_seed(8)
    shapes = [(3, 4), (5,), (40, 30)]
    kwargs = {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "foreach": foreach}
    ref = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    moved = [nn.Parameter(p.detach().clone()) for p in ref]
    ref_opt = LARS(ref, **kwargs)  # type: ignore[arg-type]
    opt = LARS(moved, **kwargs)  # type: ignore[arg-type]
    for step in range(9):
        grads = [torch.randn(s, dtype=torch.float64) for s in shapes]
        if step in (3, 6):  # 3: factored -> plain through a state dict; 6: plain -> factored by the group flag
            if step == 3:
                sd = copy.deepcopy(opt.state_dict())
                opt = LARS(moved, **kwargs)  # type: ignore[arg-type]
                opt.load_state_dict(sd)
                # What a GPU gets with the default (None); on the CPU, asked for (a saved group's settings win
                # over the constructor's in load_state_dict, as torch's optimizers do).
                opt.param_groups[0]["factored_momentum"] = False
            else:
                opt.param_groups[0]["factored_momentum"] = True
        for ps in (ref, moved):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        ref_opt.step()
        opt.step()
        for p, q in zip(moved, ref):
            assert ("momentum_scale" in opt.state[p]) == (step < 3 or step >= 6)
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-13, atol=1e-15)
            torch.testing.assert_close(opt.momentum_buffer(p), ref_opt.momentum_buffer(q), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "case",
    [
        {"momentum": 0.9},
        {"momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1, "maximize": True},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
    ],
    ids=str,
)
def test_large_cpu_tensors_take_their_sweeps_one_at_a_time_and_match_the_loop(case: dict[str, Any]) -> None:
    """On the CPU, tensors of 2^16 elements or more get their buffer's sweep (``addcmul_`` in the accumulating form,
    ``lerp_`` in the renormalising one) and their weight's ``addcmul_`` back to back, the others the foreach kernels;
    with a buffer created late (one gradient missing on the first step) the result is the loop's."""
    torch.manual_seed(11)
    shapes = [(300, 300), (4,), (256, 300), (7, 3)]
    w0 = [torch.randn(s, dtype=torch.float64) for s in shapes]
    fast = [nn.Parameter(w.clone()) for w in w0]
    slow = [nn.Parameter(w.clone()) for w in w0]
    opts = [LARS(ps, lr=0.05, foreach=fe, **case) for ps, fe in ((fast, True), (slow, False))]
    for step in range(4):
        grads = [torch.randn(sh, dtype=torch.float64) for sh in shapes]
        for ps, opt in zip((fast, slow), opts):
            for i, (p, g) in enumerate(zip(ps, grads)):
                p.grad = None if (step == 0 and i == 2) else g.clone()
            if step == 2 and ps is fast:
                with torch.profiler.profile() as prof:
                    opt.step()
                # sweeps of their own (the CPU foreach kernels make their own per-tensor calls inside): a buffer sweep
                # and one (Nesterov: two) weight sweeps for each of the two large tensors; for the small ones one
                # foreach kernel per sweep
                sweeps = ("aten::lerp_", "aten::addcmul_")
                own = [
                    e.name
                    for e in prof.events()
                    if e.name in sweeps and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::_foreach"))
                ]
                per_tensor = 3 if case.get("nesterov") else 2
                assert len(own) == 2 * per_tensor
                assert sum(e.name in ("aten::_foreach_lerp_", "aten::_foreach_addcmul_") for e in prof.events()) == (
                    per_tensor
                )
            else:
                opt.step()
    for p, q in zip(fast, slow):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opts[0].momentum_buffer(p), opts[1].momentum_buffer(q), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_functional_form_keeps_plain_buffers_without_scales(foreach: bool) -> None:
    """Without ``momentum_scale_list`` the caller's buffers are the heavy-ball buffers after every call."""
    torch.manual_seed(6)
    w0, g1, g2 = (torch.randn(4, dtype=torch.float64) for _ in range(3))
    ref_w, ref_bufs = _plain_lars_momentum(
        [w0],
        [[g1], [g2]],
        lr=0.1,
        momentum=0.9,
        dampening=0.2,
        nesterov=False,
        weight_decay=0.0,
        maximize_per_step=[False, False],
    )
    w = w0.clone()
    bufs: list[Tensor | None] = [None]
    lars([w], [g1], bufs, lr=0.1, momentum=0.9, dampening=0.2, eps=0.0, min_norm=0.0, foreach=foreach)
    lars([w], [g2], bufs, lr=0.1, momentum=0.9, dampening=0.2, eps=0.0, min_norm=0.0, foreach=foreach)
    torch.testing.assert_close(w, ref_w[0], rtol=1e-14, atol=0)
    torch.testing.assert_close(bufs[0], ref_bufs[0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_state_without_momentum_scale_reads_the_buffer_as_plain(foreach: bool) -> None:
    """A state dict holding only ``momentum_buffer`` (no scale) continues as if the buffer were the plain one."""
    torch.manual_seed(7)
    w0, g1, g2 = (torch.randn(5, dtype=torch.float64) for _ in range(3))
    kwargs = {"lr": 0.1, "momentum": 0.9, "eps": 0.0, "min_norm": 0.0, "foreach": foreach}
    a = nn.Parameter(w0.clone())
    opt = LARS([a], **kwargs)  # type: ignore[arg-type]
    a.grad = g1.clone()
    opt.step()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the state's tensors
    plain = opt.momentum_buffer(a)
    assert plain is not None
    sd["state"][0]["momentum_buffer"] = plain.clone()
    del sd["state"][0]["momentum_scale"]
    b = nn.Parameter(a.detach().clone())
    twin = LARS([b], **kwargs)  # type: ignore[arg-type]
    twin.load_state_dict(sd)
    a.grad, b.grad = g2.clone(), g2.clone()
    opt.step()
    twin.step()
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(twin.momentum_buffer(b), opt.momentum_buffer(a), rtol=1e-14, atol=0)


def test_zero_ratio_gives_a_zero_scale_and_finite_steps() -> None:
    """A ratio that underflows to 0 makes k = 0 (and v = 0 beside it): no 0/0 in the buffer's coefficients, and
    when the ratio comes back, mid-way through an accumulating stretch, the buffer restarts at ``ratio * g``
    exactly."""
    for foreach in (False, True):
        p = nn.Parameter(torch.tensor([1e-200, 2e-200], dtype=torch.float64))
        opt = LARS([p], lr=0.1, momentum=0.9, eps=0.0, min_norm=0.0, norm="l1", foreach=foreach)
        for _ in range(2):
            p.grad = torch.tensor([1e200, 1e200], dtype=torch.float64)  # ||w||_1 / ||g||_1 = 0 in float64
            opt.step()
            assert float(opt.state[p]["trust_ratio"]) == 0.0
            assert float(opt.state[p]["momentum_scale"]) == 0.0
            assert not opt.state[p]["momentum_buffer"].any()
        assert opt.state[p]["momentum_growth"] == pytest.approx(-math.log2(0.9))  # the next step accumulates
        torch.testing.assert_close(p.detach(), torch.tensor([1e-200, 2e-200], dtype=torch.float64), rtol=0, atol=0)
        w = p.detach().clone()
        g = torch.tensor([3e-200, 4e-200], dtype=torch.float64)
        p.grad = g.clone()
        opt.step()  # buf = 0.9 * 0 + ratio * g
        torch.testing.assert_close(p.detach(), w - 0.1 * (w.abs().sum() / g.abs().sum()) * g, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multithreaded_cpu_l2_norms_use_dot_and_match_vector_norm(dtype: torch.dtype) -> None:
    """With several CPU threads the foreach L2 norms of large contiguous tensors are sqrt(dot(t, t)), the others
    come from one _foreach_norm call; all agree with vector_norm, in the order given."""
    torch.manual_seed(8)
    shapes = [(64, 3, 7, 7), (256, 64, 2, 2), (512,), (10, 4), (0,), (3, 5), (300, 300)]
    tensors = [torch.randn(s, dtype=dtype) for s in shapes]
    tensors.append(torch.randn(400, 200, dtype=dtype).t())  # large but not contiguous: _foreach_norm
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.profiler.profile() as prof:
            fast = local_norms(tensors, "l2", foreach=True)
        assert sum(e.name == "aten::dot" for e in prof.events()) == 2  # (256, 64, 2, 2) and (300, 300)
        assert sum(e.name == "aten::_foreach_norm" for e in prof.events()) == 1
    finally:
        torch.set_num_threads(threads)
    ref = local_norms(tensors, "l2", foreach=False)
    # Two float32 summation orders over up to 90,000 squares (BLAS's SIMD lanes against torch's reduction): they
    # differ by about sqrt(n) * eps = 1.8e-5 relative (1.02e-6 measured on an AVX-512 Xeon, 1e-6 was too tight).
    tol = {"rtol": 2e-5, "atol": 0.0} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 0.0}
    for a, b in zip(fast, ref):
        assert a.dtype == b.dtype == dtype and a.shape == ()
        torch.testing.assert_close(a, b, **tol)
    assert float(fast[4]) == 0.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_l1_norms_of_large_tensors_are_sums_by_slices(dtype: torch.dtype, threads: int) -> None:
    """The foreach L1 norms of large contiguous CPU tensors are sum(|t|) taken slice by slice (one slice, several,
    and a short last one), the others come from one _foreach_norm call; all agree with the float64 norm, in the
    order given, whatever the thread count."""
    torch.manual_seed(9)
    chunk = _L1_CHUNK_BYTES // torch.empty((), dtype=dtype).element_size()
    shapes = [(64, 3, 7, 7), (1 << 16,), (512,), (0,), (2 * chunk + 5,), (3, 5), (chunk,)]
    tensors = [torch.randn(s, dtype=dtype) for s in shapes]
    tensors.append(torch.randn(400, 200, dtype=dtype).t())  # large but not contiguous: _foreach_norm
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.profiler.profile() as prof:
            fast = local_norms(tensors, "l1", foreach=True)
    finally:
        torch.set_num_threads(saved)
    # slices: 1 (2^16 elements) + 3 (2 chunks + 5) + 1 (one chunk), one abs and one sum each
    assert sum(e.name == "aten::abs" for e in prof.events()) == 5
    assert sum(e.name == "aten::_foreach_norm" for e in prof.events()) == 1
    # float32: the sliced sums (tensors 1, 4, 6) within 1e-6 of float64; _foreach_norm's sequential L1 kernel
    # within 3.7e-6 measured on the 80,000-element transpose, allowed 2e-5.
    for i, (t, a) in enumerate(zip(tensors, fast)):
        assert a.dtype == dtype and a.shape == ()
        rtol = (1e-6 if i in (1, 4, 6) else 2e-5) if dtype == torch.float32 else 1e-13
        torch.testing.assert_close(a.double(), t.double().abs().sum(), rtol=rtol, atol=0.0)
    assert float(fast[3]) == 0.0


def test_l1_norms_of_tensors_that_require_grad_keep_autograd() -> None:
    """Called with gradients enabled on tensors that require them (a user's logging, not a step), the foreach L1
    norms of large tensors come from torch's kernel, which autograd records, instead of the sliced sums, whose
    ``abs(out=)`` autograd refuses; under no_grad the sliced sums are used."""
    torch.manual_seed(13)
    p = nn.Parameter(torch.randn(1 << 17))
    (norm,) = local_norms([p], "l1", foreach=True)
    assert norm.requires_grad
    norm.backward()
    torch.testing.assert_close(p.grad, torch.sign(p.detach()))
    with torch.no_grad(), torch.profiler.profile() as prof:
        (plain,) = local_norms([p], "l1", foreach=True)
    assert sum(e.name == "aten::abs" for e in prof.events()) == 1 and not plain.requires_grad
    torch.testing.assert_close(plain, norm.detach(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("norm", ["l1", "mean_ratio"])
def test_percentdelta_foreach_with_sliced_l1_norms_matches_the_loop(norm: str) -> None:
    """PercentDelta's foreach step, whose large tensors take the sliced L1 norms (of the weights and gradients, or of
    the element-wise ratios), equals the reference loop."""
    torch.manual_seed(12)
    shapes = [(600, 500), (1 << 16,), (7, 3), (5,)]
    fast_ps = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    loop_ps = [nn.Parameter(p.detach().clone()) for p in fast_ps]
    fast = LARS(fast_ps, lr=0.1, momentum=0.9, weight_decay=1e-3, norm=norm, foreach=True)
    loop = LARS(loop_ps, lr=0.1, momentum=0.9, weight_decay=1e-3, norm=norm, foreach=False)
    for step in range(3):
        for a, b in zip(fast_ps, loop_ps):
            g = torch.randn(a.shape, dtype=torch.float64)
            a.grad, b.grad = g.clone(), g.clone()
        fast.step()
        loop.step()
        # The ratios agree to the summation order on the same weights (the first step). After it the weights differ
        # by roundings, which "mean_ratio" magnifies: its ratios |u| / (|w| + eps) are large where w is near 0
        # (measured 9e-10 relative by the third step).
        rtol = 1e-12 if step == 0 or norm == "l1" else 1e-8
        for a, b in zip(fast_ps, loop_ps):
            torch.testing.assert_close(fast.state[a]["trust_ratio"], loop.state[b]["trust_ratio"], rtol=rtol, atol=0)
    for a, b in zip(fast_ps, loop_ps):  # steps of about 1e-2 whose ratios differ as above
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12 if norm == "l1" else 1e-9)


@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_bfloat16_cpu_norms_are_close_to_float64(norm: str) -> None:
    """bfloat16 norms on the CPU (native kernel, rounded to bfloat16, returned as float32) within 2^-8 of float64."""
    torch.manual_seed(10)
    tensors = [torch.randn(s).to(torch.bfloat16) for s in [(64, 3, 7, 7), (512,), (3, 5), (0,)]]
    ord_ = {"l1": 1.0, "l2": 2.0, "linf": math.inf}[norm]
    fast = local_norms(tensors, norm, foreach=True)
    loop = local_norms(tensors, norm, foreach=False)
    for t, a, b in zip(tensors, fast, loop):
        assert a.dtype == b.dtype == torch.float32 and a.shape == ()
        ref = torch.linalg.vector_norm(t.double(), ord_) if t.numel() else torch.zeros((), dtype=torch.float64)
        torch.testing.assert_close(a.double(), ref, rtol=2**-8, atol=0)
        torch.testing.assert_close(b.double(), ref, rtol=2**-8, atol=0)


def test_bfloat16_lars_foreach_is_close_to_the_loop() -> None:
    torch.manual_seed(11)
    ps_fast = [nn.Parameter(torch.randn(s).to(torch.bfloat16)) for s in [(16, 8), (8,), (4, 4, 3)]]
    ps_slow = [nn.Parameter(p.detach().clone()) for p in ps_fast]
    fast = LARS(ps_fast, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=True)
    slow = LARS(ps_slow, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=False)
    for _ in range(3):
        for a, b in zip(ps_fast, ps_slow):
            g = torch.randn(a.shape).to(torch.bfloat16)
            a.grad, b.grad = g.clone(), g.clone()
        fast.step()
        slow.step()
    for a, b in zip(ps_fast, ps_slow):
        torch.testing.assert_close(a.detach().float(), b.detach().float(), rtol=2e-2, atol=2e-2)


def test_bfloat16_state_dict_keeps_the_momentum_scale_in_float32() -> None:
    torch.manual_seed(13)
    a = nn.Parameter(torch.randn(4, 3).to(torch.bfloat16))
    opt = LARS([a], lr=0.1, momentum=0.9)
    for _ in range(2):
        a.grad = torch.randn(4, 3).to(torch.bfloat16)
        opt.step()
    scale = opt.state[a]["momentum_scale"]
    assert scale.dtype == torch.float32
    b = nn.Parameter(a.detach().clone())
    twin = LARS([b], lr=0.1, momentum=0.9)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert twin.state[b]["momentum_scale"].dtype == torch.float32
    assert twin.state[b]["momentum_buffer"].dtype == torch.bfloat16
    torch.testing.assert_close(twin.state[b]["momentum_scale"], scale, rtol=0, atol=0)
    g = torch.randn(4, 3).to(torch.bfloat16)
    a.grad, b.grad = g.clone(), g.clone()
    opt.step()
    twin.step()
    torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=0)


def test_compiled_l2_norms_match_vector_norm() -> None:
    """``_compiled_l2_norms`` (the compiled step's L2 norms, called here eagerly) on the row path (sizes that divide
    by 4096), the flat path, a non-contiguous tensor, an empty one and bfloat16 tensors (accumulated in float32);
    a nan in ``p`` leaves the norm of ``u`` as it is."""
    from theorylr.optim._norms import _compiled_l2_norms

    torch.manual_seed(9)
    shapes = [(2, 4096), (8192,), (3, 5000), (7,), (0,)]
    ps = [torch.randn(s) for s in shapes] + [torch.randn(64, 128).t()]
    us = [torch.randn(p.shape) for p in ps]
    norms = _compiled_l2_norms(ps, us)
    assert len(norms) == 2 * len(ps) and all(v.shape == () for v in norms)
    torch.testing.assert_close(torch.stack(norms), torch.stack(local_norms(ps + us, "l2")), rtol=1e-6, atol=0.0)

    p = torch.randn(2, 4096)
    p[1, 7] = float("nan")
    u = torch.randn(2, 4096)
    w_norm, u_norm = _compiled_l2_norms([p], [u])
    assert torch.isnan(w_norm)
    torch.testing.assert_close(u_norm, torch.linalg.vector_norm(u), rtol=1e-6, atol=0.0)

    pb, ub = torch.randn(3, 4096).bfloat16(), torch.randn(3, 4096).bfloat16()
    wb, vb = _compiled_l2_norms([pb], [ub])
    assert wb.dtype == vb.dtype == torch.float32
    torch.testing.assert_close(wb, torch.linalg.vector_norm(pb.double()).float(), rtol=1e-6, atol=0.0)
    torch.testing.assert_close(vb, torch.linalg.vector_norm(ub.double()).float(), rtol=1e-6, atol=0.0)
