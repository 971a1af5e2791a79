"""Low-precision and mixed-dtype edges of the optimizers, each once a silent wrong result: a float16 second-moment
step with a tensor lr that vanished (the denominator divided by lr past 65504), a float16 AutoAdam step that was
inf (eps underflowed), a tensor lr cast to the first parameter's dtype for a whole mixed group, PercentDelta's
element-wise ratios computed in float16, and complex tensors that the functional forms took without a word. Each
fix is checked on the reference loop and the multi-tensor path, which must agree."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr.optim import AdaMo, AdaptiveRMSprop, AutoAdam, PercentDelta
from theorylr.optim.adaptive import adaptive_lipschitz
from theorylr.optim.lars import _norm_inputs, _norm_inputs_foreach, lars

SECOND_MOMENT = [AutoAdam, AdaptiveRMSprop]
ADAPTIVE = [AdaMo, AutoAdam, AdaptiveRMSprop]


def _one_step(cls: type[Optimizer], params: list[nn.Parameter], grads: list[Tensor], **kwargs: Any) -> list[Tensor]:
    """Step ``cls`` once on ``params`` with ``grads``; return how far each parameter moved."""
    before = [p.detach().clone() for p in params]
    opt = cls(params, **kwargs)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    return [p.detach() - b for p, b in zip(params, before)]


# ----------------------------------------------------------------------------------------------------------------
# 1. float16 second-moment steps (AutoAdam, AdaptiveRMSprop)
# ----------------------------------------------------------------------------------------------------------------
def _float16_step(cls: type[Optimizer], lr: float | Tensor, foreach: bool) -> Tensor:
    w = nn.Parameter(torch.tensor([0.01, -0.01, 0.01]).half())
    grad = torch.tensor([100.0, -50.0, 20.0]).half()
    return _one_step(cls, [w], [grad], lr=lr, foreach=foreach)[0]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cls", SECOND_MOMENT)
def test_a_float16_step_with_a_tensor_lr_equals_the_step_with_a_number(cls: type[Optimizer], foreach: bool) -> None:
    """The denominator ``sqrt(S) / scale`` (about |g| here) divided by ``-lr = -1e-4`` left float16's range: inf, a
    zero step. With a number lr every coordinate moved by about lr (9.9e-5); with a tensor lr AutoAdam's first
    coordinate and all three of AdaptiveRMSprop's stayed put."""
    by_number = _float16_step(cls, 1e-4, foreach)
    by_tensor = _float16_step(cls, torch.tensor(1e-4), foreach)
    assert (by_number.abs() > 9e-5).all()
    assert torch.equal(by_tensor, by_number)


@pytest.mark.parametrize("cls", SECOND_MOMENT)
@pytest.mark.parametrize("lr", [1e-4, torch.tensor(1e-4)], ids=["number", "tensor"])
def test_float16_second_moment_steps_equal_float32_steps_to_float16_rounding(
    cls: type[Optimizer], lr: float | Tensor
) -> None:
    """Over a few steps, including gradients whose ``(1 - beta2) g^2`` underflows float16 (there ``eps = 1e-8``
    vanished too, and ``V / sqrt(S + eps)`` was ``V / 0 = inf``), the float16 run follows the float32 run, on
    both paths, and the paths agree bit for bit."""
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 16, generator=gen) * 0.01  # float16's spacing (at most 8e-6 here) below the steps
    grads = [torch.randn(2, 16, generator=gen) * scale for scale in (30.0, 1.0, 1e-3, 1e-4)]
    runs: dict[tuple[torch.dtype, bool], Tensor] = {}
    for dtype in (torch.float32, torch.float16):
        for foreach in (False, True):
            ws = [nn.Parameter(w0[0].to(dtype, copy=True)), nn.Parameter(w0[1].to(dtype, copy=True))]
            opt = cls(ws, lr=lr, foreach=foreach)
            for g in grads:
                ws[0].grad, ws[1].grad = g[0].to(dtype), g[1].to(dtype)
                opt.step()
            runs[dtype, foreach] = torch.stack([w.detach() for w in ws])
    assert torch.equal(runs[torch.float16, True], runs[torch.float16, False])
    assert torch.isfinite(runs[torch.float16, False]).all()
    moved16 = runs[torch.float16, False].float() - w0.half().float()
    moved32 = runs[torch.float32, False] - w0
    # four roundings to float16's spacing (at most 1.5e-5 below 0.03): moves of 1e-5 to 3e-3 are followed closely
    torch.testing.assert_close(moved16, moved32, rtol=0.0, atol=6e-5)
    assert (moved16 != 0).all()


@pytest.mark.parametrize("cls", SECOND_MOMENT)
def test_the_float16_step_with_a_tensor_lr_compiles_without_graph_breaks_and_matches_eager(
    cls: type[Optimizer],
) -> None:
    def build() -> tuple[Optimizer, nn.Parameter]:
        w = nn.Parameter(torch.tensor([0.01, -0.01, 0.01, 0.02]).half())
        return cls([w], lr=torch.tensor(1e-4)), w

    eager, w_eager = build()
    compiled, w_compiled = build()
    step = torch.compile(compiled.step, fullgraph=True, backend="eager")
    torch._dynamo.reset()
    try:
        for scale in (1.0, 0.01):
            g = torch.tensor([100.0, -50.0, 20.0, 1.0]).half() * scale
            w_eager.grad, w_compiled.grad = g.clone(), g.clone()
            eager.step()
            step()
        assert torch.equal(w_compiled.detach(), w_eager.detach())
        assert (w_eager.detach() != torch.tensor([0.01, -0.01, 0.01, 0.02]).half()).all()
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------------------------
# 2. groups mixing dtypes
# ----------------------------------------------------------------------------------------------------------------
def _mixed_bf16_float64(cls: type[Optimizer], lr: float | Tensor, foreach: bool) -> Tensor:
    a = nn.Parameter(torch.linspace(-1, 1, 5).bfloat16())
    b = nn.Parameter(torch.linspace(-1, 1, 7, dtype=torch.float64))
    grads = [torch.linspace(0.5, 2, 5).bfloat16(), torch.linspace(-2, 3, 7, dtype=torch.float64)]
    return _one_step(cls, [a, b], grads, lr=lr, foreach=foreach)[1]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cls", ADAPTIVE)
def test_a_tensor_lr_reaches_each_parameter_of_a_mixed_group_in_its_own_dtype(
    cls: type[Optimizer], foreach: bool
) -> None:
    """A float64 lr tensor of 0.003 gives the float64 parameter of a [bfloat16, float64] group the step of the
    number 0.003: the multi-tensor path cast it to the first parameter's dtype (bfloat16, 0.0030059: 2e-3 off)."""
    expected = _mixed_bf16_float64(cls, 0.003, foreach=False)
    got = _mixed_bf16_float64(cls, torch.tensor(0.003, dtype=torch.float64), foreach=foreach)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("cls", ADAPTIVE)
def test_a_float32_lr_tensor_on_a_mixed_group_gives_the_loop_and_foreach_the_same_step(cls: type[Optimizer]) -> None:
    lr = torch.tensor(0.003)
    loop = _mixed_bf16_float64(cls, lr, foreach=False)
    fast = _mixed_bf16_float64(cls, lr, foreach=True)
    torch.testing.assert_close(fast, loop, rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("lr", [1.0, torch.tensor(1.0)], ids=["number", "tensor"])
@pytest.mark.parametrize("cls", ADAPTIVE)
def test_a_float16_parameter_after_a_float32_one_keeps_its_step_out_of_float16(
    cls: type[Optimizer], lr: float | Tensor
) -> None:
    """In a [float32, float16] group the multi-tensor path chose its float16 handling by the first parameter: the
    float16 one took AdaMo's step size -lr / K1 (7e5 for gradients of 1e-6) in float16, inf. AutoAdam's and
    AdaptiveRMSprop's float16 steps were inf on both paths (``eps`` underflowed)."""
    results = []
    for foreach in (False, True):
        a = nn.Parameter(torch.tensor([0.01, 0.02]))  # small weights: float16's spacing below AutoAdam's step
        b = nn.Parameter(torch.tensor([0.01, 0.02]).half())
        grads = [torch.tensor([1e-6, -1e-6]), torch.tensor([1e-6, -1e-6]).half()]
        results.append(_one_step(cls, [a, b], grads, lr=lr, foreach=foreach))
    for loop, fast in zip(*results):
        assert torch.isfinite(loop).all()
        assert torch.equal(fast, loop)
    # of the float32 step's size (float16 rounds the subnormal gradients and V by up to 20 %)
    torch.testing.assert_close(results[0][1].float(), results[0][0], rtol=0.25, atol=0.0)


# ----------------------------------------------------------------------------------------------------------------
# 3. PercentDelta's element-wise ratios (norm="mean_ratio") for 16-bit weights
# ----------------------------------------------------------------------------------------------------------------
def _percent_delta_case(w_small: float, g_big: float | None) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.rand(1000, generator=gen) + 0.5
    w0[0] = w_small
    g = torch.randn(1000, generator=gen)
    if g_big is not None:
        g[0] = g_big
    return w0, g


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("w_small", "g_big"), [(1e-5, None), (1e-3, 100.0)], ids=["tiny-weight", "ratio-1e5"])
def test_float16_mean_ratio_trust_ratio_follows_the_rule(w_small: float, g_big: float | None, foreach: bool) -> None:
    """ratio = 1 / mean(|g| / (|w| + eps)) of the float16 values: with a weight of 1e-5 the float16 floor (6.1e-5)
    made the ratio 5.8x too large; with |g| / |w| = 1e5 the float16 ratio overflowed, the mean was inf, the ratio 0
    and the tensor frozen."""
    w0, g = _percent_delta_case(w_small, g_big)
    w = nn.Parameter(w0.half())
    grad = g.half()
    rule = 1 / (grad.double().abs() / (w.detach().double().abs() + 1e-8)).mean()
    opt = PercentDelta([w], lr=0.1, norm="mean_ratio", foreach=foreach)
    w.grad = grad
    opt.step()
    torch.testing.assert_close(opt.state[w]["trust_ratio"].double(), rule, rtol=1e-5, atol=0.0)
    assert not torch.equal(w.detach(), w0.half())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.01, "momentum": 0.9}, {"denominator": "sum"}], ids=str)
def test_16_bit_mean_ratio_steps_equal_on_both_paths(dtype: torch.dtype, options: dict[str, Any]) -> None:
    """A group of 16-bit weights beside a float32 one: the loop and the multi-tensor path agree bit for bit (the
    ratios are float32 on both; the weights' norms keep their own bucket, as before)."""
    runs = []
    for foreach in (False, True):
        gen = torch.Generator().manual_seed(1)
        ws = [nn.Parameter((torch.rand(n, generator=gen) + 0.5).to(dtype)) for n in (50, 30, 7)]
        ws.append(nn.Parameter(torch.rand(9, generator=gen) + 0.5))
        ws[0].data[0] = 1e-5
        opt = PercentDelta(ws, lr=0.1, norm="mean_ratio", foreach=foreach, **options)
        for _ in range(2):
            for w in ws:
                w.grad = torch.randn(w.shape, generator=gen).to(w.dtype)
            opt.step()
        runs.append([w.detach().clone() for w in ws] + [opt.state[w]["trust_ratio"].clone() for w in ws])
    for fast, loop in zip(runs[1], runs[0]):
        assert torch.equal(fast, loop)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("denominator", ["decayed", "sum"])
def test_float32_and_float64_ratios_are_unchanged_bit_for_bit(dtype: torch.dtype, denominator: str) -> None:
    """The ratios of float32/float64 weights are the former ones, ``|u| / max(|w| + eps, tiny)`` in their dtype."""
    gen = torch.Generator().manual_seed(2)
    params = [torch.rand(n, generator=gen, dtype=dtype) + 0.5 for n in (20, 3)]
    params[0][0] = 1e-40 if dtype == torch.float64 else 1e-30
    grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in params]
    dirs = [g.add(p, alpha=0.1) for g, p in zip(grads, params)]
    second = dirs if denominator == "decayed" else grads
    tiny = torch.finfo(dtype).tiny
    former = [u.abs().div_((p.abs() + 1e-8).clamp_min_(tiny)) for p, u in zip(params, second)]
    for fn in (_norm_inputs, _norm_inputs_foreach):
        tensors, name = fn(params, grads, dirs, norm="mean_ratio", denominator=denominator, eps=1e-8)
        assert name == "l1"
        for got, want in zip(tensors[len(params) :], former):
            assert got.dtype == dtype and torch.equal(got, want)


# ----------------------------------------------------------------------------------------------------------------
# 4. complex tensors in the functional forms
# ----------------------------------------------------------------------------------------------------------------
def _adaptive_call(params: list[Tensor], grads: list[Tensor], foreach: bool) -> None:
    real = torch.zeros((), dtype=torch.float32)
    adaptive_lipschitz(
        params,
        grads,
        None,
        [torch.zeros_like(p) for p in params],
        [real.clone() for _ in params],
        [real.clone() for _ in params],
        [real.clone() for _ in params],
        lipschitz=torch.tensor(1.0),
        lipschitz_sq=torch.tensor(1.0),
        lr=0.1,
        beta1=0.0,
        beta2=0.9,
        eps=1e-8,
        weight_decay=0.0,
        bias_correction=False,
        initial_step_size=None,
        initial_steps=0,
        maximize=False,
        foreach=foreach,
    )


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("which", ["params", "grads"])
def test_adaptive_lipschitz_refuses_complex_tensors_naming_the_argument(which: str, foreach: bool) -> None:
    """``g * g`` is not ``|g|^2`` for a complex ``g``: a complex parameter took a wrong step without a word."""
    w = torch.tensor([1.0, 2.0]) if which == "grads" else torch.tensor([1 + 1j, 2 - 1j])
    g = torch.tensor([1j, 1 + 0j])
    before = w.clone()
    with pytest.raises(ValueError, match=rf"adaptive_lipschitz: {which} must be real .*complex64.*view_as_real"):
        _adaptive_call([torch.zeros(3), w], [torch.ones(3), g], foreach)
    assert torch.equal(w, before)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("which", ["params", "grads"])
@pytest.mark.parametrize("kwargs", [{}, {"norm": "mean_ratio"}, {"norm": "linf"}, {"adapt": False}], ids=str)
def test_lars_refuses_complex_tensors_naming_the_argument(which: str, kwargs: dict[str, Any], foreach: bool) -> None:
    """The functional LARS failed inside torch's norm kernels (``vector_norm``, ``aminmax``) with messages that
    did not name the argument, or, without adaptation, took the complex step."""
    w = torch.tensor([1.0, 2.0]) if which == "grads" else torch.tensor([1 + 1j, 2 - 1j])
    g = torch.tensor([1j, 1 + 0j])
    before = w.clone()
    with pytest.raises(ValueError, match=rf"lars: {which} must be real .*complex64.*view_as_real"):
        lars([w], [g], [None], lr=0.1, foreach=foreach, **kwargs)
    assert torch.equal(w, before)


def test_the_optimizer_classes_still_refuse_complex_parameters_with_their_own_message() -> None:
    p = nn.Parameter(torch.randn(3, dtype=torch.complex64))
    p.grad = torch.randn(3, dtype=torch.complex64)
    for opt in (AutoAdam([p]), PercentDelta([p], lr=0.1)):
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            opt.step()


@pytest.mark.parametrize("foreach", [False, True])
def test_float32_second_moments_of_a_parameter_made_float16_are_not_overwritten(foreach: bool) -> None:
    """``model.half()`` after steps leaves float32 state beside a float16 parameter. The float16 path took its
    denominator as ``s.float()``, which is ``s`` itself for float32 ``s``, and wrote it into the state (the run went
    non-finite at step 5; torch's RMSprop keeps working)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = AdaptiveRMSprop([w], foreach=foreach)
    w.grad = torch.randn(4, 3)
    opt.step()
    before = opt.state[w]["exp_avg_sq"].clone()
    w.data = w.data.half()
    g = torch.randn(4, 3).half()
    w.grad = g
    opt.step()
    beta = opt.param_groups[0]["beta"]
    torch.testing.assert_close(opt.state[w]["exp_avg_sq"], beta * before + (1 - beta) * g.float() ** 2)
    x = torch.randn(32, 4)
    for _ in range(20):
        opt.zero_grad()
        (x.half() @ w).float().pow(2).mean().backward()
        opt.step()
    assert torch.isfinite(w).all()
