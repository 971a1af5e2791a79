"""The CUDA paths: every optimizer, estimator and the LipschitzLR scheduler on a GPU, against the CPU.

Skipped where no CUDA device is present (CI has none). ``THEORYLR_TEST_DEVICE=cpu`` runs them on the CPU instead,
which checks the tests themselves (the host-sync checks then use the CPU suite's method; the inductor tests compile
C++ and take minutes). What each test pins down:

* a float64 step on the device equals the CPU step (every registry configuration, 5 steps, state included), and
  the state lives on the device;
* foreach equals the loop on the device (float32);
* ``step()`` makes no host-device synchronisation (``torch.cuda.set_sync_debug_mode("error")``), nor do the
  LipschitzLR hooks during an epoch's batches;
* bf16 parameters step as float32 ones do, to bf16 precision;
* ``torch.compile(step, fullgraph=True)`` with inductor (Triton kernels) equals the eager step, and so does the
  step compiled with CUDA graphs and combo kernels (the README's recipe), replayed;
* the Hessian spectral norm on the device equals the dense Hessian's; LipschitzLR's learning rates equal the CPU's;
* the lab runs its theory rules on the device.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import Optimizer

from tests.estimate._reference import classification_data, dense_hessian, mlp, spectral_norm
from tests.optim.test_generic import (
    CONFIG_IDS,
    CONFIGS,
    ROWS,
    _assert_same_state,
    _loss,
    _make,
    _problem,
    _state_tensors,
)
from theorylr.optim.registry import OptimInfo


def _device() -> torch.device | None:
    name = os.environ.get("THEORYLR_TEST_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda") if torch.cuda.is_available() else None


DEVICE = _device()
pytestmark = pytest.mark.skipif(
    DEVICE is None, reason="no CUDA device (THEORYLR_TEST_DEVICE=cpu runs these tests on the CPU)"
)
FOREACH_CONFIGS = [(row, cfg) for row, cfg in CONFIGS if row.supports_foreach]
FOREACH_IDS = [i for (row, _), i in zip(CONFIGS, CONFIG_IDS) if row.supports_foreach]


def _dev() -> torch.device:
    assert DEVICE is not None
    return DEVICE


@contextlib.contextmanager
def _no_host_sync() -> Iterator[None]:
    """Raise on any host-device synchronisation inside the block (CUDA); on the CPU, on any read of a tensor's
    value on the host, as the CPU suite checks it."""
    if _dev().type == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return
    with pytest.MonkeyPatch.context() as m:

        def forbidden(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("host sync")

        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        yield


def _to_device(model: nn.Module, *tensors: torch.Tensor) -> tuple[nn.Module, ...]:
    return (copy.deepcopy(model).to(_dev()), *(t.to(_dev()) for t in tensors))  # type: ignore[return-value]


def _step(opt: Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    _loss(model, x, y).backward()
    opt.step()


def _assert_same_state_across_devices(cpu: Optimizer, dev: Optimizer, **tol: float) -> None:
    """Same state on both devices. LARS keeps its momentum buffer factored on the CPU and plain elsewhere: its
    buffers are compared as :meth:`~theorylr.optim.lars.LARS.momentum_buffer` returns them."""
    buffer_of = getattr(cpu, "momentum_buffer", None)
    split = {"momentum_buffer", "momentum_scale"} if buffer_of is not None else set()
    a = {k: v for k, v in _state_tensors(cpu) if k.rsplit(".", 1)[1] not in split}
    b = {k: v for k, v in _state_tensors(dev) if k.rsplit(".", 1)[1] not in split}
    assert a.keys() == b.keys()
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(other.cpu(), value, msg=lambda m, k=key: f"state {k}: {m}", **tol)  # type: ignore[misc]
        else:
            assert other == value, key
    if buffer_of is not None:
        pairs = zip(
            (p for g in cpu.param_groups for p in g["params"]), (p for g in dev.param_groups for p in g["params"])
        )
        for p, q in pairs:
            mine, theirs = buffer_of(p), dev.momentum_buffer(q)  # type: ignore[attr-defined]
            assert (mine is None) == (theirs is None)
            if mine is not None:
                torch.testing.assert_close(theirs.cpu(), mine, **tol)
            if _dev().type != "cpu":
                assert "momentum_scale" not in dev.state.get(q, {})  # plain off the CPU (the default)


# ----------------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_float64_steps_on_the_device_equal_the_cpu_steps(row: OptimInfo, cfg: int) -> None:
    kwargs = row.configurations()[cfg]
    model, x, y = _problem(torch.float64)
    dev_model, dx, dy = _to_device(model, x, y)
    cpu_opt, dev_opt = _make(row, model.parameters(), kwargs), _make(row, dev_model.parameters(), kwargs)
    for _ in range(5):
        _step(cpu_opt, model, x, y)
        _step(dev_opt, dev_model, dx, dy)
    for p, q in zip(model.parameters(), dev_model.parameters()):
        assert q.device.type == _dev().type
        torch.testing.assert_close(q.cpu(), p, rtol=1e-9, atol=1e-11)
    _assert_same_state_across_devices(cpu_opt, dev_opt, rtol=1e-9, atol=1e-11)
    for state in dev_opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                assert value.device.type == _dev().type, key


@pytest.mark.parametrize(("row", "cfg"), FOREACH_CONFIGS, ids=FOREACH_IDS)
def test_foreach_equals_the_loop_on_the_device(row: OptimInfo, cfg: int) -> None:
    kwargs = row.configurations()[cfg]
    model, x, y = _problem(torch.float32)
    fast_model, dx, dy = _to_device(model, x, y)
    slow_model = copy.deepcopy(fast_model)
    fast = _make(row, fast_model.parameters(), kwargs, foreach=True)
    slow = _make(row, slow_model.parameters(), kwargs, foreach=False)
    for _ in range(6):
        _step(fast, fast_model, dx, dy)
        _step(slow, slow_model, dx, dy)
    for p, q in zip(fast_model.parameters(), slow_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
def test_step_makes_no_host_device_sync(row: OptimInfo, cfg: int) -> None:
    kwargs = row.configurations()[cfg]
    model, x, y = _problem(torch.float32)
    dev_model, dx, dy = _to_device(model, x, y)
    variants: list[dict[str, Any]] = [{}]
    if row.supports_foreach:
        variants += [{"foreach": True}, {"foreach": False}]
    for extra in variants:
        opt = _make(row, dev_model.parameters(), kwargs, **extra)
        for _ in range(3):  # the first step creates the state; later ones are the steady state
            opt.zero_grad()
            _loss(dev_model, dx, dy).backward()
            with _no_host_sync():
                opt.step()


@pytest.mark.parametrize(("row", "cfg"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("lr_on_device", [False, True], ids=["cpu-lr", "device-lr"])
def test_a_tensor_lr_on_either_device_equals_the_float_lr(row: OptimInfo, cfg: int, lr_on_device: bool) -> None:
    """A 0-dim tensor lr (on the CPU, as users write it, or on the device) gives the float lr's steps, foreach and
    loop, without a host-device sync in ``step()``."""
    kwargs = row.configurations()[cfg]
    model, x, y = _problem(torch.float64)
    ref_model, dx, dy = _to_device(model, x, y)
    variants: list[dict[str, Any]] = [{"foreach": True}, {"foreach": False}] if row.supports_foreach else [{}]
    for extra in variants:
        tensor_model = copy.deepcopy(ref_model)
        float_model = copy.deepcopy(ref_model)
        lr = torch.tensor(float(kwargs["lr"]), dtype=torch.float64, device=_dev() if lr_on_device else "cpu")
        tensor_opt = _make(row, tensor_model.parameters(), kwargs, lr=lr, **extra)
        float_opt = _make(row, float_model.parameters(), kwargs, **extra)
        for _ in range(4):
            _step(float_opt, float_model, dx, dy)
            tensor_opt.zero_grad()
            _loss(tensor_model, dx, dy).backward()
            with _no_host_sync():
                tensor_opt.step()
        for p, q in zip(tensor_model.parameters(), float_model.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_bfloat16_parameters_step_as_float32_ones_do(row: OptimInfo) -> None:
    model, x, y = _problem(torch.float32)
    f32_model, dx, dy = _to_device(model, x, y)
    bf16_model = copy.deepcopy(f32_model).to(torch.bfloat16)
    start = [p.detach().clone() for p in f32_model.parameters()]
    f32 = _make(row, f32_model.parameters(), row.descent_kwargs)
    bf16 = _make(row, bf16_model.parameters(), row.descent_kwargs)
    for _ in range(3):
        _step(f32, f32_model, dx, dy)
        _step(bf16, bf16_model, dx.bfloat16(), dy.bfloat16())
    for p, q, p0 in zip(f32_model.parameters(), bf16_model.parameters(), start):
        p, q = p.detach(), q.detach()
        assert q.dtype == torch.bfloat16 and bool(torch.isfinite(q).all())
        # The bf16 run moves the weights as the float32 run does, to bf16's precision (8 bits of mantissa over
        # three steps, plus the bf16 forward pass that computed its gradients).
        moved = (p - p0).norm()
        assert float(moved) > 0
        assert float((q.float() - p).norm()) <= 0.1 * float(moved) + 1e-2 * float(p.norm())


def _compile_cases() -> list[tuple[OptimInfo, Mapping[str, Any]]]:
    return [(row, max(row.configurations(), key=len)) for row in ROWS]


@pytest.mark.parametrize("warm", [True, False], ids=["after-an-eager-step", "from-the-first-step"])
@pytest.mark.parametrize(("row", "kwargs"), _compile_cases(), ids=[r.name for r, _ in _compile_cases()])
def test_inductor_compiled_step_on_the_device_equals_the_eager_step(
    row: OptimInfo, kwargs: Mapping[str, Any], warm: bool, request: pytest.FixtureRequest
) -> None:
    """``warm``: the state exists before compiling (one eager step), as in the benchmarks; otherwise the first
    compiled call creates it.

    On CUDA with torch 2.11 (H200, 2026-11-26), inductor generated, for the adaptive optimizers on this small
    model, a multi-tensor Triton kernel whose subkernels read a 0-dim input (the step's Lipschitz estimate) under
    a name it had renamed to ``in_out_ptr0`` when it reused that buffer in place for an output: ``NameError:
    in_ptr1 is not defined`` at Triton compile time, warm or not (cold, with the per-tensor scalars of the first
    step: ``in_ptr0``). The same steps compiled on the ResNet-18 set ran (``benchmarks/RESULTS.md``). A code
    generation bug of that torch version, not a wrong result: marked as an expected failure on CUDA, not strict,
    so that a torch that fixes it shows up as XPASS."""
    import torch._dynamo

    if "lipschitz" in kwargs and _dev().type == "cuda":
        request.applymarker(
            pytest.mark.xfail(reason="torch 2.11 inductor: Triton NameError in a foreach kernel (see docstring)")
        )
    torch._dynamo.reset()
    model, x, y = _problem(torch.float32)
    compiled_model, dx, dy = _to_device(model, x, y)
    eager_model = copy.deepcopy(compiled_model)
    compiled_opt = _make(row, compiled_model.parameters(), kwargs)
    eager_opt = _make(row, eager_model.parameters(), kwargs)
    if warm:
        for opt, net in ((compiled_opt, compiled_model), (eager_opt, eager_model)):
            _step(opt, net, dx, dy)
    step = torch.compile(compiled_opt.step, fullgraph=True)
    for _ in range(4):
        for opt, net in ((compiled_opt, compiled_model), (eager_opt, eager_model)):
            opt.zero_grad()
            _loss(net, dx, dy).backward()
        step()
        eager_opt.step()
    # rtol 3e-5: inductor's fused arithmetic rounds differently (AdaptiveRMSprop on the CPU, THEORYLR_TEST_DEVICE=cpu,
    # torch 2.13: 1.2e-5 on one element of 36 after 4 steps)
    for p, q in zip(compiled_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=3e-5, atol=1e-6)


# The README's recipe for compiling a step on a GPU (and benchmarks.optim_step.COMPILE_SETTINGS["cudagraphs+combo"]).
CUDA_GRAPH_OPTIONS = {"triton.cudagraphs": True, "combo_kernels": True}


@pytest.mark.parametrize(("row", "kwargs"), _compile_cases(), ids=[r.name for r, _ in _compile_cases()])
def test_cuda_graph_combo_kernel_step_equals_the_eager_step(
    row: OptimInfo, kwargs: Mapping[str, Any], request: pytest.FixtureRequest
) -> None:
    """The step compiled as the README recommends on a GPU: after one eager step, parameters, gradients and state
    marked as static addresses, gradients kept in place (``zero_grad(set_to_none=False)``), then
    ``torch.compile(opt.step, fullgraph=True, options=CUDA_GRAPH_OPTIONS)``. The graph is replayed for several
    steps; every replay must update the same tensors the eager step updates, to the same values. Same expected
    failure as the inductor test for the steps carrying a Lipschitz estimate."""
    import torch._dynamo

    if _dev().type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    if "lipschitz" in kwargs:
        request.applymarker(
            pytest.mark.xfail(reason="torch 2.11 inductor: Triton NameError in a foreach kernel (see above)")
        )
    torch._dynamo.reset()
    model, x, y = _problem(torch.float32)
    compiled_model, dx, dy = _to_device(model, x, y)
    eager_model = copy.deepcopy(compiled_model)
    compiled_opt = _make(row, compiled_model.parameters(), kwargs)
    eager_opt = _make(row, eager_model.parameters(), kwargs)
    for opt, net in ((compiled_opt, compiled_model), (eager_opt, eager_model)):
        _step(opt, net, dx, dy)
    for group in compiled_opt.param_groups:
        for p in group["params"]:
            for t in (p, p.grad, *compiled_opt.state[p].values()):
                if isinstance(t, torch.Tensor):
                    torch._dynamo.mark_static_address(t)
    step = torch.compile(compiled_opt.step, fullgraph=True, options=CUDA_GRAPH_OPTIONS)
    for _ in range(4):  # the first calls record the graph, the later ones replay it
        for opt, net in ((compiled_opt, compiled_model), (eager_opt, eager_model)):
            opt.zero_grad(set_to_none=False)
            _loss(net, dx, dy).backward()
        step()
        eager_opt.step()
    torch.cuda.synchronize()
    # Fused kernels round differently from the eager ones, and the adaptive steps (divided by sqrt(S)) carry that
    # rounding into the next step: a few float32 ulps per step, hence 1e-4 (on the CPU, AdaptiveRMSprop's
    # parameters differed by up to 2e-4 relative after these steps).
    for p, q in zip(compiled_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    _assert_same_state(compiled_opt, eager_opt, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Curvature and Lipschitz constants
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_hessian_spectral_norm_on_the_device_equals_the_dense_hessian(method: str) -> None:
    from theorylr.estimate import hessian_spectral_norm

    model, (x, y) = mlp(nn.Tanh), classification_data()
    expected = spectral_norm(dense_hessian(model, nn.CrossEntropyLoss(), [(x, y)]))
    dev_model, dx, dy = _to_device(model, x, y)
    result = hessian_spectral_norm(
        dev_model, nn.CrossEntropyLoss(), (dx, dy), method=method, tol=1e-6, max_matvecs=300, seed=3
    )
    assert result.value == pytest.approx(expected, rel=1e-4)
    # Several batches (the graphs kept, the default) give the batch-size-weighted loss's Hessian too.
    batches = [(dx[:10], dy[:10]), (dx[10:], dy[10:])]
    again = hessian_spectral_norm(dev_model, nn.CrossEntropyLoss(), batches, method=method, tol=1e-6, max_matvecs=300)
    assert again.value == pytest.approx(expected, rel=1e-4)


def test_smoothness_on_the_device_is_reproducible_and_each_sample_is_a_spectral_norm() -> None:
    from theorylr.estimate import reset_parameters_sampler, smoothness

    model, (x, y) = mlp(nn.Tanh), classification_data()
    dev_model, dx, dy = _to_device(model, x, y)
    before = [p.detach().clone() for p in dev_model.parameters()]
    first = smoothness(dev_model, nn.CrossEntropyLoss(), (dx, dy), num_samples=3, seed=2, tol=1e-6, max_matvecs=300)
    second = smoothness(dev_model, nn.CrossEntropyLoss(), (dx, dy), num_samples=3, seed=2, tol=1e-6, max_matvecs=300)
    assert [s.value for s in first.samples] == [s.value for s in second.samples]
    for p, q in zip(before, dev_model.parameters()):
        assert torch.equal(p, q)  # the model comes back as it was
    for sample in first.samples:  # the device's weight draw, moved to the CPU, has the dense Hessian's norm
        probe = copy.deepcopy(dev_model)
        reset_parameters_sampler(probe, torch.Generator().manual_seed(sample.seed))
        dense = dense_hessian(probe.cpu(), nn.CrossEntropyLoss(), [(x, y)])
        assert sample.value == pytest.approx(spectral_norm(dense), rel=1e-4)


def _lipschitz_run(device: torch.device, loss: str) -> tuple[list[dict[str, Any]], list[float]]:
    from theorylr import LipschitzLR

    torch.manual_seed(0)
    out = 3 if loss == "softmax" else 1
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, out)).double().to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (96,), generator=gen) if loss == "softmax" else torch.rand(96, 1, generator=gen).double()
    x, y = x.to(device), y.to(device).to(torch.float64 if loss != "softmax" else torch.long)
    criterion: Any = nn.CrossEntropyLoss() if loss == "softmax" else nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    lrs = []
    with LipschitzLR(opt, model, loss, initial_lr=0.1) as sched:
        for _ in range(3):
            for xb, yb in zip(x.split(32), y.split(32)):
                opt.zero_grad()
                with _no_host_sync() if device.type == _dev().type else contextlib.nullcontext():
                    criterion(model(xb), yb).backward()  # the tracker's hook runs in the forward pass
                    opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return list(sched.history), lrs


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_lipschitz_lr_on_the_device_equals_the_cpu_and_syncs_once_per_epoch(loss: str) -> None:
    cpu_history, cpu_lrs = _lipschitz_run(torch.device("cpu"), loss)
    dev_history, dev_lrs = _lipschitz_run(_dev(), loss)
    assert dev_lrs == pytest.approx(cpu_lrs, rel=1e-9)
    assert [h["source"] for h in dev_history] == ["initial_lr", "epoch", "epoch", "epoch"]
    constants = [[h["lipschitz"] for h in history[1:]] for history in (cpu_history, dev_history)]
    assert constants[1] == pytest.approx(constants[0], rel=1e-9)


def test_adaptive_optimizers_in_closed_form_mode_on_the_device_equal_the_cpu() -> None:
    from theorylr import AdaMo, AdaptiveRMSprop, AutoAdam

    for cls in (AdaMo, AutoAdam, AdaptiveRMSprop):
        runs = []
        for device in (torch.device("cpu"), _dev()):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().to(device)
            x, y = classification_data(n=48, seed=4)
            x, y = x.to(device), y.to(device)
            opt = cls(model.parameters(), lipschitz="closed_form", model=model, loss="softmax")
            for xb, yb in zip(x.split(16), y.split(16)):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), yb).backward()
                with _no_host_sync() if device.type == _dev().type else contextlib.nullcontext():
                    opt.step()
            runs.append([p.detach().cpu() for p in model.parameters()])
            getattr(opt, "close", lambda: None)()
        for p, q in zip(*runs):
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------------------------
# The lab
# ----------------------------------------------------------------------------------------------------------------
def test_lab_compare_runs_the_theory_rules_on_the_device(tmp_path: Path) -> None:
    from theorylr.lab import compare

    rules = ["lars", "percent-delta", "exact-adam", "lipschitz-sgd", "adamo", "auto-adam", "adaptive-rmsprop"]
    result = compare("digits-mlp", rules, out=tmp_path, epochs=2, device=str(_dev()), verbose=False, progress=False)
    assert {r.rule for r in result.results} == set(rules)
    for r in result.results:
        assert r.status == "finished", r.line()
        # Finite, not necessarily low: exact-adam's alpha = sqrt(2 L0 / (K_hat T)) is large for a 2-epoch budget.
        assert r.epochs_done == 2 and math.isfinite(r.final["train_loss"]), r.line()
        assert 0.0 <= r.final["test_accuracy"] <= 1.0, r.line()
