"""Adaptive-optimizer step speed and memory on a ResNet-18-shaped parameter set, as ratios to torch's Adam (foreach).

Run with ``python -m benchmarks.adaptive_step`` (``--help`` for the options). Every row times ``opt.step()`` alone on
the 62 tensors of :func:`benchmarks.optim_step.resnet18_shapes` (11,689,512 parameters) with fixed random
gradients, after one eager step (state created). Rows:

- torch ``Adam(foreach=True)`` (the baseline), ``Adam(fused=True)`` and ``torch.compile``'d Adam (inductor);
- theorylr AdaMo, AutoAdam and AdaptiveRMSprop on their default (foreach) path, in ``lipschitz="observed"`` mode
  (the per-step estimate is the largest gradient norm: one more read of the gradients than the closed-form mode,
  which only reads the tracker), and the same three under ``torch.compile(step, fullgraph=True)`` (inductor); on
  CUDA also AutoAdam compiled with ``mode="reduce-overhead"`` (CUDA graphs, state marked as static addresses), and
  torch's Adam and the three with CUDA graphs and inductor's combo kernels
  (:data:`benchmarks.optim_step.COMPILE_SETTINGS`);
- peers: Prodigy, schedule-free AdamW, D-Adapt Adam (each skipped with a message when not installed). timm's
  ``Lars`` is a row of ``benchmarks.optim_step`` where timm is installed (it needs torchvision: not here).

A row that fails to build or compile is reported and skipped; the others are still measured.

Rows are measured interleaved step by step (``--schedule interleaved``, the default; ``blocked`` runs each row's
steps back to back, see :func:`benchmarks._timing.time_rounds`): each round runs ``--repeats`` passes, and each pass
steps every row once, in a new random order, so that a slow spell on a shared machine hits all rows alike. The table
gives the median over
rounds of each row's per-round median, and the range over rounds of its ratio to the baseline. The theorylr rows
are compiled with ``fullgraph=True``; torch's Adam with ``fullgraph=False`` (its ``step`` breaks the graph on
purpose). "% copy" is the effective bandwidth
(the bytes the update must move at least once, over the step time) against the machine's ``copy_`` bandwidth on
tensors of the same shapes (read + write), timed as a row of the same schedule so that it finds the caches as the
rows do: 100 % would be a step as fast as copying its data once (a step that streams several tensors can exceed
it). Memory columns, in units
of the parameters' own size: the optimizer state kept between steps, and the peak of temporaries allocated
during one steady-state step (CPU allocator events, ``torch.profiler(profile_memory=True)``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks._timing import SCHEDULES, machine_description, peak_transient_bytes, sync, time_rounds
from benchmarks.optim_step import COPY_ROW, compile_step, copy_row, resnet18_shapes

__all__ = ["main"]


@dataclass
class _Row:
    name: str
    make: Callable[[list[torch.nn.Parameter]], Any]
    bytes_per_param: int | None  # elements read + written per parameter by the update (None: not counted)
    compile: bool = False
    setting: str | None = None  # a key of benchmarks.optim_step.COMPILE_SETTINGS (None: inductor's defaults)


class _ScheduleFree:
    """schedule-free AdamW in training mode (it must be switched with ``train()`` before stepping)."""

    def __init__(self, opt: Any) -> None:
        opt.train()
        self.opt = opt
        self.param_groups = opt.param_groups
        self.state = opt.state
        self.step = opt.step


class _AutoAdamFloor:
    """AutoAdam's update (observed mode, its defaults: no bias correction, no weight decay) written with torch Adam's
    capturable pass structure: ``V.lerp_(g)``, ``S = b2 S + (1 - b2) g^2``, ``denom = sqrt(S + eps) / factor``,
    ``w.addcdiv_(V, denom)`` with one shared 0-dim ``factor = -lr (sqrt(K2) + eps) / K1``. Not a theorylr class: a
    floor for what the foreach path of :class:`~theorylr.optim.adaptive.AutoAdam` could cost (one parameter-sized
    temporary instead of three), checked against it in ``main`` before timing."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999)):
        self.params: list[torch.Tensor] = list(params)
        self.lr, self.betas, self.eps = lr, betas, 1e-8
        self.param_groups = [{"params": params}]
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.k1 = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.k2 = torch.zeros_like(self.k1)
        self.state = {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    @property
    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.exp_avg, *self.exp_avg_sq, self.k1, self.k2]

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        grads = [p.grad for p in self.params if p.grad is not None]
        lipschitz = torch.stack(torch._foreach_norm(grads)).amax().to(self.k1.dtype)
        self.k1.mul_(b1).add_(lipschitz, alpha=1 - b1)
        self.k2.mul_(b2).add_(lipschitz.square(), alpha=1 - b2)  # "no_cross" without weight decay: L^2
        factor = self.k2.sqrt().add(self.eps).div(self.k1.clamp_min(torch.finfo(self.k1.dtype).tiny)).mul(-self.lr)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - b1)
        torch._foreach_mul_(self.exp_avg_sq, b2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - b2)
        denom = torch._foreach_add(self.exp_avg_sq, self.eps)
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, factor)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom)


def _params(device: torch.device, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape in resnet18_shapes():
        p = torch.nn.Parameter((0.05 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype))
        p.grad = (1e-3 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype)
        out.append(p)
    return out


def _rows(compile: bool, cuda: bool = False) -> list[_Row]:
    from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam

    rows = [
        _Row("torch Adam foreach (baseline)", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), 7),
        _Row("torch Adam fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), 7),
        _Row("theorylr AdaMo foreach", lambda ps: AdaMo(ps, lipschitz="observed"), 6),
        _Row("theorylr AutoAdam foreach", lambda ps: AutoAdam(ps, lr=1e-3, lipschitz="observed"), 8),
        _Row("theorylr AdaptiveRMSprop foreach", lambda ps: AdaptiveRMSprop(ps, lr=1e-3, lipschitz="observed"), 6),
        _Row("floor: AutoAdam math, Adam's passes", lambda ps: _AutoAdamFloor(ps, lr=1e-3), 8),
    ]
    if compile:
        rows += [
            _Row("torch Adam compiled (inductor)", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), 7, True),
            _Row("theorylr AdaMo compiled (inductor)", lambda ps: AdaMo(ps, lipschitz="observed"), 6, True),
            _Row(
                "theorylr AutoAdam compiled (inductor)",
                lambda ps: AutoAdam(ps, lr=1e-3, lipschitz="observed"),
                8,
                True,
            ),
            _Row(
                "theorylr AdaptiveRMSprop compiled",
                lambda ps: AdaptiveRMSprop(ps, lr=1e-3, lipschitz="observed"),
                6,
                True,
            ),
        ]
    if compile and cuda:
        rows.append(
            _Row(
                "theorylr AutoAdam compiled, CUDA graphs",
                lambda ps: AutoAdam(ps, lr=1e-3, lipschitz="observed"),
                8,
                True,
                "reduce-overhead",
            )
        )
        rows += [
            _Row(f"{name} compiled, CUDA graphs + combo kernels", make, size, True, "cudagraphs+combo")
            for name, make, size in (
                ("torch Adam", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), 7),
                ("theorylr AdaMo", lambda ps: AdaMo(ps, lipschitz="observed"), 6),
                ("theorylr AutoAdam", lambda ps: AutoAdam(ps, lr=1e-3, lipschitz="observed"), 8),
                ("theorylr AdaptiveRMSprop", lambda ps: AdaptiveRMSprop(ps, lr=1e-3, lipschitz="observed"), 6),
            )
        ]
    peers: list[tuple[str, str, Callable[[Any, list[torch.nn.Parameter]], Any]]] = [
        ("Prodigy (peer)", "prodigyopt", lambda m, ps: m.Prodigy(ps, lr=1.0)),
        ("schedule-free AdamW (peer)", "schedulefree", lambda m, ps: _ScheduleFree(m.AdamWScheduleFree(ps))),
        ("D-Adapt Adam (peer)", "dadaptation", lambda m, ps: m.DAdaptAdam(ps, lr=1.0)),
    ]
    for name, module_name, make in peers:
        try:
            module = __import__(module_name)
        except ImportError:
            print(f"  ({name}: {module_name} is not installed, skipped; `make peers` installs it)")
            continue
        rows.append(_Row(name, functools.partial(make, module), None))
    return rows


def _check_floor() -> float:
    """The floor row computes AutoAdam's update: 3 steps on small tensors, largest relative difference returned
    (raises if above 1e-5 in float64)."""
    from theorylr.optim.adaptive import AutoAdam

    gen = torch.Generator().manual_seed(1)
    shapes = [(7, 5), (5,), (3, 2, 2)]
    a = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours, floor = AutoAdam(a, lr=1e-3, lipschitz="observed"), _AutoAdamFloor(b, lr=1e-3)
    floor.k1, floor.k2 = floor.k1.double(), floor.k2.double()
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            q.grad = p.grad.clone()
        ours.step()
        floor.step()
    with torch.no_grad():
        worst = max(float(((p - q).abs() / p.abs().clamp_min(1e-12)).max()) for p, q in zip(a, b))
    if worst > 1e-5:
        raise AssertionError(f"the AutoAdam floor row does not compute AutoAdam's update (relative error {worst:.1e})")
    return worst


def _state_bytes(opt: Any) -> int:
    if isinstance(opt, _AutoAdamFloor):
        return sum(t.numel() * t.element_size() for t in opt.state_tensors)
    total = 0
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time every row, print the table, and return the figures as a dict (JSON-ready)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive_step", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per row and round (default 10)")
    parser.add_argument(
        "--schedule",
        default="interleaved",
        choices=SCHEDULES,
        help="how the rows take turns (benchmarks._timing.time_rounds; default interleaved)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="add torch.compile'd rows (inductor)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    element = torch.empty((), dtype=dtype).element_size()
    floor_error = _check_floor()
    print(
        f"adaptive optimizers: building rows (compile={args.compile}); floor row checked (rel. error {floor_error:.0e})"
    )
    setups: dict[str, tuple[_Row, Any, Callable[[], Any], list[torch.nn.Parameter]]] = {}
    compile_seconds: dict[str, float] = {}
    for row in _rows(args.compile, device.type == "cuda"):
        params = _params(device, dtype)
        try:
            opt = row.make(params)
            opt.step()  # state exists before timing (and before compiling)
            step = opt.step
            if row.compile:
                start = time.perf_counter()
                # torch's own optimizers break the graph on purpose (torch.optim.optimizer._use_grad): no fullgraph.
                step = compile_step(opt, row.setting, fullgraph=row.name.startswith("theorylr"))
                step()
                sync(device)
                compile_seconds[row.name] = time.perf_counter() - start
        except Exception as exc:  # a compile error in one row leaves the others measured
            if not setups:
                raise
            print(f"  ({row.name}: failed and skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            continue
        setups[row.name] = (row, opt, step, params)
    sync(device)
    n_params = sum(p.numel() for p in next(iter(setups.values()))[3])
    param_bytes = n_params * element

    memory = {}
    if device.type == "cpu":
        for name, (_, opt, step, _) in setups.items():
            memory[name] = (_state_bytes(opt) / param_bytes, peak_transient_bytes(step) / param_bytes)

    steps = {name: setup[2] for name, setup in setups.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    first_params = next(iter(setups.values()))[3]
    copy_fn, copy_bytes = copy_row(first_params)
    steps[COPY_ROW] = copy_fn  # the copy timed as a row of the schedule: the rows' own cache regime
    per_round = time_rounds(steps, rounds=args.rounds, repeats=args.repeats, schedule=args.schedule, device=device)

    base_name = next(iter(setups))
    base = per_round[base_name]
    copy_rate = copy_bytes / (statistics.median(per_round.pop(COPY_ROW)) * 1e-3) / 1e9
    rows: list[dict[str, Any]] = []
    for name, round_ms in per_round.items():
        row = setups[name][0]
        ratios = [t / b for t, b in zip(round_ms, base)]
        ms = statistics.median(round_ms)
        gbps = None if row.bytes_per_param is None else row.bytes_per_param * param_bytes / (ms * 1e-3) / 1e9
        state_x, transient_x = memory.get(name, (None, None))
        rows.append(
            {
                "name": name,
                "median_ms": ms,
                "min_ms": min(round_ms),
                "times_ms": round_ms,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "bytes_per_param": row.bytes_per_param,
                "effective_gbps": gbps,
                "state_x_params": state_x,
                "transient_peak_x_params": transient_x,
                "compile_s": compile_seconds.get(name),
            }
        )

    print(f"adaptive optimizer step on 62 ResNet-18 tensors ({n_params:,} params, {args.dtype}, {device});")
    print(f"{args.rounds} rounds x {args.repeats} steps; machine: {machine_description()}")
    print(
        f"copy_ bandwidth {copy_rate:.1f} GB/s (read + write, timed as a row of the {args.schedule} schedule); "
        "memory in units of the parameters' size"
    )
    width = max(40, *(len(r["name"]) for r in rows))
    print(
        f"{'row':<{width}} {'ms/step':>8} {'x Adam':>6} {'range':>11} {'GB/s':>6} {'% copy':>6} {'state':>6} "
        f"{'temp':>5} {'compile s':>9}"
    )
    for r in rows:
        rate = "" if r["effective_gbps"] is None else f"{r['effective_gbps']:.1f}"
        pct = "" if r["effective_gbps"] is None else f"{100 * r['effective_gbps'] / copy_rate:.0f}%"
        state = "" if r["state_x_params"] is None else f"{r['state_x_params']:.2f}"
        temp = "" if r["transient_peak_x_params"] is None else f"{r['transient_peak_x_params']:.2f}"
        comp = "" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        print(
            f"{r['name']:<{width}} {r['median_ms']:>8.2f} {r['ratio_median']:>6.2f} "
            f"{r['ratio_min']:>5.2f}-{r['ratio_max']:<5.2f} {rate:>6} {pct:>6} {state:>6} {temp:>5} {comp:>9}"
        )
    return {
        "benchmark": "adaptive_step",
        "config": vars(args),
        "n_params": n_params,
        "n_tensors": len(resnet18_shapes()),
        "machine": machine_description(),
        "copy_gbps": copy_rate,
        "baseline": base_name,
        "floor_check_rel_error": floor_error,
        "rows": rows,
    }


if __name__ == "__main__":
    main()
