"""Gaps a mutation review of LARS, the optimizers' shared base and exact_step_adam found (209 mutants, 21 gaps):
each test kills a mutant that survived the rest of the suite; its docstring names the mutation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.optim.lars import LARS, lars


# ----------------------------------------------------------------------------------------------------------------
# LARS: the SGD fallback of the trust ratio (lars.py, _trust_ratio)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [False, True])
def test_a_weight_norm_exactly_at_min_norm_is_adapted(foreach: bool) -> None:
    """min_norm is a strict bound: "below this weight norm the ratio is 1" (kills `w_norm < min_norm` -> `<=`)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # ||w|| = 5 exactly
    opt = LARS([w], lr=0.1, eps=0.0, min_norm=5.0, foreach=foreach)
    w.grad = torch.tensor([0.0, 10.0], dtype=torch.float64)
    opt.step()
    assert float(opt.state[w]["trust_ratio"]) == 0.5
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5], dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_a_zero_gradient_logs_ratio_one_with_the_default_eps(foreach: bool, norm: str) -> None:
    """A zero denominator gives ratio 1 (documented), also with eps > 0, where ||w|| / (0 + eps) is finite
    (kills the removal of `(den == 0)` from the fallback: the logged ratio was ||w|| / eps = 5e8)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.9, norm=norm, foreach=foreach)  # eps = 1e-8
    w.grad = torch.zeros(2, dtype=torch.float64)
    opt.step()
    assert float(opt.state[w]["trust_ratio"]) == 1.0
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0], dtype=torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("norm", ["l2", "l1", "linf", "mean_ratio"])
def test_a_zero_weight_with_min_norm_zero_takes_an_sgd_step(foreach: bool, norm: str) -> None:
    """With min_norm=0 a zero weight still gets ratio 1 (an SGD step), so it can leave the origin (kills
    `if not min_norm > 0` -> `if min_norm > 0`: ratio 0 froze the tensor at zero for good)."""
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = LARS([w], lr=0.1, min_norm=0.0, norm=norm, foreach=foreach)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w.grad = g.clone()
    opt.step()
    assert float(opt.state[w]["trust_ratio"]) == 1.0
    torch.testing.assert_close(w.detach(), -0.1 * g, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------------------------
# LARS: the factored momentum buffer's bookkeeping (lars.py, lars() and _buffer_mode)
# ----------------------------------------------------------------------------------------------------------------
def test_functional_lars_without_momentum_leaves_a_growth_list_alone() -> None:
    """momentum=0 with a scale and a growth list is a plain step: the growth list is ignored (kills
    `momentum_scale_list is None or momentum == 0` -> `and`, which took log2(0): ValueError)."""
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)
    growth: list[float | None] = [None]
    scales: list[torch.Tensor | None] = [None]
    lars(
        [w],
        [torch.tensor([0.0, 10.0], dtype=torch.float64)],
        [None],
        None,
        scales,
        lr=0.1,
        eps=0.0,
        momentum=0.0,
        momentum_growth_list=growth,
    )
    assert growth == [None]
    torch.testing.assert_close(w, torch.tensor([3.0, 3.5], dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_a_grown_buffer_without_growth_beside_a_known_one_is_renormalised(foreach: bool) -> None:
    """One parameter's state lacks momentum_growth (a checkpoint saved before it existed) and its v has grown huge
    (tiny scale, same buffer); another's growth is known. The step must renormalise every buffer (documented:
    an entry None means "may have grown"), not accumulate into the unknown one (kills `len(known) == len(growths)`
    -> always true in _buffer_mode: v overflowed to inf, and the weights with it)."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(4))
    b = nn.Parameter(torch.randn(4))
    opt = LARS([a, b], lr=0.1, momentum=0.9, factored_momentum=True, foreach=foreach)
    for _ in range(2):
        a.grad, b.grad = torch.randn(4), torch.randn(4)
        opt.step()
    state = opt.state[a]
    before = opt.momentum_buffer(a)
    # The same buffer k * v, with v grown 2^120-fold: what an old checkpoint may hold.
    state["momentum_buffer"].mul_(2.0**120)
    state["momentum_scale"].copy_(state["momentum_scale"] / 2.0**120)
    del state["momentum_growth"]
    torch.testing.assert_close(opt.momentum_buffer(a), before)
    for _ in range(60):
        a.grad, b.grad = torch.randn(4), torch.randn(4)
        opt.step()
        assert torch.isfinite(opt.state[a]["momentum_buffer"]).all()
        assert torch.isfinite(a).all()
    assert float(opt.state[a]["momentum_buffer"].abs().max()) < 2.0**40  # renormalised at once, then bounded


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_maximize_with_a_gradient_equals_minimizing_with_its_negative(
    foreach: bool, factored: bool, nesterov: bool
) -> None:
    """maximize=True with g is maximize=False with -g (d = -g + wd w either way), for every buffer form and path
    (the generic suite checks only the default: factored buffer, foreach). Kills the plain buffer's first step
    without the sign (`scaled(u, ratio * sign)` -> `scaled(u, ratio)`) and its multi-tensor twin."""
    torch.manual_seed(0)
    w0 = [torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    grads = [[torch.randn_like(w) for w in w0] for _ in range(4)]
    up = [nn.Parameter(w.clone()) for w in w0]
    down = [nn.Parameter(w.clone()) for w in w0]
    kwargs = dict(
        lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01, factored_momentum=factored, foreach=foreach
    )
    opt_up, opt_down = LARS(up, maximize=True, **kwargs), LARS(down, **kwargs)
    for gs in grads:
        for p, q, g in zip(up, down, gs):
            p.grad, q.grad = g.clone(), -g
        opt_up.step()
        opt_down.step()
    for p, q in zip(up, down):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt_up.momentum_buffer(p), opt_down.momentum_buffer(q), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_mean_ratio_of_a_one_element_tensor(foreach: bool) -> None:
    """norm="mean_ratio" on a tensor of one element (a 0-dim gain): the mean of one ratio is that ratio, so
    the step is lr * (|w| + eps) * sign(g) (kills `max(p.numel(), 1)` -> `max(p.numel(), 2)` in the loop)."""
    for shape in ((), (1,)):
        w = nn.Parameter(torch.full(shape, 2.0, dtype=torch.float64))
        opt = LARS([w], lr=0.1, eps=0.0, norm="mean_ratio", foreach=foreach)
        w.grad = torch.full(shape, -5.0, dtype=torch.float64)
        opt.step()
        assert float(opt.state[w]["trust_ratio"]) == pytest.approx(2.0 / 5.0, rel=1e-15)
        torch.testing.assert_close(w.detach(), torch.full(shape, 2.2, dtype=torch.float64), rtol=1e-15, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_functional_factored_buffers_without_a_growth_list_follow_the_plain_recursion(
    foreach: bool, dampening: float
) -> None:
    """lars() given momentum_scale_list but no momentum_growth_list renormalises at every step (the "lerp"
    form, v += a (u - v)); buf = k * v must follow the plain heavy-ball recursion (kills `v.lerp_(u, a)` ->
    `v.addcmul_(u, a)` in _sweep_buffer, reached by the loop only without a growth list)."""
    torch.manual_seed(1)
    w0 = [torch.randn(6, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)]
    w_f, w_p = [w.clone() for w in w0], [w.clone() for w in w0]
    bufs_f: list[torch.Tensor | None] = [None, None]
    bufs_p: list[torch.Tensor | None] = [None, None]
    scales: list[torch.Tensor | None] = [None, None]
    for _ in range(5):
        gs = [torch.randn_like(w) for w in w0]
        common = dict(lr=0.05, momentum=0.8, dampening=dampening, weight_decay=0.02, foreach=foreach)
        lars(w_f, gs, bufs_f, None, scales, **common)
        lars(w_p, gs, bufs_p, **common)
    for a, b in zip(w_f, w_p):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for v, k, buf in zip(bufs_f, scales, bufs_p):
        torch.testing.assert_close(k * v, buf, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_a_factored_scale_that_would_underflow_keeps_its_old_value(foreach: bool) -> None:
    """The trust ratio is one subnormal ulp (||w|| / ||g|| = 5e-324): at the next accumulating step momentum * k
    rounds to 0. Documented: "a scale that would underflow to 0 from a non-zero one keeps its old value", so the
    buffer keeps its direction instead of being wiped (kills the removal of `torch.where(k == 0, old_scales, k)`
    in _momentum_scales)."""
    w = nn.Parameter(torch.tensor([1e-20], dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.5, eps=0.0, min_norm=0.0, norm="linf", factored_momentum=True, foreach=foreach)
    for _ in range(2):
        w.grad = torch.tensor([2e303], dtype=torch.float64)
        opt.step()
    assert float(opt.state[w]["trust_ratio"]) == 5e-324
    assert float(opt.state[w]["momentum_scale"]) == 5e-324
    buf = float(opt.momentum_buffer(w)[0])
    assert 1.4e-20 < buf < 2.1e-20  # the recursion's 1.48e-20, within k * |v| = 2e-20 (the documented error)


def test_functional_growth_of_a_buffer_made_this_step_is_zero() -> None:
    """momentum_growth_list counts v's growth "since it was made or renormalised": a buffer made at this step has
    grown 0, even when the caller passed a number for it and the other buffers accumulate (kills the removal of
    `not made[i]` in lars(): the new buffer was counted as grown by -log2(momentum))."""
    w = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64)]
    g = [torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)]
    bufs: list[torch.Tensor | None] = [g[0].clone(), None]
    scales: list[torch.Tensor | None] = [torch.tensor(0.5, dtype=torch.float64), None]
    growth: list[float | None] = [0.0, 0.0]
    lars(w, g, bufs, None, scales, lr=0.1, momentum=0.5, momentum_growth_list=growth, foreach=False)
    assert growth == [1.0, 0.0]  # the old buffer accumulated (v grows by 1 / 0.5), the new one holds u


@pytest.mark.parametrize("foreach", [False, True])
def test_a_plain_buffer_keeps_no_momentum_growth(foreach: bool) -> None:
    """momentum_growth is state of the factored buffer only (documented); a plain buffer's state holds
    momentum_buffer and trust_ratio (kills dropping `factored and` from the growth bookkeeping in step(), which
    wrote "momentum_growth": None into every plain state and so into state_dict)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.9, factored_momentum=False, foreach=foreach)
    for _ in range(2):
        w.grad = torch.tensor([0.0, 10.0], dtype=torch.float64)
        opt.step()
    assert sorted(opt.state[w]) == ["momentum_buffer", "trust_ratio"]
    assert sorted(opt.state_dict()["state"][0]) == ["momentum_buffer", "trust_ratio"]


class _FakeShardedNorms:
    """A stand-in for sharded_norm_fn (sharded = True), counting its calls, local norms otherwise."""

    sharded = True

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, tensors: list[torch.Tensor], norm: str) -> list[torch.Tensor]:
        from theorylr.optim._norms import local_norms

        self.calls.append(len(tensors))
        return local_norms(tensors, norm)


def test_a_sharded_hook_is_not_called_for_a_group_that_is_not_adapted() -> None:
    """The sharded hook's collective is called for every group with adapt=True, also one without gradients on
    this rank (an empty list), and never for an adapt=False group: the ranks that hold its gradients do not call it
    there, so a call on this rank alone would pair with another collective or hang (kills the removal of
    `and group["adapt"]` in step())."""
    a = nn.Parameter(torch.ones(2))
    b = nn.Parameter(torch.ones(3))  # adapt=False group, no gradient on this rank
    c = nn.Parameter(torch.ones(4))  # adapted group, no gradient on this rank
    hook = _FakeShardedNorms()
    opt = LARS([{"params": [a]}, {"params": [b], "adapt": False}, {"params": [c]}], lr=0.1, norm_fn=hook)
    a.grad = torch.ones(2)
    opt.step()
    assert hook.calls == [2, 0]  # group 0 (two tensors per parameter), group 2 (empty), nothing for group 1


# ----------------------------------------------------------------------------------------------------------------
# _base.py
# ----------------------------------------------------------------------------------------------------------------
def test_foreach_none_picks_the_multi_tensor_path_for_plain_cpu_tensors() -> None:
    """foreach=None "chooses it whenever every parameter is a plain dense tensor on a device with foreach
    kernels" (CPU included); LARS's default step then keeps its trust ratios as views of one stack (kills
    `p.device.type in _FOREACH_DEVICES` -> `not in`: every default step took the slower reference loop)."""
    from theorylr.optim._base import resolve_foreach

    assert resolve_foreach(None, [torch.zeros(2), nn.Parameter(torch.zeros(3))]) is True
    assert resolve_foreach(False, [torch.zeros(2)]) is False
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    opt = LARS([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    ratios = [opt.state[p]["trust_ratio"] for p in (a, b)]
    assert ratios[0]._base is not None and ratios[0]._base is ratios[1]._base


def test_an_empty_state_entry_in_a_checkpoint_is_loaded() -> None:
    """Reading opt.state[p] for a parameter that has not stepped (logging) leaves an empty entry, which
    state_dict() saves; loading that checkpoint must work (kills `if entry and key not in entry` -> `if key not
    in entry` in load_keeping_scalar_states: the checkpoint was refused as another optimizer's)."""
    from theorylr.optim.adaptive import AdaMo, AutoAdam

    for cls in (AdaMo, AutoAdam):
        a = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
        b = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = cls([a, b], lr=0.1)
        a.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
        opt.step()
        assert opt.state[b] == {}  # a logging read: torch's state is a defaultdict
        saved = opt.state_dict()
        assert saved["state"].get(1, {}) == {}
        fresh = cls([a, b], lr=0.1)
        fresh.load_state_dict(saved)
        torch.testing.assert_close(fresh.state[a]["lipschitz_avg"], opt.state[a]["lipschitz_avg"])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("adapt", [False, True])
def test_float16_with_a_tensor_lr_foreach_equals_the_loop(momentum: float, adapt: bool) -> None:
    """A tensor lr on float16 parameters: the multi-tensor path must multiply in float32 with lr unrounded, as
    the loop does (kills `coef.dtype if ps[0].dtype == torch.float16 else ps[0].dtype` -> `ps[0].dtype` in
    foreach_add_times_: lr rounded to float16 first, 0.1 -> 0.09998, one ulp off in the weights)."""
    torch.manual_seed(0)
    w0 = torch.randn(64).half()
    grads = [torch.randn(64).half() for _ in range(3)]
    out = []
    for foreach in (False, True):
        w = nn.Parameter(w0.clone())
        opt = LARS([w], lr=torch.tensor(0.1), adapt=adapt, momentum=momentum, factored_momentum=False, foreach=foreach)
        for g in grads:
            w.grad = g.clone()
            opt.step()
        out.append(w.detach().clone())
    assert torch.equal(out[0], out[1])


# ----------------------------------------------------------------------------------------------------------------
# exact_adam.py
# ----------------------------------------------------------------------------------------------------------------
def _no_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.optim.exact_adam as module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("smoothness ran")

    monkeypatch.setattr(module, "smoothness", never)


def test_a_final_loss_equal_to_the_initial_loss_is_refused_before_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gap L(w0) - L(w*) must be positive: final_loss == L(w0) is refused before the costly estimate, as a
    larger one is (kills `initial_loss > final_loss` -> `>=`: the estimate ran, then constant_step refused)."""
    from tests.estimate._reference import classification_data, mlp
    from theorylr.estimate import data_loss
    from theorylr.optim.exact_adam import exact_step_adam

    _no_estimate(monkeypatch)
    model, data = mlp(nn.Tanh), classification_data()
    initial = data_loss(model, nn.CrossEntropyLoss(), data)
    with pytest.raises(ValueError, match="final_loss must be below initial_loss"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, 10, final_loss=initial)


def test_estimate_kwargs_must_not_repeat_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """mode is exact_step_adam's own argument: repeated in estimate_kwargs it is refused by name, like seed and
    num_samples (kills dropping "mode" from the clash set: smoothness() then raised a bare TypeError, "got
    multiple values for keyword argument 'mode'")."""
    from tests.estimate._reference import classification_data, mlp
    from theorylr.optim.exact_adam import exact_step_adam

    _no_estimate(monkeypatch)
    with pytest.raises(ValueError, match=r"estimate_kwargs must not repeat \['mode'\]"):
        exact_step_adam(
            mlp(nn.Tanh), nn.CrossEntropyLoss(), classification_data(), 10, estimate_kwargs={"mode": "train"}
        )


@pytest.mark.parametrize("k_hat", [float("inf"), float("nan")])
def test_a_non_finite_k_hat_is_a_non_finite_step_error(monkeypatch: pytest.MonkeyPatch, k_hat: float) -> None:
    """K_hat = inf or nan (a curvature that overflows at the sampled weights) raises NonFiniteStepError, the
    FloatingPointError that the lab records as a diverged run (kills the removal of the isfinite(k_hat) check:
    inf reached constant_step's plain ValueError, nan the "needs K_hat > 0" one)."""
    import theorylr.optim.exact_adam as module
    from tests.estimate._reference import classification_data, mlp
    from theorylr.estimate import SmoothnessEstimate

    monkeypatch.setattr(module, "smoothness", lambda *args, **kwargs: SmoothnessEstimate(k_hat, (), 0))
    with pytest.raises(module.NonFiniteStepError, match="K_hat"):
        module.exact_step_adam(mlp(nn.Tanh), nn.CrossEntropyLoss(), classification_data(), 10)
