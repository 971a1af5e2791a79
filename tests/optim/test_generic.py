"""The generic optimizer suite: every row of ``theorylr.optim.registry.OPTIMIZERS`` passes every test here.

Nothing in this file names an optimizer: capabilities come from the registry row. Structural checks run over
every configuration a row lists (its ``descent_kwargs`` and ``sample_kwargs``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import Optimizer

from theorylr.optim.registry import OPTIMIZERS, OptimInfo

ROWS = list(OPTIMIZERS.values())
ROW_IDS = [row.name for row in ROWS]
CONFIGS = [(row, i) for row in ROWS for i in range(len(row.configurations()))]
CONFIG_IDS = [f"{row.name}-{i}" for row, i in CONFIGS]


# ----------------------------------------------------------------------------------------------------------------
# A small problem: a two-layer tanh network regressing a fixed random target (weights, biases, a 1-D gain).
# ----------------------------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 3)
        self.gain = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x))) * self.gain


def _problem(dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _Net().to(dtype)
    x = torch.randn(64, 6, generator=gen, dtype=dtype)
    teacher = torch.randn(6, 3, generator=gen, dtype=dtype)
    y = torch.tanh(x @ teacher)
    return model, x, y


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def _make(row: OptimInfo, params: Any, kwargs: Mapping[str, Any], **overrides: Any) -> Optimizer:
    cls = row.load()
    return cls(params, **{**kwargs, **overrides})


def _train(opt: Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _state_tensors(opt: Optimizer) -> Iterator[tuple[str, Any]]:
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            for key, value in sorted(opt.state.get(p, {}).items()):
                yield f"group{i}.param{j}.{key}", value


def _assert_same_state(a: Optimizer, b: Optimizer, **tol: float) -> None:
    sa, sb = dict(_state_tensors(a)), dict(_state_tensors(b))
    assert sa.keys() == sb.keys()
    for key in sa:
        va, vb = sa[key], sb[key]
        if isinstance(va, torch.Tensor):
            torch.testing.assert_close(va, vb, msg=lambda m, k=key: f"state {k}: {m}", **tol)  # type: ignore[misc]
        else:
            assert va == vb, key


# ----------------------------------------------------------------------------------------------------------------
# Construction and arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_is_torch_optimizer_with_hyperparameters_in_defaults(row: OptimInfo) -> None:
    model, _, _ = _problem()
    for kwargs in row.configurations():
        opt = _make(row, model.parameters(), kwargs)
        assert isinstance(opt, Optimizer)
        for key, value in kwargs.items():
            assert key in opt.defaults, f"{key} missing from defaults"
            assert opt.param_groups[0][key] == value
        assert "lr" in opt.defaults
    assert row.load().__doc__, "every optimizer has a docstring"


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_invalid_arguments_raise_value_error_naming_the_argument(row: OptimInfo) -> None:
    assert row.invalid_kwargs, "a registry row lists at least one invalid argument"
    model, _, _ = _problem()
    for bad, name in row.invalid_kwargs:
        with pytest.raises(ValueError, match=name):
            _make(row, model.parameters(), row.descent_kwargs, **bad)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_invalid_group_settings_raise_value_error_naming_the_argument(row: OptimInfo) -> None:
    """A param group's own settings are checked as the constructor's are: in a group given to the constructor and
    in one added later (torch checks only the defaults)."""
    model, _, _ = _problem()
    for bad, name in row.invalid_kwargs:
        with pytest.raises(ValueError, match=name):
            _make(row, [{"params": model.fc1.parameters(), **bad}], row.descent_kwargs)
        opt = _make(row, model.fc1.parameters(), row.descent_kwargs)
        with pytest.raises(ValueError, match=name):
            opt.add_param_group({"params": list(model.fc2.parameters()), **bad})
        assert len(opt.param_groups) == 1


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_numpy_scalar_hyperparameters_step_as_python_numbers(row: OptimInfo) -> None:
    """NumPy scalars (an lr grid from ``np.logspace(...).astype(np.float32)``), which torch's optimizers take, are
    accepted and step as the same values given as Python numbers."""
    np = pytest.importorskip("numpy")
    as_numpy = {
        k: np.float32(v) if isinstance(v, float) else np.int64(v) if type(v) is int else v
        for k, v in row.descent_kwargs.items()
    }
    as_python = {k: v.item() if isinstance(v, np.generic) else v for k, v in as_numpy.items()}
    losses, weights = [], []
    for kwargs in (as_numpy, as_python):
        model, x, y = _problem()
        losses.append(_train(_make(row, model.parameters(), kwargs), model, x, y, 3))
        weights.append(model.fc1.weight.detach())
    assert losses[0] == losses[1]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_complex_parameter_is_rejected(row: OptimInfo) -> None:
    p = nn.Parameter(torch.randn(3, dtype=torch.complex128))
    opt = _make(row, [p], row.descent_kwargs)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_sparse_gradient_is_rejected(row: OptimInfo) -> None:
    emb = nn.Embedding(10, 4, sparse=True).double()
    opt = _make(row, emb.parameters(), row.descent_kwargs)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# ----------------------------------------------------------------------------------------------------------------
# Descent, schedulers, closure
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_loss_halves_on_small_problem(row: OptimInfo, dtype: torch.dtype) -> None:
    model, x, y = _problem(dtype)
    opt = _make(row, model.parameters(), row.descent_kwargs)
    losses = _train(opt, model, x, y, 60)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.4g} -> {losses[-1]:.4g}"
    for _, value in _state_tensors(opt):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
            assert value.dtype == dtype


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_loss_halves_with_a_torch_scheduler(row: OptimInfo) -> None:
    model, x, y = _problem()
    opt = _make(row, model.parameters(), row.descent_kwargs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=120)
    losses = []
    for _ in range(60):
        losses.extend(_train(opt, model, x, y, 1))
        sched.step()
    assert opt.param_groups[0]["lr"] < row.descent_kwargs["lr"]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_scheduler_lr_is_a_multiplier(row: OptimInfo) -> None:
    """A scheduler that sets lr to 0 freezes the parameters: the group's lr multiplies every update."""
    model, x, y = _problem()
    opt = _make(row, model.parameters(), row.descent_kwargs)
    _train(opt, model, x, y, 3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0)
    assert opt.param_groups[0]["lr"] == 0.0
    before = [p.detach().clone() for p in model.parameters()]
    _train(opt, model, x, y, 3)
    for b, p in zip(before, model.parameters()):
        torch.testing.assert_close(p, b, rtol=0, atol=0)
    sched.step()


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_closure_is_called_and_its_loss_returned(row: OptimInfo) -> None:
    model, x, y = _problem()
    twin = copy.deepcopy(model)
    opt = _make(row, model.parameters(), row.descent_kwargs)
    ref = _make(row, twin.parameters(), row.descent_kwargs)
    calls = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        calls.append(1)
        return loss

    for _ in range(3):
        expected = _loss(model, x, y).item()
        returned = opt.step(closure)
        assert returned is not None and returned.item() == pytest.approx(expected, rel=1e-12)
    assert len(calls) == 3
    _train(ref, twin, x, y, 3)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Structural checks over every configuration
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_step_leaves_grad_untouched_and_builds_no_graph(row: OptimInfo, cfg: int) -> None:
    model, x, y = _problem()
    opt = _make(row, model.parameters(), row.configurations()[cfg])
    for _ in range(2):
        opt.zero_grad()
        _loss(model, x, y).backward()
        grads = [(p.grad, p.grad.detach().clone()) for p in model.parameters()]  # type: ignore[union-attr]
        with torch.enable_grad():
            opt.step()
        for p, (g, g_copy) in zip(model.parameters(), grads):
            assert p.grad is g, "step() replaced p.grad"
            torch.testing.assert_close(g, g_copy, rtol=0, atol=0)
            assert p.grad_fn is None


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_none_and_zero_gradients(row: OptimInfo, cfg: int) -> None:
    model, x, y = _problem()
    frozen = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
    zero = nn.Parameter(torch.randn(5, dtype=torch.float64))
    empty = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = _make(row, [*model.parameters(), frozen, zero, empty], row.configurations()[cfg])
    frozen_before = frozen.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        _loss(model, x, y).backward()
        zero.grad = torch.zeros_like(zero)
        empty.grad = torch.zeros_like(empty)  # zero weights and zero gradient: no NaN
        opt.step()
    assert frozen.grad is None
    torch.testing.assert_close(frozen, frozen_before, rtol=0, atol=0)
    assert len(opt.state.get(frozen, {})) == 0, "no state for a parameter that never had a gradient"
    for p in [*model.parameters(), zero, empty]:
        assert torch.isfinite(p).all()
    for _, value in _state_tensors(opt):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all()


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_then_identical_continuation(row: OptimInfo, cfg: int) -> None:
    kwargs = row.configurations()[cfg]
    model, x, y = _problem()
    opt = _make(row, model.parameters(), kwargs)
    _train(opt, model, x, y, 4)

    twin = copy.deepcopy(model)
    saved = copy.deepcopy(opt.state_dict())
    twin_opt = _make(row, twin.parameters(), kwargs)
    twin_opt.load_state_dict(saved)
    _assert_same_state(opt, twin_opt, rtol=0, atol=0)
    assert twin_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]

    _train(opt, model, x, y, 4)
    _train(twin_opt, twin, x, y, 4)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    _assert_same_state(opt, twin_opt, rtol=0, atol=0)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_a_load_pre_hook_remapping_the_checkpoint_is_honoured(row: OptimInfo) -> None:
    """torch's documented way to adapt a checkpoint: a ``register_load_state_dict_pre_hook`` that returns a new
    dict. Here the resumed optimizer lists the parameters in reverse order and the hook remaps the saved state;
    every state (the scalar ones the library restores itself included) must land on its own parameter."""
    kwargs = row.descent_kwargs
    model, x, y = _problem()
    opt = _make(row, model.parameters(), kwargs)
    _train(opt, model, x, y, 3)
    twin = copy.deepcopy(model)
    twin_opt = _make(row, list(twin.parameters())[::-1], kwargs)

    def reverse(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        ids = state_dict["param_groups"][0]["params"]
        remap = dict(zip(ids, ids[::-1]))
        return {
            "state": {remap[k]: v for k, v in state_dict["state"].items()},
            "param_groups": state_dict["param_groups"],
        }

    twin_opt.register_load_state_dict_pre_hook(reverse)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p, q in zip(model.parameters(), twin.parameters()):
        for key, value in opt.state[p].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(twin_opt.state[q][key], value, rtol=0, atol=0, msg=key)
    _train(opt, model, x, y, 3)
    _train(twin_opt, twin, x, y, 3)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_load_state_dict_checks_the_saved_groups_first(row: OptimInfo) -> None:
    """A checkpoint whose hyperparameters the constructor would refuse is refused by load_state_dict too, with the
    same error, and leaves the optimizer as it was; so is another optimizer's state where this one needs keys."""
    model, x, y = _problem()
    opt = _make(row, model.parameters(), row.descent_kwargs)
    _train(opt, model, x, y, 2)
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be"):
        opt.load_state_dict(bad)
    assert opt.state_dict()["param_groups"] == before["param_groups"]
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(sgd, model, x, y, 1)
    fresh = _make(row, model.parameters(), row.descent_kwargs)
    if "momentum_buffer" in {k for state in opt.state.values() for k in state}:
        fresh.load_state_dict(sgd.state_dict())  # LARS keeps SGD's buffer: a state it can continue from
    else:
        with pytest.raises(ValueError, match="not a checkpoint of"):
            fresh.load_state_dict(sgd.state_dict())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_state_dict_round_trip_with_16_bit_parameters(row: OptimInfo, dtype: torch.dtype) -> None:
    """A resumed run equals the uninterrupted one with 16-bit parameters too: the scalar states saved in float32
    come back in float32 (torch casts floating state to the parameter's dtype)."""
    kwargs = dict(row.descent_kwargs)
    eps = inspect.signature(row.load()).parameters.get("eps")
    if dtype == torch.float16 and eps is not None and eps.default < 1e-4:
        kwargs["eps"] = 1e-4  # as for torch's Adam: 1e-8 is 0 in float16, and 0 / 0 a nan at the first step
    model, x, y = _problem(dtype)
    opt = _make(row, model.parameters(), kwargs)
    _train(opt, model, x, y, 3)
    twin = copy.deepcopy(model)
    twin_opt = _make(row, twin.parameters(), kwargs)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    _assert_same_state(opt, twin_opt, rtol=0, atol=0)
    for key, value in _state_tensors(twin_opt):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
            assert value.dtype == torch.float32, key
    _train(opt, model, x, y, 3)
    _train(twin_opt, twin, x, y, 3)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def _event_names(fn: Callable[[], None]) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_foreach_equals_loop(row: OptimInfo, cfg: int, dtype: torch.dtype) -> None:
    if not row.supports_foreach:
        pytest.skip(f"{row.name} has no foreach path (registry flag)")
    kwargs = row.configurations()[cfg]
    model, x, y = _problem(dtype)
    twin = copy.deepcopy(model)
    fast = _make(row, model.parameters(), kwargs, foreach=True)
    slow = _make(row, twin.parameters(), kwargs, foreach=False)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for step in range(6):
        for opt, net in ((fast, model), (slow, twin)):
            opt.zero_grad()
            _loss(net, x, y).backward()
        if step == 0:
            fast_ops = _event_names(fast.step)
            slow_ops = _event_names(slow.step)
            assert any("_foreach_" in name for name in fast_ops), "foreach=True did not run a _foreach_ kernel"
            assert not any("_foreach_" in name for name in slow_ops), "foreach=False ran a _foreach_ kernel"
        else:
            fast.step()
            slow.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, **tol)
        _assert_same_state(fast, slow, **tol)


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_a_tensor_lr_equals_the_float_lr(row: OptimInfo, cfg: int) -> None:
    """``lr`` as a 0-dim tensor (torch's optimizers take one) gives the float run's steps, foreach and loop, and a
    scheduler changes it in place; a tensor that is not a number in range is refused."""
    kwargs = row.configurations()[cfg]
    for foreach in (True, False) if row.supports_foreach else (None,):
        extra = {} if foreach is None else {"foreach": foreach}
        model, x, y = _problem()
        twin = copy.deepcopy(model)
        lr = torch.tensor(float(kwargs["lr"]), dtype=torch.float64)
        fast = _make(row, model.parameters(), kwargs, lr=lr, **extra)
        ref = _make(row, twin.parameters(), kwargs, **extra)
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (fast, ref)]
        for _ in range(5):
            for opt, net in ((fast, model), (ref, twin)):
                opt.zero_grad()
                _loss(net, x, y).backward()
                opt.step()
            for scheduler in schedulers:
                scheduler.step()
        assert fast.param_groups[0]["lr"] is lr and float(lr) == ref.param_groups[0]["lr"]
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="lr"):
        _make(row, model.parameters(), kwargs, lr=torch.tensor(-1.0))
    with pytest.raises(ValueError, match="lr"):
        _make(row, model.parameters(), kwargs, lr=torch.ones(2))


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_step_makes_no_host_sync(row: OptimInfo, cfg: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``step()`` never reads a tensor's value on the host (``.item()``, ``bool()``, ``float()``...)."""
    model, x, y = _problem()
    kwargs = row.configurations()[cfg]
    opts = [_make(row, model.parameters(), kwargs)]
    if row.supports_foreach:
        opts += [_make(row, model.parameters(), kwargs, foreach=f) for f in (True, False)]
        opts += [
            _make(row, model.parameters(), kwargs, foreach=f, lr=torch.tensor(kwargs["lr"])) for f in (True, False)
        ]
    _loss(model, x, y).backward()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync in step()")

    for opt in opts:
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
                m.setattr(torch.Tensor, name, forbidden)
            opt.step()
            opt.step()


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_param_groups_take_their_own_settings(row: OptimInfo, cfg: int) -> None:
    kwargs = dict(row.configurations()[cfg])
    model, x, y = _problem()
    twin = copy.deepcopy(model)
    first = list(model.fc1.parameters())
    rest = [*model.fc2.parameters(), model.gain]
    opt = _make(row, [{"params": first}, {"params": rest, "lr": 0.0}], kwargs)
    assert opt.param_groups[1]["lr"] == 0.0
    assert opt.param_groups[0]["lr"] == kwargs["lr"]
    rest_before = [p.detach().clone() for p in rest]
    _train(opt, model, x, y, 3)
    for b, p in zip(rest_before, rest):
        torch.testing.assert_close(p, b, rtol=0, atol=0)
    assert any(not torch.equal(p, q) for p, q in zip(first, twin.fc1.parameters()))
    if row.groups_independent:
        # The first group evolves exactly as an optimizer that holds it alone.
        alone = _make(row, twin.fc1.parameters(), kwargs)
        for p in [*twin.fc2.parameters(), twin.gain]:
            p.requires_grad_(False)
        _train(alone, twin, x, y, 3)
        for p, q in zip(first, twin.fc1.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_add_param_group_uses_defaults(row: OptimInfo) -> None:
    model, x, y = _problem()
    opt = _make(row, model.fc1.parameters(), row.descent_kwargs)
    opt.add_param_group({"params": [*model.fc2.parameters(), model.gain]})
    for key in opt.defaults:
        assert key in opt.param_groups[1]
    before = model.fc2.weight.detach().clone()
    _train(opt, model, x, y, 2)
    assert not torch.equal(before, model.fc2.weight)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_maximize_equals_minimizing_the_negated_loss(row: OptimInfo) -> None:
    if not row.supports_maximize:
        pytest.skip(f"{row.name} has no maximize flag (registry flag)")
    model, x, y = _problem()
    twin = copy.deepcopy(model)
    up = _make(row, model.parameters(), row.descent_kwargs, maximize=True)
    down = _make(row, twin.parameters(), row.descent_kwargs)
    for _ in range(4):
        up.zero_grad()
        (-_loss(model, x, y)).backward()
        up.step()
        _train(down, twin, x, y, 1)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
