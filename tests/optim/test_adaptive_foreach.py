"""The multi-tensor path of AdaMo, AutoAdam and AdaptiveRMSprop: equal to the single-tensor loop in every mode, on
lists split into several CPU slabs and on groups mixing dtypes, with temporaries no larger than one slab."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from benchmarks._timing import peak_transient_bytes
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr.optim import adaptive
from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam

SHAPES = ((9, 7), (7,), (40,), (3, 2, 2), (5,), (12, 3))  # 63 + 7 + 40 + 12 + 5 + 36 elements
SLAB = 50  # with this limit the list above is cut into several slabs, and (9, 7) is a slab of its own

OPTIONS = [
    {},
    {"maximize": True},
    {"weight_decay": 0.1},
    {"maximize": True, "weight_decay": 0.1},
    {"bias_correction": True},
    {"initial_step_size": 0.01, "initial_steps": 2},
    {"bias_correction": True, "weight_decay": 0.05, "initial_step_size": 0.02, "initial_steps": 3},
]
CLASSES = [(AdaMo, {"beta": 0.8}), (AutoAdam, {"lr": 0.1, "betas": (0.8, 0.9)}), (AdaptiveRMSprop, {"lr": 0.1})]


def _params(dtypes: tuple[torch.dtype, ...] = (torch.float64,)) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [
        nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtypes[i % len(dtypes)]))
        for i, shape in enumerate(SHAPES)
    ]


def _set_grads(params: list[nn.Parameter], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)


def _assert_same(
    fast: Optimizer, slow: Optimizer, a: list[nn.Parameter], b: list[nn.Parameter], rtol: float, atol: float
) -> None:
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)
        assert fast.state[p].keys() == slow.state[q].keys()
        for key in fast.state[p]:
            torch.testing.assert_close(fast.state[p][key], slow.state[q][key], rtol=rtol, atol=atol)


def _step_in_lockstep(
    fast: Optimizer, slow: Optimizer, a: list[nn.Parameter], b: list[nn.Parameter], steps: int, rtol: float, atol: float
) -> None:
    """Give both parameter lists the same gradients, step both optimizers, compare: ``steps`` times."""
    for step in range(steps):
        _set_grads(a, step)
        _set_grads(b, step)
        fast.step()
        slow.step()
        _assert_same(fast, slow, a, b, rtol=rtol, atol=atol)


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wrap ``adaptive.<name>`` to record the length of its first argument (a list of tensors) at every call."""
    calls: list[int] = []
    original = getattr(adaptive, name)

    def counting(tensors: list[Tensor], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(tensors))
        return original(tensors, *args, **kwargs)

    monkeypatch.setattr(adaptive, name, counting)
    return calls


def _count_slabs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return _count_calls(monkeypatch, "_multi_tensor_update")


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "default")
@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_foreach_over_several_slabs_equals_the_loop(
    cls: type[Optimizer], kwargs: dict[str, Any], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adaptive, "_CPU_SLAB_NUMEL", SLAB)
    slabs = _count_slabs(monkeypatch)
    a = _params()
    b = copy.deepcopy(a)
    fast = cls(a, foreach=True, lipschitz="observed", **kwargs, **options)  # type: ignore[call-arg]
    slow = cls(b, foreach=False, lipschitz="observed", **kwargs, **options)  # type: ignore[call-arg]
    _step_in_lockstep(fast, slow, a, b, 5, rtol=1e-12, atol=1e-14)
    assert slabs[:4] == [1, 2, 2, 1]  # (9, 7) | (7,), (40,) | (3, 2, 2), (5,) | (12, 3)


@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_foreach_on_a_group_mixing_float32_and_float64_equals_the_loop(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    a = _params((torch.float64, torch.float32))
    b = copy.deepcopy(a)
    fast = cls(a, foreach=True, lipschitz="observed", bias_correction=True, **kwargs)  # type: ignore[call-arg]
    slow = cls(b, foreach=False, lipschitz="observed", bias_correction=True, **kwargs)  # type: ignore[call-arg]
    _step_in_lockstep(fast, slow, a, b, 4, rtol=1e-5, atol=1e-6)
    assert {fast.state[p]["lipschitz_avg"].dtype for p in a} == {torch.float32, torch.float64}


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("zero", ["lr", "initial_step_size"])
def test_a_zero_step_leaves_the_weights_exactly_unchanged(
    cls: type[Optimizer], kwargs: dict[str, Any], zero: str, foreach: bool
) -> None:
    params = _params()
    before = [p.detach().clone() for p in params]
    options = {"lr": 0.0} if zero == "lr" else {"initial_step_size": 0.0, "initial_steps": 2}
    opt = cls(params, foreach=foreach, lipschitz="observed", **{**kwargs, **options})  # type: ignore[call-arg]
    for step in range(2):
        _set_grads(params, step)
        opt.step()
    for p, q in zip(params, before):
        assert torch.equal(p.detach(), q)


@pytest.mark.parametrize(
    ("cls", "options", "temporaries"),
    [
        (AdaMo, {}, 0),
        (AutoAdam, {}, 1),
        (AdaptiveRMSprop, {}, 1),
        (AutoAdam, {"weight_decay": 0.1, "maximize": True}, 2),  # g = -grad + wd w, and the denominator
        (AdaMo, {"weight_decay": 0.1}, 1),
    ],
)
def test_foreach_temporaries_are_at_most_one_slab_each(
    cls: type[Optimizer], options: dict[str, Any], temporaries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adaptive, "_CPU_SLAB_NUMEL", SLAB)
    params = _params((torch.float32,))
    opt = cls(params, foreach=True, lipschitz="observed", **options)  # type: ignore[call-arg]
    _set_grads(params, 0)
    opt.step()
    largest_slab = max(sum(p.numel() for p in params[s]) for s in adaptive._slabs(list(params), SLAB)) * 4
    small = 4096  # 0-dim scalars (norms, scales, stacked states) and allocator rounding
    peak = peak_transient_bytes(opt.step)
    assert peak <= temporaries * largest_slab + small
    if temporaries:  # a control on the method: without slabs the temporaries are parameter-sized
        monkeypatch.setattr(adaptive, "_CPU_SLAB_NUMEL", 1 << 30)
        assert peak_transient_bytes(opt.step) >= temporaries * sum(p.numel() for p in params) * 4


def test_slabs_cover_the_list_in_order_and_respect_the_limit() -> None:
    tensors = [torch.empty(n) for n in (5, 60, 10, 30, 20, 1, 49, 50, 51)]
    slabs = adaptive._slabs(tensors, 50)
    assert [i for s in slabs for i in range(len(tensors))[s]] == list(range(len(tensors)))
    for s in slabs:
        sizes = [t.numel() for t in tensors[s]]
        assert sizes and (sum(sizes) <= 50 or len(sizes) == 1)
    assert [len(tensors[s]) for s in slabs] == [1, 1, 2, 2, 1, 1, 1]
    assert adaptive._slabs(tensors, 1 << 30) == [slice(0, len(tensors))]


# ----------------------------------------------------------------------------------------------------------------
# Shared scalar states: off the CPU, parameters stepped together apply one scale with single-scalar kernels
# ----------------------------------------------------------------------------------------------------------------
def _count_shared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Let the shared path run on the CPU (it is chosen off the CPU only) and count its calls (their list sizes)."""
    monkeypatch.setattr(adaptive, "_shared_scalars_pay", lambda ps: all(p.dtype == ps[0].dtype for p in ps))
    return _count_calls(monkeypatch, "_shared_scales")


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_shared_scalar_states_equal_the_loop(
    cls: type[Optimizer], kwargs: dict[str, Any], options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_shared(monkeypatch)
    a, b = _params(), _params()
    fast = cls(a, lipschitz="observed", foreach=True, **kwargs, **options)
    slow = cls(b, lipschitz="observed", foreach=False, **kwargs, **options)
    _step_in_lockstep(fast, slow, a, b, 5, rtol=1e-12, atol=1e-14)
    assert calls == [len(SHAPES)] * 5


@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_shared_scalar_states_follow_skipped_late_and_frozen_parameters(
    cls: type[Optimizer], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parameter created late never joins the cohort; one that skips a step leaves it; once the stepped
    parameters are exactly the cohort again (the skipper frozen for good), the shared path resumes."""
    calls = _count_shared(monkeypatch)
    a, b = _params(), _params()
    fast = cls(a, lipschitz="observed", foreach=True, **kwargs)
    slow = cls(b, lipschitz="observed", foreach=False, **kwargs)
    n = len(SHAPES)
    plan: list[set[int]] = [  # the positions without a gradient at each step
        {5},  # 0: position 5 gets its state later: the cohort is 0-4
        set(),  # 1: position 5 is stepped beside the cohort: per-tensor scalars
        {2},  # 2: position 2 skips: the cohort shrinks to 0, 1, 3, 4
        {2, 5},  # 3: exactly the cohort: shared again
        {2, 5},  # 4: shared
    ]
    for step, missing in enumerate(plan):
        for ps in (a, b):
            _set_grads(ps, step)
            for j in missing:
                ps[j].grad = None
        fast.step()
        slow.step()
        _assert_same(fast, slow, a, b, rtol=1e-12, atol=1e-14)
    assert calls == [n - 1, n - 2, n - 2]


@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=lambda c: getattr(c, "__name__", ""))
def test_shared_scalar_states_are_recognised_after_load_state_dict(
    cls: type[Optimizer], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_shared(monkeypatch)
    a, b = _params(), _params()
    fast = cls(a, lipschitz="observed", foreach=True, **kwargs)
    slow = cls(b, lipschitz="observed", foreach=False, **kwargs)
    for step in range(2):
        for ps, opt in ((a, fast), (b, slow)):
            _set_grads(ps, step)
            opt.step()
    resumed = cls(a, lipschitz="observed", foreach=True, **kwargs)
    resumed.load_state_dict(copy.deepcopy(fast.state_dict()))
    twin = copy.deepcopy(resumed)  # unpickled: the cohort is read from the state again
    assert next(iter(twin._cohorts.values()))[1] == tuple(range(len(SHAPES)))  # type: ignore[attr-defined]
    _set_grads(a, 2)
    _set_grads(b, 2)
    resumed.step()
    slow.step()
    _assert_same(resumed, slow, a, b, rtol=1e-12, atol=1e-14)
    assert calls == [len(SHAPES)] * 3
    # Unequal states (one parameter's K1 changed by hand) are not a cohort.
    sd = copy.deepcopy(resumed.state_dict())
    sd["state"][0]["lipschitz_avg"] += 1.0
    other = cls(_params(), lipschitz="observed", foreach=True, **kwargs)
    other.load_state_dict(sd)
    assert other._cohorts == {}  # type: ignore[attr-defined]
