"""Reproduce the three papers' claims with the lab: one claims table per paper, a verdict per claim, one page.

``theorylr reproduce {lars,exact-adam,lipschitz,all} [--quick] [--data-dir DIR] --out DIR`` calls
:func:`reproduce`. Each paper's experiments are data in its module (:mod:`~theorylr.lab.reproduce.lars`,
:mod:`~theorylr.lab.reproduce.exact_adam`, :mod:`~theorylr.lab.reproduce.lipschitz`): training runs go through
:func:`theorylr.lab.compare` (one directory per run, resumable), analytic experiments are cached as JSON, and the
claims (:class:`~theorylr.lab.reproduce.claims.Claim`) are read back from those files with a verdict computed by a
stated criterion. :func:`~theorylr.lab.reproduce.page.write_page` draws ``REPRODUCTION.md``/``.html``.

Layout of ``OUT`` (``SCALE`` is ``quick``, ``full`` or a custom scale's name)::

    OUT/REPRODUCTION.md, OUT/REPRODUCTION.html         the verdict page of the last invocation's scale
    OUT/<paper>/<SCALE>/claims.json                    claims, figures, tables and notes of one paper
    OUT/<paper>/<SCALE>/runs/<workload>/<rule>/...     the lab's run directories
    OUT/<paper>/<SCALE>/analytic/<experiment>.json     analytic results ({"config", "result"})
    OUT/<paper>/<SCALE>/figures/*.png                  the figures, drawn from those files

Example:
    >>> sorted(TARGETS)
    ['exact-adam', 'lars', 'lipschitz']
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from theorylr._validation import check_choice, check_int
from theorylr.lab.environment import environment, now
from theorylr.lab.reproduce._common import Context
from theorylr.lab.reproduce.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_RUN_DATA,
    NOT_RUN_FULL,
    PARTLY,
    Claim,
    PaperResult,
    read_result,
    write_result,
)
from theorylr.lab.reproduce.exact_adam import run_exact_adam
from theorylr.lab.reproduce.lars import run_lars
from theorylr.lab.reproduce.lipschitz import run_lipschitz
from theorylr.lab.reproduce.page import PAPERS, write_page
from theorylr.lab.reproduce.scale import FULL, QUICK, Scale, get_scale

__all__ = [
    "DOES_NOT_HOLD",
    "FULL",
    "HOLDS",
    "NOT_RUN_DATA",
    "NOT_RUN_FULL",
    "PARTLY",
    "QUICK",
    "TARGETS",
    "Claim",
    "PaperResult",
    "ReproduceResult",
    "Scale",
    "get_scale",
    "read_result",
    "reproduce",
    "write_page",
]

#: ``target -> run function``; ``all`` runs them in this order.
TARGETS: dict[str, Callable[[Context], PaperResult]] = {
    "lars": run_lars,
    "exact-adam": run_exact_adam,
    "lipschitz": run_lipschitz,
}


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: the per-paper results, the page, and the wall time."""

    results: list[PaperResult]
    markdown: Path
    html: Path
    wall_time: float
    claims_files: list[Path] = field(default_factory=list)


def reproduce(
    targets: str | Sequence[str],
    out: str | os.PathLike[str],
    *,
    scale: str | Scale = "quick",
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    jobs: int = 1,
    verbose: bool = True,
    page_out: str | os.PathLike[str] | None = None,
    figures_subdir: str | None = None,
    command: str | None = None,
) -> ReproduceResult:
    """Run the chosen papers' experiments, write each paper's ``claims.json`` and the verdict page.

    Args:
        targets: ``"lars"``, ``"exact-adam"``, ``"lipschitz"``, ``"all"`` or a list of them.
        out: the results directory (created; existing results of the same scale are resumed).
        scale: ``"quick"`` (CI-sized), ``"full"`` (paper-sized) or a :class:`Scale`.
        data_dir: the folder with the MNIST IDX files and/or CIFAR-10's ``cifar-10-batches-bin``; without it the
            claims that need those sets are ``not run (needs --data-dir)``.
        device: ``cpu``, ``cuda`` or ``auto`` for the lab's runs.
        jobs: worker processes for the lab's runs.
        verbose: print progress.
        page_out: where to write the page (default ``out``); ``figures_subdir`` copies the figures there.
        figures_subdir: see :func:`~theorylr.lab.reproduce.page.write_page`.
        command: the command line, shown on the page.

    Returns:
        a :class:`ReproduceResult`.

    Raises:
        ValueError: for an unknown target or ``jobs < 1``.

    Example::

        from theorylr.lab.reproduce import reproduce
        result = reproduce("all", "runs/reproduce", scale="quick")   # a few minutes on two cores
        print(result.markdown)                                       # runs/reproduce/REPRODUCTION.md
    """
    names = list(TARGETS) if targets == "all" else [targets] if isinstance(targets, str) else list(targets)
    for name in names:
        check_choice("target", name, (*TARGETS, "all"))
    if "all" in names:
        names = list(TARGETS)
    check_int("jobs", jobs, min_value=1)
    chosen = get_scale(scale) if isinstance(scale, str) else scale
    root = Path(out)
    begin = time.perf_counter()
    results, files = [], []
    for name in names:
        ctx = Context(
            root=root / name / chosen.name,
            scale=chosen,
            data_dir=None if data_dir is None else str(data_dir),
            device=device,
            jobs=jobs,
            verbose=verbose,
        )
        ctx.root.mkdir(parents=True, exist_ok=True)
        if verbose:
            print(f"reproduce {name} ({chosen.name}) -> {ctx.root}", flush=True)
        tick = time.perf_counter()
        result = TARGETS[name](ctx)
        result.wall_time = time.perf_counter() - tick
        env = environment(device)
        result.provenance = {
            "command": command,
            "written": now(),
            "data_dir": None if data_dir is None else str(data_dir),
            **{k: env.get(k) for k in ("git_commit", "git_dirty", "theorylr", "torch", "device", "gpu")},
        }
        files.append(write_result(ctx.root, result))
        results.append(result)
    ordered = [p for p in PAPERS if p in TARGETS]
    markdown, html = write_page(
        root, chosen.name, out_dir=page_out, figures_subdir=figures_subdir, papers=ordered, command=command
    )
    return ReproduceResult(results, markdown, html, time.perf_counter() - begin, files)
