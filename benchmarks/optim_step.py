"""Optimizer-step speed on a ResNet-18-shaped parameter set, as ratios to torch's SGD measured in the same run.

Run with ``python -m benchmarks.optim_step`` (``--help`` for the options). Every row times ``opt.step()`` alone on
the same 62 tensors (11,689,512 parameters, the shapes of torchvision's ResNet-18 written out by hand) with fixed
random gradients. The rows take turns under two schedules (``--schedule``, :func:`benchmarks._timing.time_rounds`),
one table each: **interleaved** step by step (each pass steps every row once, in a new random order), so that a slow
spell on a shared machine hits all of them and every step finds its tensors out of the caches; and **blocked**, each
row's steps back to back, so that what fits in the caches stays there, as in a process that runs nothing but this
optimizer. A training step lies between the two: its forward and backward passes touch other memory between two
optimizer steps. On a machine whose last-level cache holds one row's tensors (about 140 MB in float32) but not all
rows', the two differ; elsewhere they agree. Each table gives the median over rounds of each round's median, and the
ratio to the baseline round by round (median and range).

"effective GB/s" counts the bytes a momentum step must move at least once (read w, g, buf; write w, buf: 5 x N x
element size) over the step's time, next to the machine's ``copy_`` bandwidth (read + write, 2 x N x element size)
measured on tensors of the same shapes: a step at 100% of it would move its data as fast as a plain copy does. The
copy is a row of each schedule (not shown in the table), so that it runs in the schedule's cache regime.

The gradients are fixed, so a row's weights drift with every step (LARS's step is ``lr ||w||`` along the same
direction: ``||w||`` grows about 1.3x per step at ``lr=0.1``); after about 150 steps of one row they overflow. The
default rounds make about 110 steps per row; a row whose weights are no longer finite at the end is named in a
warning, and its figures time inf/nan data.

Peers where installed: pytorch_optimizer's ``LARS`` (``trust_coefficient=1``) and timm's ``Lars``
(``trust_coeff=1, always_adapt=True``). With ``--compile``, LARS under ``torch.compile`` (inductor), and on CUDA
also with ``mode="reduce-overhead"`` (CUDA graphs) and with CUDA graphs plus inductor's combo kernels
(:data:`COMPILE_SETTINGS`). A row other than the baseline that fails to build or compile is reported and skipped.

The "lars_param_groups" row is LARS as the README recommends it: the 1-D tensors (biases, BatchNorm gains and
shifts: 41 of the 62) in a plain-SGD group (``adapt=False``), so their norms are never taken. The other LARS rows
adapt every tensor, the harder case the targets are judged on.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from benchmarks._timing import SCHEDULES, machine_description, median_ms, sync, time_rounds

__all__ = ["main", "mark_static", "resnet18_shapes"]


def resnet18_shapes(num_classes: int = 1000) -> list[tuple[int, ...]]:
    """The parameter shapes of a ResNet-18 (torchvision layout, BatchNorm gains and shifts included)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            first = block == 0
            cin = in_ch if first else width
            shapes += [(width, cin, 3, 3), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            if first and stage > 0:  # 1x1 downsampling shortcut
                shapes += [(width, in_ch, 1, 1), (width,), (width,)]
        in_ch = width
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def _params(shapes: Sequence[tuple[int, ...]], device: torch.device, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape in shapes:
        p = torch.nn.Parameter((0.05 * torch.randn(shape, generator=gen, dtype=dtype)).to(device))
        p.grad = (1e-3 * torch.randn(shape, generator=gen, dtype=dtype)).to(device)
        out.append(p)
    return out


class _SGDPlusNorms:
    """torch's SGD step preceded by the norms LARS takes (``local_norms(w + g, "l2", foreach=True)``, the same
    kernels): what a LARS written as SGD's sweeps plus the trust ratio's two reads would cost. theorylr's LARS
    makes one sweep fewer than SGD (its factored momentum buffer), so it can run below this row."""

    def __init__(self, params: list[torch.nn.Parameter], **kwargs: Any) -> None:
        self.sgd = torch.optim.SGD(params, foreach=True, **kwargs)
        self.param_groups = self.sgd.param_groups
        self.tensors = [*params, *(p.grad for p in params if p.grad is not None)]

    def step(self) -> None:
        from theorylr.optim.lars import local_norms

        with torch.no_grad():  # as in LARS's step: the norms of parameters must not record autograd nodes
            local_norms(self.tensors, "l2", foreach=True)
        self.sgd.step()


def mark_static(opt: Any) -> None:
    """Mark an optimizer's parameters, gradients and state tensors as static addresses, so that a step compiled
    with ``mode="reduce-overhead"`` may update them in place inside its CUDA graph."""
    for group in opt.param_groups:
        for p in group["params"]:
            for t in (p, p.grad, *opt.state[p].values()):
                if isinstance(t, torch.Tensor):
                    torch._dynamo.mark_static_address(t)


# The torch.compile settings of the CUDA-graph rows (CUDA only). "reduce-overhead" replays the step as a CUDA
# graph; "cudagraphs+combo" does the same with inductor's combo kernels, which fuse the step's independent kernels
# (one reduction or update per tensor) horizontally, so that the graph launches far fewer of them. In both the
# parameters, gradients and state are marked as static addresses first: they are updated in place, which CUDA
# graphs allow only for static inputs (torch's own optimizers do the same under compile).
COMPILE_SETTINGS: dict[str, dict[str, Any]] = {
    "reduce-overhead": {"mode": "reduce-overhead"},
    "cudagraphs+combo": {"options": {"triton.cudagraphs": True, "combo_kernels": True}},
}


def compile_step(opt: Any, setting: str | None = None, *, fullgraph: bool = True) -> Callable[[], Any]:
    """``torch.compile(opt.step)`` with inductor's defaults (``setting=None``) or one of :data:`COMPILE_SETTINGS`."""
    kwargs = {} if setting is None else COMPILE_SETTINGS[setting]
    if setting is not None:
        mark_static(opt)
    return cast(Callable[[], Any], torch.compile(opt.step, fullgraph=fullgraph, **kwargs))


class _Compiled:
    """An optimizer whose ``step`` is ``torch.compile(opt.step, fullgraph=True)`` (inductor, or a setting of
    :data:`COMPILE_SETTINGS`), compiled after one eager step so that the state exists and one graph serves every
    timed step; the first compiled step runs here, so that a compile error surfaces while the rows are built."""

    def __init__(self, opt: Any, setting: str | None = None) -> None:
        opt.step()
        self.opt = opt
        self.param_groups = opt.param_groups
        self.step = compile_step(opt, setting)
        self.step()


def _factories(
    momentum: float, weight_decay: float, compile: bool = False, cuda: bool = False
) -> dict[str, Callable[[list[torch.nn.Parameter]], Any]]:
    from theorylr.optim.lars import LARS
    from theorylr.optim.param_groups import lars_param_groups

    rows: dict[str, Callable[[list[torch.nn.Parameter]], Any]] = {
        "torch SGD foreach (baseline)": lambda ps: torch.optim.SGD(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=True
        ),
        "SGD foreach + LARS's norms": lambda ps: _SGDPlusNorms(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay
        ),
        "theorylr LARS foreach": lambda ps: LARS(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=True
        ),
        "theorylr LARS foreach, lars_param_groups": lambda ps: LARS(
            lars_param_groups([(f"p{i}", p) for i, p in enumerate(ps)]),
            lr=0.1,
            momentum=momentum,
            weight_decay=weight_decay,
            foreach=True,
        ),
        "theorylr LARS loop": lambda ps: LARS(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=False),
        "theorylr PercentDelta (l1) foreach": lambda ps: LARS(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, norm="l1", foreach=True
        ),
        "torch SGD loop": lambda ps: torch.optim.SGD(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=False
        ),
    }
    if compile:
        rows["theorylr LARS compiled (inductor)"] = lambda ps: _Compiled(
            LARS(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=True)
        )
    if compile and cuda:
        rows["theorylr LARS compiled, CUDA graphs"] = lambda ps: _Compiled(
            LARS(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=True), "reduce-overhead"
        )
        rows["theorylr LARS compiled, CUDA graphs + combo kernels"] = lambda ps: _Compiled(
            LARS(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, foreach=True), "cudagraphs+combo"
        )
    try:
        from pytorch_optimizer import LARS as PEER_LARS
    except ImportError:  # an optional peer (the "bench" extra)
        pass
    else:
        rows["pytorch_optimizer LARS (peer)"] = lambda ps: PEER_LARS(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, trust_coefficient=1.0, foreach=True
        )
    try:  # timm needs torchvision, which has no CPU build here: the row appears where timm is installed
        from timm.optim import Lars as TimmLars
    except ImportError:
        pass
    else:
        # always_adapt: timm adapts only when weight decay is set otherwise; trust_coeff 1.0 as ours.
        rows["timm Lars (peer)"] = lambda ps: TimmLars(
            ps, lr=0.1, momentum=momentum, weight_decay=weight_decay, trust_coeff=1.0, always_adapt=True
        )
    return rows


def _copy_gbps(params: Sequence[torch.Tensor], repeats: int, warmup: int, device: torch.device) -> float:
    src = [p.detach() for p in params]
    dst = [torch.empty_like(t) for t in src]
    ms = median_ms(lambda: torch._foreach_copy_(dst, src), repeats=repeats, warmup=warmup, device=device)
    nbytes = 2 * sum(t.numel() * t.element_size() for t in src)
    return nbytes / (ms * 1e-3) / 1e9


COPY_ROW = "copy_ (reference)"


def copy_row(params: Sequence[torch.Tensor]) -> tuple[Callable[[], Any], int]:
    """A ``torch._foreach_copy_`` of tensors shaped like ``params`` (its own working set) and the bytes it moves:
    timed as a row of the schedule, it is the copy rate of the schedule's own cache regime (interleaved: after other
    rows' steps, with their dirty lines to write back; blocked: back to back)."""
    src = [torch.randn_like(p.detach()) for p in params]
    dst = [torch.empty_like(t) for t in src]
    nbytes = 2 * sum(t.numel() * t.element_size() for t in src)
    return (lambda: torch._foreach_copy_(dst, src)), nbytes


_SCHEDULE_NOTES = {
    "interleaved": "each pass steps every row once, in a random order: every step finds its tensors out of cache",
    "blocked": "each row's steps back to back: what fits in the caches stays there",
}


def _table(per_round: dict[str, list[float]], n_params: int, dtype: torch.dtype) -> list[dict[str, Any]]:
    """One row per optimizer: median ms over rounds and the ratios to the first row (the baseline) round by round."""
    base = next(iter(per_round.values()))
    step_bytes = 5 * n_params * torch.empty((), dtype=dtype).element_size()
    rows = []
    for name, round_ms in per_round.items():
        ratios = [t / b for t, b in zip(round_ms, base)]
        ms = statistics.median(round_ms)
        rows.append(
            {
                "name": name,
                "median_ms": ms,
                "min_ms": min(round_ms),
                "times_ms": round_ms,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "effective_gbps": step_bytes / (ms * 1e-3) / 1e9,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time every row, print the table, and return the figures as a dict (JSON-ready)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.optim_step", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per schedule (default 5)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per row and round (default 10)")
    parser.add_argument(
        "--schedule",
        default="both",
        choices=[*SCHEDULES, "both"],
        help="how the rows take turns (benchmarks._timing.time_rounds): interleaved (cold caches), blocked (warm), "
        "or both, one after the other (default)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="add a torch.compile'd LARS row"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shapes = resnet18_shapes()
    n_params = sum(torch.Size(s).numel() for s in shapes)
    factories = _factories(args.momentum, args.weight_decay, args.compile, device.type == "cuda")
    setups = {}
    for name, make in factories.items():
        params = _params(shapes, device, dtype)
        try:
            opt = make(params)
            opt.step()  # state (momentum buffers) exists before timing
        except Exception as exc:  # a compile error in one row leaves the others measured
            if name.startswith("torch SGD foreach"):
                raise
            print(f"  ({name}: failed and skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            continue
        setups[name] = opt
    sync(device)
    for opt in setups.values():  # warm-up
        for _ in range(args.warmup):
            opt.step()
    copy_rates: list[float] = []
    first_params = next(iter(setups.values())).param_groups[0]["params"]

    def measure_copy() -> None:
        copy_rates.append(_copy_gbps(first_params, 10, 2, device))

    steps = {name: opt.step for name, opt in setups.items()}
    copy_fn, copy_bytes = copy_row(first_params)
    steps[COPY_ROW] = copy_fn
    schedules = list(SCHEDULES) if args.schedule == "both" else [args.schedule]
    tables, references = {}, {}
    for schedule in schedules:
        per_round = time_rounds(
            steps, rounds=args.rounds, repeats=args.repeats, schedule=schedule, device=device, after_round=measure_copy
        )
        references[schedule] = copy_bytes / (statistics.median(per_round.pop(COPY_ROW)) * 1e-3) / 1e9
        tables[schedule] = _table(per_round, n_params, dtype)
    copy_rate = statistics.median(copy_rates)
    nonfinite = [
        name
        for name, opt in setups.items()
        if not all(bool(torch.isfinite(p).all()) for g in opt.param_groups for p in g["params"])
    ]
    for name in nonfinite:
        print(
            f"  WARNING: {name}: its weights are no longer finite (fixed gradients, too many steps): its figures "
            "time inf/nan data; use fewer --rounds or --repeats"
        )
    base_name = next(iter(setups))
    print(f"optimizer step on {len(shapes)} ResNet-18 tensors ({n_params:,} params, {args.dtype}, {device}),")
    print(f"momentum {args.momentum}, weight decay {args.weight_decay}; {args.rounds} rounds x {args.repeats} steps;")
    print(
        f"machine: {machine_description()}; copy_ bandwidth (read + write) {copy_rate:.1f} GB/s back to back; as a "
        "row of each schedule: "
        + ", ".join(f"{schedule} {rate:.1f} GB/s" for schedule, rate in references.items())
        + " ('% copy' sets each schedule's rows against its own copy row)"
    )
    for schedule, rows in tables.items():
        print(f"schedule: {schedule} ({_SCHEDULE_NOTES[schedule]})")
        width = max(41, *(len(r["name"]) for r in rows))
        print(f"{'row':<{width}} {'ms/step':>8} {'x SGD':>6} {'range':>12} {'eff. GB/s':>9} {'% copy':>6}")
        for r in rows:
            print(
                f"{r['name']:<{width}} {r['median_ms']:>8.2f} {r['ratio_median']:>6.2f} "
                f"{r['ratio_min']:>5.2f}-{r['ratio_max']:<5.2f} {r['effective_gbps']:>9.1f} "
                f"{100 * r['effective_gbps'] / references[schedule]:>5.0f}%"
            )
    return {
        "benchmark": "optim_step",
        "config": vars(args),
        "n_params": n_params,
        "n_tensors": len(shapes),
        "machine": machine_description(),
        "copy_gbps": copy_rate,
        "copy_gbps_by_schedule": references,
        "nonfinite_rows": nonfinite,
        "baseline": base_name,
        # "rows" holds the first schedule measured (interleaved unless --schedule blocked), as before --schedule
        # existed; "schedules" holds every schedule's rows.
        "rows": next(iter(tables.values())),
        "schedules": tables,
    }


if __name__ == "__main__":
    main()
