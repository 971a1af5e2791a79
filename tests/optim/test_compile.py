"""Fast paths: ``step()`` under ``torch.compile(fullgraph=True)``, and the foreach path as the default.

Every registered optimizer (``theorylr.optim.registry``) is compiled with a counting backend that runs the captured
graph eagerly (so no inductor/C++ toolchain is needed on CI): ``fullgraph=True`` turns any graph break into an
error, the count shows how many graphs were compiled (the first step, which creates the state, and the steady
state: no recompilation after that), and the compiled steps are compared with eager steps on a twin model.
The adaptive optimizers are also compiled in their closed-form mode, where ``step()`` reads the tracker.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.optim import Optimizer

from theorylr.optim.registry import OPTIMIZERS, OptimInfo

ROWS = list(OPTIMIZERS.values())
STEPS = 4


class _CountingBackend:
    """A ``torch.compile`` backend that counts the graphs it is given, keeps them (``modules``) for inspection, and
    runs each as captured (eagerly)."""

    def __init__(self) -> None:
        self.modules: list[torch.fx.GraphModule] = []

    @property
    def graphs(self) -> int:
        return len(self.modules)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.modules.append(gm)
        return gm.forward


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(12, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (12,), generator=gen)


def _cases() -> list[tuple[OptimInfo, Mapping[str, Any], str]]:
    """For each row, the configuration that turns on the most switches (default ``foreach``), and for rows with a
    Lipschitz mode also the closed-form mode with a model (one compile costs ~1 s: the full matrix would be slow)."""
    cases = []
    for row in ROWS:
        richest = max(row.configurations(), key=len)
        cases.append((row, richest, f"{row.name}-{'-'.join(sorted(k for k in richest if k != 'lr'))}"))
        if "lipschitz" in row.descent_kwargs:
            closed = {k: v for k, v in row.descent_kwargs.items() if k != "lipschitz"}
            cases.append((row, {**closed, "lipschitz": "closed_form", "model": None}, f"{row.name}-closed_form"))
    return cases


CASES = _cases()


def _build(row: OptimInfo, model: nn.Module, kwargs: Mapping[str, Any]) -> Optimizer:
    kwargs = dict(kwargs)
    if "model" in kwargs:
        kwargs.update(model=model, loss="softmax")
    return row.load()(model.parameters(), **kwargs)


def _step_both(
    step: int,
    compiled_step: Callable[[], Any],
    compiled: tuple[Optimizer, nn.Module],
    eager: tuple[Optimizer, nn.Module],
) -> None:
    """One step of the compiled optimizer and of its eager twin on the same batch; their parameters must agree."""
    x, y = _batch(step)
    for opt, net in (compiled, eager):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
    compiled_step()
    eager[0].step()
    for p, q in zip(compiled[1].parameters(), eager[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("row", "kwargs"), [(r, k) for r, k, _ in CASES], ids=[i for _, _, i in CASES])
def test_step_compiles_without_graph_breaks_and_matches_eager(row: OptimInfo, kwargs: Mapping[str, Any]) -> None:
    torch._dynamo.reset()
    model, twin = _model(), _model()
    compiled_opt, eager_opt = _build(row, model, kwargs), _build(row, twin, kwargs)
    backend = _CountingBackend()
    compiled_step = torch.compile(compiled_opt.step, fullgraph=True, backend=backend)
    graphs = []
    for step in range(STEPS):
        _step_both(step, compiled_step, (compiled_opt, model), (eager_opt, twin))
        graphs.append(backend.graphs)
    for p, q in zip(model.parameters(), copy.deepcopy(_model()).parameters()):
        assert not torch.equal(p, q)  # the steps moved every tensor
    assert graphs[0] >= 1
    assert graphs[-1] <= 2, f"{graphs[-1]} graphs for {STEPS} steps"
    assert graphs[1] == graphs[-1], f"recompiled after the second step: {graphs}"
    for closer in (getattr(compiled_opt, "close", None), getattr(eager_opt, "close", None)):
        if closer is not None:
            closer()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
@pytest.mark.parametrize(("row", "kwargs"), [(r, k) for r, k, _ in CASES], ids=[i for _, _, i in CASES])
def test_a_tensor_lr_changed_by_a_scheduler_does_not_recompile(row: OptimInfo, kwargs: Mapping[str, Any]) -> None:
    """A 0-dim tensor lr, as torch's optimizers take (torch's schedulers update it in place): the compiled step
    reads it as a graph input, follows the eager step with a float lr as a scheduler lowers it, and compiles no
    graph after the second step.

    The step is compiled before the scheduler wraps ``optimizer.step`` (dynamo does not trace that wrapper, so the
    scheduler cannot see the compiled calls and warns; the warning is filtered)."""
    torch._dynamo.reset()
    model, twin = _model(), _model()
    lr = float(kwargs["lr"])
    compiled_opt = _build(row, model, {**kwargs, "lr": torch.tensor(lr, dtype=torch.float64)})
    eager_opt = _build(row, twin, kwargs)
    backend = _CountingBackend()
    compiled_step = torch.compile(compiled_opt.step, fullgraph=True, backend=backend)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.8**t) for o in (compiled_opt, eager_opt)]
    graphs = []
    for step in range(STEPS + 1):
        _step_both(step, compiled_step, (compiled_opt, model), (eager_opt, twin))
        for scheduler in schedulers:
            scheduler.step()
        graphs.append(backend.graphs)
    assert isinstance(compiled_opt.param_groups[0]["lr"], torch.Tensor)
    assert float(compiled_opt.param_groups[0]["lr"]) == pytest.approx(lr * 0.8 ** (STEPS + 1))
    assert graphs[1] == graphs[-1], f"recompiled as the lr changed: {graphs}"
    for closer in (getattr(compiled_opt, "close", None), getattr(eager_opt, "close", None)):
        if closer is not None:
            closer()


@pytest.mark.parametrize("row", [r for r in ROWS if r.supports_foreach], ids=lambda r: r.name)
def test_foreach_is_the_default_on_cpu(row: OptimInfo) -> None:
    model = _model()
    opt = row.load()(model.parameters(), **row.descent_kwargs)
    x, y = _batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = {event.name for event in prof.events()}
    assert any(name.startswith("aten::_foreach_") for name in names)
    assert "aten::add_" not in names or any(name == "aten::_foreach_add_" for name in names)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_a_second_compiled_optimizer_with_another_weight_decay_compiles_without_graph_breaks(row: OptimInfo) -> None:
    """A second instance with another ``weight_decay`` in the same process: dynamo then holds the float as a symbol,
    which ``step()`` must not read (a regression test: the adaptive optimizers once validated it there)."""
    torch._dynamo.reset()
    for weight_decay in (1e-3, 2e-3):
        model, twin = _model(), _model()
        kwargs = {**row.descent_kwargs, "weight_decay": weight_decay}
        compiled_opt, eager_opt = _build(row, model, kwargs), _build(row, twin, kwargs)
        compiled_step = torch.compile(compiled_opt.step, fullgraph=True, backend=_CountingBackend())
        for step in range(2):
            _step_both(step, compiled_step, (compiled_opt, model), (eager_opt, twin))
        for closer in (getattr(compiled_opt, "close", None), getattr(eager_opt, "close", None)):
            if closer is not None:
                closer()


def test_compiled_lars_takes_paired_l2_norms_and_matches_eager_on_large_tensors() -> None:
    """Under compile on the CPU, LARS (``foreach`` by default) runs its per-tensor form and takes its L2 norms from
    ``_compiled_l2_norms`` (a ``where`` per pair, rows of 4096 for sizes that divide): on tensors that take the row
    path, the flat path and a non-contiguous one, the compiled steps equal eager foreach steps."""
    from theorylr.optim.lars import LARS

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(3)
    shapes: list[tuple[int, ...]] = [(2, 4096), (3, 5000), (16,)]
    base = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    base.append(torch.randn(64, 128, generator=gen, dtype=torch.float64).t())  # 8192 elements, not contiguous
    grads = [[torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in base] for _ in range(3)]
    params = [nn.Parameter(t.clone()) for t in base]
    twins = [nn.Parameter(t.clone()) for t in base]
    kwargs: dict[str, Any] = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": True}
    compiled_opt, eager_opt = LARS(params, **kwargs), LARS(twins, **kwargs)
    backend = _CountingBackend()
    compiled_step = torch.compile(compiled_opt.step, fullgraph=True, backend=backend)
    for step_grads in grads:
        for p, q, g in zip(params, twins, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        compiled_step()
        eager_opt.step()
        for p, q in zip(params, twins):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    nodes = list(backend.modules[-1].graph.nodes)
    # where(p == p, uu, uu): one per (w, d) pair; sums over dim 1: the rows of the (2, 4096) tensor, for w and d
    paired = [n for n in nodes if n.target is torch.where and n.args[1] is n.args[2]]
    row_sums = [n for n in nodes if n.op == "call_method" and n.target == "sum" and n.args[1:] == (1,)]
    assert len(paired) == len(base)
    assert len(row_sums) == 2
    assert not any("_foreach_" in str(n.target) for n in nodes)  # the per-tensor form


def test_compiled_local_norms_sum_by_rows_and_match_vector_norm() -> None:
    """``local_norms(foreach=True)`` under compile on the CPU (the adaptive optimizers' observed norms): inductor's
    own sums, by rows of 4096 for a contiguous size that divides, equal to ``vector_norm``."""
    from theorylr.optim.lars import local_norms

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(4)
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(3, 4096), (5000,), (7, 3)]]
    backend = _CountingBackend()
    norms = torch.compile(lambda ts: local_norms(ts, "l2", foreach=True), fullgraph=True, backend=backend)(tensors)
    for value, t in zip(norms, tensors):
        torch.testing.assert_close(value, torch.linalg.vector_norm(t), rtol=1e-13, atol=0.0)
    nodes = backend.modules[0].graph.nodes
    row_sums = [n for n in nodes if n.op == "call_method" and n.target == "sum" and n.args[1:] == (1,)]
    assert len(row_sums) == 1


ADAPTIVE = [r for r in ROWS if "lipschitz" in r.descent_kwargs]


@pytest.mark.parametrize("form", ["rigorous", "least_squares"])
@pytest.mark.parametrize("row", ADAPTIVE, ids=lambda r: r.name)
def test_closed_form_steps_with_unfolded_batches_compile_once_past_the_recompile_limit(
    row: OptimInfo, form: str
) -> None:
    """The closed forms whose batch constant is computed at the step (``rigorous=True``, least squares): the step
    reads the latest batch's constant without folding it into the epoch (which appends to a list: its length would
    be a guard, and every step would recompile until dynamo's limit of 8 failed ``fullgraph``). Twelve compiled
    steps equal eager ones, with no graph after the second step, and every batch is counted once."""
    torch._dynamo.reset()
    kwargs = {k: v for k, v in row.descent_kwargs.items() if k != "lipschitz"}
    extra: dict[str, Any] = {"rigorous": True} if form == "rigorous" else {"loss": "least_squares"}
    model, twin = _model(), _model()
    compiled_opt = row.load()(model.parameters(), **kwargs, lipschitz="closed_form", model=model, **extra)
    eager_opt = row.load()(twin.parameters(), **kwargs, lipschitz="closed_form", model=twin, **extra)
    backend = _CountingBackend()
    compiled_step = torch.compile(compiled_opt.step, fullgraph=True, backend=backend)
    graphs = []
    steps = 12
    for step in range(steps):
        x, y = _batch(step)
        for opt, net in ((compiled_opt, model), (eager_opt, twin)):
            opt.zero_grad()
            out = net(x)
            if form == "least_squares":
                target = nn.functional.one_hot(y, 3).to(out.dtype)
                opt.tracker.observe_targets(target)
                loss = 0.5 * (out - target).pow(2).sum(1).mean()
            else:
                loss = nn.functional.cross_entropy(out, y)
            loss.backward()
        compiled_step()
        eager_opt.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        graphs.append(backend.graphs)
    assert graphs[1] == graphs[-1] <= 2, f"graphs after each step: {graphs}"
    for opt in (compiled_opt, eager_opt):
        stats = opt.tracker.epoch_stats()
        assert stats is not None and stats.batches == steps
    torch.testing.assert_close(compiled_opt.tracker.epoch_stats().lipschitz, eager_opt.tracker.epoch_stats().lipschitz)
    compiled_opt.close()
    eager_opt.close()
