"""LARS keeps a group's ``trust_ratio`` and ``momentum_scale`` states as views of one 1-D tensor each
(:class:`~theorylr.optim._base.StackedScalars`) and its structure in a cached :class:`~theorylr.optim.lars.LarsLayout`.
Whatever replaces a state tensor or changes the set of parameters with a gradient must leave the step equal to the
per-tensor reference loop, which keeps ordinary 0-dim tensors."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from theorylr.optim._base import StackedScalars, stack_scalars
from theorylr.optim.lars import LARS, lars, lars_layout


def _params(seed: int = 0, dtypes: tuple[torch.dtype, ...] = (torch.float32,) * 4) -> list[nn.Parameter]:
    """Four tensors, one of 2^16 elements (the CPU's per-tensor kernels and dot norms)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(1 << 16,), (64, 9), (7,), (3, 5)]
    return [nn.Parameter(torch.randn(s, generator=gen).to(d)) for s, d in zip(shapes, dtypes)]


def _grads(params: list[nn.Parameter], step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen).to(p.dtype) * 1e-2 for p in params]


def _twins(
    dtypes: tuple[torch.dtype, ...] = (torch.float32,) * 4, **kwargs: object
) -> tuple[list[nn.Parameter], LARS, list[nn.Parameter], LARS]:
    """The same parameters under the multi-tensor step and the reference loop."""
    fast = _params(dtypes=dtypes)
    ref = [nn.Parameter(p.detach().clone()) for p in fast]
    return fast, LARS(fast, foreach=True, **kwargs), ref, LARS(ref, foreach=False, **kwargs)  # type: ignore[arg-type]


def _step_both(
    fast: list[nn.Parameter], opt: LARS, ref: list[nn.Parameter], ref_opt: LARS, step: int, skip: int | None = None
) -> None:
    for p, q, g in zip(fast, ref, _grads(fast, step)):
        p.grad, q.grad = g.clone(), g.clone()
    if skip is not None:
        fast[skip].grad = ref[skip].grad = None
    opt.step()
    ref_opt.step()


def _assert_same(fast: list[nn.Parameter], opt: LARS, ref: list[nn.Parameter], ref_opt: LARS) -> None:
    for p, q in zip(fast, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
        for key in ("trust_ratio", "momentum_scale"):
            if key in ref_opt.state[q]:
                torch.testing.assert_close(opt.state[p][key], ref_opt.state[q][key], rtol=1e-5, atol=0.0)
        if "momentum_buffer" in ref_opt.state[q]:
            torch.testing.assert_close(opt.momentum_buffer(p), ref_opt.momentum_buffer(q), rtol=1e-5, atol=1e-8)


def _stack_base(t: torch.Tensor) -> torch.Tensor | None:
    return t._base


def test_states_become_views_of_one_tensor_and_match_the_loop() -> None:
    fast, opt, ref, ref_opt = _twins(lr=0.1, momentum=0.9)
    for step in range(6):
        _step_both(fast, opt, ref, ref_opt, step)
        _assert_same(fast, opt, ref, ref_opt)
    for key in ("trust_ratio", "momentum_scale"):
        bases = {id(_stack_base(opt.state[p][key])) for p in fast}
        assert len(bases) == 1 and _stack_base(opt.state[fast[0]][key]) is not None, key
        assert all(opt.state[p][key].shape == () for p in fast)
    # the reference loop keeps ordinary tensors
    assert all(_stack_base(ref_opt.state[q]["trust_ratio"]) is None for q in ref)


def test_a_parameter_without_gradient_and_its_return_rebuild_the_stack() -> None:
    fast, opt, ref, ref_opt = _twins(lr=0.1, momentum=0.9, weight_decay=1e-3)
    for step, skip in enumerate([None, None, 2, 2, None, 0, None]):
        _step_both(fast, opt, ref, ref_opt, step, skip=skip)
        _assert_same(fast, opt, ref, ref_opt)


def test_load_state_dict_and_assigned_states_are_read_then_restacked() -> None:
    fast, opt, ref, ref_opt = _twins(lr=0.1, momentum=0.9)
    for step in range(3):
        _step_both(fast, opt, ref, ref_opt, step)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # views of one storage: saved and loaded as such
    buffer.seek(0)
    resumed = LARS(fast, lr=0.1, momentum=0.9, foreach=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    # an assignment replaces one view: the next step reads the new tensor (on both sides)
    for o, ps in ((resumed, fast), (ref_opt, ref)):
        o.state[ps[1]]["momentum_scale"] = o.state[ps[1]]["momentum_scale"].clone() * 2.0
    for step in range(3, 6):
        _step_both(fast, resumed, ref, ref_opt, step)
        _assert_same(fast, resumed, ref, ref_opt)


def test_deepcopy_steps_on_its_own_stack() -> None:
    fast, opt, ref, ref_opt = _twins(lr=0.1, momentum=0.9)
    _step_both(fast, opt, ref, ref_opt, 0)
    twin = copy.deepcopy(opt)
    twin_params = twin.param_groups[0]["params"]
    for p, g in zip(twin_params, _grads(twin_params, 1)):
        p.grad = g
    twin.step()
    # the original's states are untouched by the copy's step
    _step_both(fast, opt, ref, ref_opt, 1)
    _assert_same(fast, opt, ref, ref_opt)
    assert not any(t is s for t, s in zip(twin_params, fast))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.1, "momentum": 0.0},
        {"lr": 0.1, "momentum": 0.9, "factored_momentum": False},
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        {"lr": 0.1, "momentum": 0.9, "maximize": True, "dampening": 0.1},
    ],
    ids=["no-momentum", "plain-buffer", "nesterov", "maximize-dampening"],
)
def test_other_settings_match_the_loop(kwargs: dict[str, object]) -> None:
    fast, opt, ref, ref_opt = _twins(**kwargs)
    for step in range(4):
        _step_both(fast, opt, ref, ref_opt, step)
        _assert_same(fast, opt, ref, ref_opt)


def _assert_close_by_dtype(fast: list[nn.Parameter], ref: list[nn.Parameter]) -> None:
    for p, q in zip(fast, ref):
        low = p.dtype == torch.bfloat16  # foreach takes bfloat16 norms rounded to bfloat16 (local_norms' note)
        torch.testing.assert_close(p, q, rtol=1e-2 if low else 1e-5, atol=2e-2 if low else 1e-6)


def test_a_group_mixing_dtypes_keeps_separate_tensors() -> None:
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float32)
    fast, opt, ref, ref_opt = _twins(dtypes, lr=0.1, momentum=0.9)
    for step in range(4):
        _step_both(fast, opt, ref, ref_opt, step)
    _assert_close_by_dtype(fast, ref)
    assert _stack_base(opt.state[fast[0]]["trust_ratio"]) is None  # float32 and float64 ratios: not one stack
    assert opt.state[fast[1]]["trust_ratio"].dtype == torch.float64


def test_functional_lars_takes_the_stacked_forms() -> None:
    """``trust_ratios`` and ``momentum_scale_list`` as 1-D tensors give what the lists give, on both paths."""
    for foreach in (True, False):
        lists, stacked = _params(), _params()
        grads = _grads(lists, 0)
        bufs_l: list[torch.Tensor | None] = [None] * 4
        bufs_s: list[torch.Tensor | None] = [None] * 4
        ratios_l = [torch.zeros(()) for _ in range(4)]
        scales_l: list[torch.Tensor | None] = [None] * 4
        ratios_s, scales_s = torch.zeros(4), torch.zeros(4)
        with torch.no_grad():
            for step in range(3):
                grads = _grads(lists, step)
                lars(lists, grads, bufs_l, ratios_l, scales_l, lr=0.1, momentum=0.9, foreach=foreach)
                lars(stacked, grads, bufs_s, ratios_s, scales_s, lr=0.1, momentum=0.9, foreach=foreach)
        torch.testing.assert_close(ratios_s, torch.stack(ratios_l), rtol=0.0, atol=0.0)
        torch.testing.assert_close(scales_s, torch.stack([s for s in scales_l if s is not None]), rtol=0.0, atol=0.0)
        for a, b in zip(lists, stacked):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("trust_ratios", lambda: {"trust_ratios": torch.zeros(3)}),
        ("momentum_scale_list", lambda: {"momentum_scale_list": torch.zeros(2, 2)}),
    ],
)
def test_functional_lars_refuses_a_stack_of_the_wrong_shape(name: str, make: Callable[[], dict]) -> None:
    w, g = [torch.ones(2), torch.ones(3)], [torch.ones(2), torch.ones(3)]
    with pytest.raises(ValueError, match=f"{name}: a tensor must be 1-D with one element per parameter, 2"):
        lars(w, g, [None, None], lr=0.1, momentum=0.9, **make())


def test_lars_layout_buckets_and_large_tensors() -> None:
    params = [torch.zeros(1 << 16), torch.zeros(3, dtype=torch.float64), torch.zeros(5), torch.zeros(1 << 17)]
    layout = lars_layout(params)
    assert [(dtype, idx) for _, dtype, idx in layout.buckets] == [(torch.float32, (0, 2, 3)), (torch.float64, (1,))]
    assert layout.large == ((0, 2), ())
    assert layout.dots == (True, True) and layout.cpu and not layout.float16
    assert layout.fits(params)
    assert not layout.fits(params[:3])
    assert not layout.fits([params[0], params[1], params[2], params[3].half()])
    assert lars_layout([torch.zeros(2, dtype=torch.float16)]).float16


def test_stack_scalars_matches_only_its_own_views() -> None:
    params = [torch.zeros(2), torch.zeros(3)]
    states: list[dict[str, torch.Tensor]] = [{"r": torch.tensor(2.0)}, {"r": torch.tensor(3.0)}]
    stacked = stack_scalars(params, states, {"r": [s["r"] for s in states]})
    assert isinstance(stacked, StackedScalars)
    assert stacked.stacks["r"].tolist() == [2.0, 3.0]
    assert all(s["r"] is v for s, v in zip(states, stacked.views["r"]))
    assert stacked.matches(params, {"r": [s["r"] for s in states]})
    assert not stacked.matches(params, {"r": [states[0]["r"], torch.tensor(3.0)]})  # a replaced state
    assert not stacked.matches(params[::-1], {"r": [s["r"] for s in states][::-1]})  # other parameters
    assert not stacked.matches(params, {"r": [s["r"] for s in states], "k": [None, None]})  # other keys
    mixed = [torch.tensor(1.0), torch.tensor(1.0, dtype=torch.float64)]
    assert stack_scalars(params, [{}, {}], {"r": mixed}) is None
    assert stack_scalars(params, [{}, {}], {"r": [None, None]}) is None


def test_coefficient_views_are_reused_and_follow_the_values() -> None:
    """The CPU sweeps' per-tensor coefficients are written into a kept buffer whose views the kernels read."""
    from theorylr.optim.lars import _views_of

    layout = lars_layout([torch.zeros(2), torch.zeros(3)])
    first = _views_of(torch.tensor([1.0, 2.0]), layout, (0, "a"))
    assert [float(v) for v in first] == [1.0, 2.0]
    second = _views_of(torch.tensor([3.0, 4.0]), layout, (0, "a"))
    assert second is first and [float(v) for v in second] == [3.0, 4.0]  # the same views, new values
    other = _views_of(torch.tensor([5.0, 6.0]), layout, (0, "v"))  # another key: its own buffer
    assert [float(v) for v in second] == [3.0, 4.0] and [float(v) for v in other] == [5.0, 6.0]
    resized = _views_of(torch.tensor([7.0], dtype=torch.float64), layout, (0, "a"))  # shape and dtype change
    assert len(resized) == 1 and resized[0].dtype == torch.float64 and float(resized[0]) == 7.0
    assert [float(v) for v in _views_of(torch.tensor([8.0, 9.0]), None, (0, "a"))] == [8.0, 9.0]  # no layout


def test_one_stack_over_two_buckets_matches_the_loop() -> None:
    """bfloat16 and float32 parameters have float32 ratios and scales: one stack, two (device, dtype) buckets, which
    the multi-tensor path writes through indexed views."""
    dtypes = (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16)
    fast, opt, ref, ref_opt = _twins(dtypes, lr=0.1, momentum=0.9)
    for step in range(5):
        # at step 3 a parameter without a gradient: a new stack over three parameters, then over four again
        _step_both(fast, opt, ref, ref_opt, step, skip=1 if step == 3 else None)
    base = _stack_base(opt.state[fast[0]]["trust_ratio"])
    assert base is not None and base is _stack_base(opt.state[fast[1]]["trust_ratio"])
    _assert_close_by_dtype(fast, ref)
    for p, q in zip(fast, ref):
        low = p.dtype == torch.bfloat16
        for key in ("trust_ratio", "momentum_scale"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[q][key], rtol=1e-2 if low else 1e-5, atol=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sequences_of_steps_loads_and_changes_match_the_loop(seed: int) -> None:
    """A differential run: the multi-tensor class (stacks, kept layout and views) and the reference loop take the
    same random sequence of steps with gradients missing, state-dict round trips, assigned states, momentum and
    factoring changes, and a group added mid-run; they must stay equal."""
    gen = torch.Generator().manual_seed(seed)
    fast, opt, ref, ref_opt = _twins(lr=0.05, momentum=0.9, weight_decay=1e-4)
    extra_fast: list[nn.Parameter] = []
    extra_ref: list[nn.Parameter] = []
    actions: set[str] = set()

    def pick() -> int:
        return int(torch.randint(0, 6, (), generator=gen))

    for step in range(25):
        action = pick()
        if action == 0:  # a round trip through a state dict
            state = copy.deepcopy(opt.state_dict())
            groups = [{"params": fast}] + ([{"params": extra_fast}] if extra_fast else [])  # the saved groups
            opt = LARS(groups, lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
            opt.load_state_dict(state)
            actions.add("load")
        elif action == 1 and step > 0:  # an assigned state on both sides
            k = int(torch.randint(0, 4, (), generator=gen))
            for o, ps in ((opt, fast), (ref_opt, ref)):
                if "trust_ratio" in o.state[ps[k]]:
                    o.state[ps[k]]["trust_ratio"] = torch.tensor(0.5)
                    actions.add("assign")
        elif action == 2:  # a scheduler-like change of momentum on both
            m = float(torch.empty(()).uniform_(0.5, 0.95, generator=gen))
            for o in (opt, ref_opt):
                for group in o.param_groups:
                    group["momentum"] = m
            actions.add("momentum")
        elif action == 3 and not extra_fast:  # a group added mid-run
            extra_fast = [nn.Parameter(torch.randn(5, 3, generator=gen))]
            extra_ref = [nn.Parameter(extra_fast[0].detach().clone())]
            opt.add_param_group({"params": extra_fast})
            ref_opt.add_param_group({"params": extra_ref})
            actions.add("group")
        elif action == 4:  # the plain buffer for a step, then factored again
            for o in (opt, ref_opt):
                o.param_groups[0]["factored_momentum"] = bool(step % 2)
            actions.add("factored")
        skip = pick() if pick() < 2 else None
        skip = skip if skip is not None and skip < 4 else None
        for p, q, g in zip(fast + extra_fast, ref + extra_ref, _grads(fast + extra_fast, step)):
            p.grad, q.grad = g.clone(), g.clone()
        if skip is not None:
            fast[skip].grad = ref[skip].grad = None
        opt.step()
        ref_opt.step()
        for p, q in zip(fast + extra_fast, ref + extra_ref):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(opt.state[p]["trust_ratio"], ref_opt.state[q]["trust_ratio"], rtol=1e-5, atol=0)
            if ref_opt.momentum_buffer(q) is not None:
                torch.testing.assert_close(opt.momentum_buffer(p), ref_opt.momentum_buffer(q), rtol=1e-4, atol=1e-7)
    assert len(actions) >= 4, actions  # the sequence exercised most of the changes


def test_renormalising_steps_with_kept_views_match_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """At momentum 0.5 the factored buffer renormalises every 17th step (``"rescale"``: its ``b`` coefficients take
    kept views of their own); 40 steps cover two of them."""
    import importlib

    lars_module = importlib.import_module("theorylr.optim.lars")
    modes: list[str] = []
    real = lars_module._buffer_mode

    def spy(*args: object, **kwargs: object) -> str:
        modes.append(real(*args, **kwargs))
        return modes[-1]

    monkeypatch.setattr(lars_module, "_buffer_mode", spy)
    fast, opt, ref, ref_opt = _twins(lr=0.05, momentum=0.5)
    for step in range(40):
        _step_both(fast, opt, ref, ref_opt, step)
        _assert_same(fast, opt, ref, ref_opt)
    assert modes.count("rescale") >= 4 and "add" in modes  # both optimizers renormalised twice
