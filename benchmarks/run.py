"""The benchmark suite: every benchmark module in one process, a table per section, the targets, results as JSON.

``make bench`` runs ``python -m benchmarks.run``. Each section is a module of this package whose ``main()`` prints
its own table and returns its figures; every timed figure is a ratio against a baseline measured in the same run
(torch's SGD or Adam, one gradient, the plain training epoch). After the sections the issue-8 targets are checked
against those figures and printed as one table; everything (sections, targets, machine, load average, git
commit, command) is written as JSON to ``--out`` (default ``benchmarks/results/latest.json``).

Options: ``--only optim_step,curvature`` runs a subset, ``--quick`` fewer rounds and repeats (a smoke run: the
figures are noisier), ``--no-compile`` skips the ``torch.compile`` rows (inductor compiles C++ on the CPU: a few
minutes for the five compiled optimizer rows on a cold cache), ``--dtype bfloat16`` runs the optimizer-step sections
on bf16 parameters. On a machine with CUDA the optimizer-step sections run on the GPU. A section that raises is
recorded with its traceback and the suite goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks._timing import machine_description

__all__ = ["SECTIONS", "main", "targets"]

DEFAULT_OUT = Path("benchmarks/results/latest.json")


@dataclass(frozen=True)
class Section:
    """One benchmark module and how the suite calls it: ``call(module, options) -> figures``, with ``options`` the
    suite's parsed arguments (``quick``, ``compile``, ``dtype``)."""

    module: str
    title: str
    call: Callable[[ModuleType, argparse.Namespace], Any]


def _argv(quick_args: list[str], step_section: bool = False) -> Callable[[ModuleType, argparse.Namespace], Any]:
    """Call ``module.main(argv)``; optimizer-step sections also get ``--no-compile`` and ``--dtype``."""

    def call(module: ModuleType, options: argparse.Namespace) -> Any:
        argv = list(quick_args) if options.quick else []
        if step_section:
            argv += ["--dtype", options.dtype]
            if not options.compile:
                argv.append("--no-compile")
        return module.main(argv)

    return call


SECTIONS: dict[str, Section] = {
    "optim_step": Section(
        "benchmarks.optim_step",
        "LARS / PercentDelta step vs torch SGD (ResNet-18 shapes)",
        _argv(["--rounds", "2", "--repeats", "5"], step_section=True),
    ),
    "adaptive_step": Section(
        "benchmarks.adaptive_step",
        "AdaMo / AutoAdam / AdaptiveRMSprop step vs torch Adam, peers (ResNet-18 shapes)",
        _argv(["--rounds", "2", "--repeats", "5"], step_section=True),
    ),
    "curvature": Section(
        "benchmarks.curvature",
        "HVP cost in gradients, Lanczos vs power iteration, PyHessian",
        _argv(["--repeats", "5", "--seeds", "2"]),
    ),
    "lipschitz_hooks": Section(
        "benchmarks.lipschitz_hooks",
        "LipschitzLR hooks: epoch-time overhead",
        lambda module, options: module.main(repeats=10 if options.quick else 30),
    ),
    "lipschitz_paper_targets": Section(
        "benchmarks.lipschitz_paper_targets",
        "LipschitzLR closed forms vs the paper's 1/L (not timed)",
        lambda module, options: module.main(),
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# Targets (issue 8), read from the sections' figures
# ----------------------------------------------------------------------------------------------------------------
def _row(result: Any, name: str) -> dict[str, Any] | None:
    if not isinstance(result, dict):
        return None
    for row in result.get("rows", []):
        if row.get("name") == name:
            return dict(row)
    return None


def _target(
    what: str,
    limit: float,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    unit: str = "x",
    informational: bool = False,
) -> dict[str, Any]:
    return {
        "target": what,
        "limit": limit,
        "unit": unit,
        "measured": value,
        "range": None if low is None or high is None else [low, high],
        "met": None if value is None else value <= limit,
        "informational": informational,
    }


def _ratio_rows(result: Any, name: str, reference: str) -> tuple[float | None, float | None, float | None]:
    """Median, min, max over rounds of ``name``'s time over ``reference``'s (per-round times when recorded)."""
    row, ref = _row(result, name), _row(result, reference)
    if row is None or ref is None:
        return None, None, None
    if "times_ms" in row and "times_ms" in ref:
        ratios = [a / b for a, b in zip(row["times_ms"], ref["times_ms"])]
        return statistics.median(ratios), min(ratios), max(ratios)
    return row["median_ms"] / ref["median_ms"], None, None


def _lars_targets(optim: dict[str, Any], suffix: str) -> list[dict[str, Any]]:
    """The LARS targets from one schedule's rows of ``benchmarks.optim_step``; ``suffix`` names the schedule."""
    out = []
    lars = _row(optim, "theorylr LARS foreach")
    out.append(
        _target(
            f"foreach LARS <= 1.3x torch SGD foreach{suffix}",
            1.3,
            None if lars is None else lars["ratio_median"],
            None if lars is None else lars["ratio_min"],
            None if lars is None else lars["ratio_max"],
        )
    )
    compiled = _row(optim, "theorylr LARS compiled (inductor)")
    out.append(
        _target(
            f"compiled LARS <= 1.0x torch SGD foreach{suffix}",
            1.0,
            None if compiled is None else compiled["ratio_median"],
            None if compiled is None else compiled["ratio_min"],
            None if compiled is None else compiled["ratio_max"],
        )
    )
    graphed = _row(optim, "theorylr LARS compiled, CUDA graphs + combo kernels")
    if graphed is not None:  # CUDA only: the recipe for a compiled step on a GPU (benchmarks.optim_step)
        out.append(
            _target(
                f"compiled LARS, CUDA graphs + combo kernels <= 1.0x torch SGD foreach{suffix}",
                1.0,
                graphed["ratio_median"],
                graphed["ratio_min"],
                graphed["ratio_max"],
            )
        )
    peer = _row(optim, "pytorch_optimizer LARS (peer)")
    speedup = None if peer is None or lars is None else lars["median_ms"] / peer["median_ms"]
    out.append(_target(f"foreach LARS time / pytorch_optimizer LARS time <= 0.5 (2x faster){suffix}", 0.5, speedup))
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value, its range over rounds where known, and whether it is met
    (``None`` where the section did not run)."""
    out = []
    optim = results.get("optim_step")
    schedules = optim.get("schedules") if isinstance(optim, dict) else None
    if not isinstance(schedules, dict) or not schedules:  # a result written before --schedule existed
        schedules = {"interleaved": optim.get("rows", []) if isinstance(optim, dict) else []}
    for schedule, rows in schedules.items():
        out += _lars_targets({"rows": rows}, "" if schedule == "interleaved" else f" [{schedule}]")
    adaptive = results.get("adaptive_step")
    for name in ("AdaMo", "AutoAdam", "AdaptiveRMSprop"):
        row = _row(adaptive, f"theorylr {name} foreach")
        out.append(
            _target(
                f"{name} foreach <= 1.0x torch Adam foreach",
                1.0,
                None if row is None else row["ratio_median"],
                None if row is None else row["ratio_min"],
                None if row is None else row["ratio_max"],
            )
        )
    compiled_names = {
        "AdaMo": "theorylr AdaMo compiled (inductor)",
        "AutoAdam": "theorylr AutoAdam compiled (inductor)",
        "AdaptiveRMSprop": "theorylr AdaptiveRMSprop compiled",
    }
    for name, row_name in compiled_names.items():
        value, low, high = _ratio_rows(adaptive, row_name, "torch Adam fused")
        out.append(_target(f"{name} compiled <= 1.5x torch Adam fused", 1.5, value, low, high))
        graphed_name = f"theorylr {name} compiled, CUDA graphs + combo kernels"
        if _row(adaptive, graphed_name) is not None:  # CUDA only
            value, low, high = _ratio_rows(adaptive, graphed_name, "torch Adam fused")
            label = f"{name} compiled, CUDA graphs + combo kernels <= 1.5x torch Adam fused"
            out.append(_target(label, 1.5, value, low, high))

    curvature = results.get("curvature")
    cost = curvature.get("cost", {}) if isinstance(curvature, dict) else {}
    # The estimators' defaults: one batch reuses the first backward's graph; several batches keep their graphs
    # when they fit the memory budget (they do here). Rebuilding per matvec and forward-over-reverse are opt-in:
    # shown for information. The unit is one full-batch gradient; the several-batch default is also given against
    # a gradient over the same batches (what a user of mini-batches pays for a gradient).
    for backend, label in (
        ("double_backward_reused", "one batch, the default"),
        ("batches_default", "8 batches, the default (graphs kept)"),
        ("batches_rebuilt", "8 batches, cache_graph=False"),
        ("forward_over_reverse", "opt-in backend"),
    ):
        value = cost.get(f"hvp_{backend}_x_gradient")
        out.append(
            _target(
                f"HVP <= 2 gradients: {backend} ({label})",
                2.0,
                value,
                unit="gradients",
                informational=backend in ("forward_over_reverse", "batches_rebuilt"),
            )
        )
    batches_ms, grad_batches_ms = cost.get("hvp_batches_default_ms"), cost.get("gradient_batches_ms")
    out.append(
        _target(
            "HVP <= 2 gradients: batches_default over a gradient of the same 8 batches",
            2.0,
            None if not batches_ms or not grad_batches_ms else batches_ms / grad_batches_ms,
            unit="gradients",
        )
    )

    hooks = results.get("lipschitz_hooks")
    for config in hooks.get("configs", []) if isinstance(hooks, dict) else []:
        label = f"({config.get('workload')}, batch {config.get('batch_size')})"
        measured = config.get("measured_overhead")
        out.append(_target(f"LipschitzLR hooks <= 2% per epoch {label}", 0.02, measured, unit="fraction"))
        out.append(
            _target(
                f"LipschitzLR hooks: floor, one norm per batch and nothing else {label}",
                0.02,
                config.get("floor_overhead"),
                unit="fraction",
                informational=True,
            )
        )
        out.append(
            _target(
                f"LipschitzLR hooks <= 2%: component estimate {label}",
                0.02,
                config.get("estimated_overhead"),
                unit="fraction",
                informational=True,
            )
        )
    return out


def _print_targets(rows: list[dict[str, Any]]) -> None:
    print("\n== targets (issue 8) ==")
    print(f"{'target':<78} {'measured':>9} {'range':>13} {'status':>6}")
    for t in rows:
        value = "n/a" if t["measured"] is None else f"{t['measured']:.3f}"
        span = "" if t["range"] is None else f"{t['range'][0]:.2f}-{t['range'][1]:.2f}"
        status = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        if t.get("informational") and t["met"] is not None:
            status = "info"
        print(f"{t['target']:<78} {value:>9} {span:>13} {status:>6}")


# ----------------------------------------------------------------------------------------------------------------
# Runner
# ----------------------------------------------------------------------------------------------------------------
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the sections, print their tables and the targets, write the JSON, and return it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--only", default="", help=f"comma-separated sections (default all: {', '.join(SECTIONS)})")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats (noisier)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="torch.compile rows")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float64"], help="optimizer-step parameters"
    )
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": {**machine_description(), "cpu_count": os.cpu_count()},
        "loadavg_start": _loadavg(),
        "options": {"quick": args.quick, "compile": args.compile, "dtype": args.dtype, "sections": names},
        "sections": {},
    }
    results: dict[str, Any] = {}
    failed = []
    for name in names:
        section = SECTIONS[name]
        print(f"\n== {name}: {section.title} ==", flush=True)
        start = time.perf_counter()
        entry: dict[str, Any] = {"module": section.module, "loadavg_before": _loadavg()}
        try:
            result = section.call(importlib.import_module(section.module), args)
            entry["result"] = result
            results[name] = result
        except Exception:
            entry["error"] = traceback.format_exc()
            failed.append(name)
            print(entry["error"], file=sys.stderr)
        entry["seconds"] = time.perf_counter() - start
        report["sections"][name] = entry

    report["targets"] = targets(results)
    report["loadavg_end"] = _loadavg()
    _print_targets(report["targets"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}" + (f"; failed sections: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
