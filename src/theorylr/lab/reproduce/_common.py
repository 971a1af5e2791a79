"""Helpers shared by the three reproductions: where results go, running rules through the lab, cached analytic
results, reading medians back from the run files, and figures."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theorylr.lab._files import atomic_write_bytes, decode_non_finite, encode_non_finite, read_json, write_json
from theorylr.lab.reproduce.scale import Scale
from theorylr.lab.results import Run, load_runs
from theorylr.lab.rules import Rule
from theorylr.lab.runner import compare
from theorylr.lab.scores import BAD, RuleSummary, summarize
from theorylr.lab.workloads import Workload

__all__ = ["Context", "final_median", "finals", "layout", "learned", "median_curve", "save_figure"]

CHANCE_MARGIN = 0.05  # a comparison of accuracies is inconclusive when no rule beat 1/k + 0.05 (nothing learned)


@functools.cache
def code_fingerprint() -> str:
    """A SHA-256 digest of theorylr's own source files (their paths and contents): the code that computed an
    analytic result, which :meth:`Context.cached` keys the result on besides its inputs.

    Example:
        >>> len(code_fingerprint())
        64
    """
    package = Path(__file__).resolve().parents[2]  # src/theorylr
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def learned(accuracies: Sequence[float], num_classes: int) -> bool:
    """Whether some rule's accuracy beats chance ``1/k`` by more than 0.05 (otherwise comparing them says nothing).

    Example:
        >>> learned([0.10, 0.12], 10), learned([0.10, 0.5], 10)
        (False, True)
    """
    return any(a > 1.0 / num_classes + CHANCE_MARGIN for a in accuracies if math.isfinite(a))


@dataclass
class Context:
    """Where one paper's reproduction writes, at which scale, and how it runs the lab.

    Example:
        >>> from pathlib import Path
        >>> from theorylr.lab.reproduce.scale import QUICK
        >>> ctx = Context(Path("out/lars/quick"), QUICK)
        >>> ctx.rel(ctx.figures_dir / "a.png"), ctx.dataset_problem("mnist")
        ('figures/a.png', 'needs --data-dir')

    Attributes:
        root: the paper's results directory (``OUT/<paper>/<scale>``).
        scale: the :class:`~theorylr.lab.reproduce.scale.Scale`.
        data_dir: the folder with MNIST / CIFAR-10 files (``None``: those claims are not run).
        device: ``cpu``, ``cuda`` or ``auto`` (passed to :func:`theorylr.lab.compare`).
        jobs: worker processes of :func:`theorylr.lab.compare`.
        verbose: print a line per finished run and per experiment.
    """

    root: Path
    scale: Scale
    data_dir: str | None = None
    device: str = "cpu"
    jobs: int = 1
    verbose: bool = True
    _probed: dict[str, str | None] = field(default_factory=dict, repr=False)

    def dataset_problem(self, dataset: str) -> str | None:
        """Why ``dataset`` cannot be used: ``None`` when it can (the embedded sets always can), otherwise
        ``"needs --data-dir"`` or which files are missing. MNIST and CIFAR-10 are read once to check (cached)."""
        readers = {"mnist": "load_mnist", "cifar10": "load_cifar10"}
        if dataset not in readers:
            return None
        if self.data_dir is None:
            return "needs --data-dir"
        if dataset not in self._probed:
            import theorylr.data

            try:
                getattr(theorylr.data, readers[dataset])(self.data_dir)
                self._probed[dataset] = None
            except (OSError, ValueError) as exc:
                # On stderr even when quiet: the claims on this data set will say "not run", and why.
                print(f"theorylr reproduce: note: {dataset} not usable from {self.data_dir}: {exc}", file=sys.stderr)
                self._probed[dataset] = f"no readable {dataset} files in --data-dir"
        return self._probed[dataset]

    def has(self, dataset: str) -> bool:
        """Whether ``dataset`` can be used (see :meth:`dataset_problem`)."""
        return self.dataset_problem(dataset) is None

    @property
    def runs_dir(self) -> Path:
        """Where :func:`theorylr.lab.compare` writes (``root/runs``)."""
        return self.root / "runs"

    @property
    def figures_dir(self) -> Path:
        """``root/figures``."""
        return self.root / "figures"

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to :attr:`root`, with forward slashes."""
        return os.path.relpath(Path(path), self.root).replace(os.sep, "/")

    def log(self, text: str) -> None:
        """Print ``text`` when verbose."""
        if self.verbose:
            print(text, flush=True)

    def run_rules(
        self, workload: Workload, rules: Sequence[Rule], *, epochs: int, trials: int = 1, seeds: int | None = None
    ) -> dict[str, RuleSummary]:
        """Run ``rules`` on ``workload`` through :func:`theorylr.lab.compare` (resumable), then read the results back
        from the run files: ``{rule name: RuleSummary}`` (best trial by the workload's tuning metric)."""
        self.log(f"  {workload.name}: {len(rules)} rule(s), {epochs} epochs")
        compare(
            workload,
            list(rules),
            out=self.runs_dir,
            seeds=self.scale.seeds if seeds is None else seeds,
            epochs=epochs,
            trials=trials,
            jobs=self.jobs,
            data_dir=self.data_dir,
            device=self.device,
            progress=False,
            verbose=self.verbose,
        )
        return summaries_of(self.runs_dir, workload.name)

    def cached(self, name: str, config: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """An analytic experiment's result, recomputed only when ``root/analytic/<name>.json`` is missing or was
        written for another ``config`` or by other code (so rerunning the same command skips finished work, and a
        result computed before an upgrade or an edit of theorylr is not reused: :func:`code_fingerprint` is part of
        the key). ``config`` must not use the key ``"code"``."""
        path = self.root / "analytic" / f"{name}.json"
        if "code" in config:
            raise ValueError(f"analytic result {name!r}: 'code' is reserved in its config (the code fingerprint)")
        wanted = json.loads(json.dumps({**dict(config), "code": code_fingerprint()}, default=list))
        if path.exists():
            try:
                saved = read_json(path)
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("config") == wanted:
                return decode_non_finite(saved["result"])
        self.log(f"  analytic: {name}")
        encoded = encode_non_finite(compute())
        write_json(path, {"config": wanted, "result": encoded})
        return decode_non_finite(json.loads(json.dumps(encoded)))  # the same values a rerun reads back

    def analytic_path(self, name: str) -> str:
        """The relative path of an analytic result file."""
        return f"analytic/{name}.json"


def summaries_of(runs_dir: Path, workload: str) -> dict[str, RuleSummary]:
    """``{rule: RuleSummary}`` for ``workload`` under ``runs_dir``, from the files only."""
    runs = [r for r in load_runs(runs_dir / workload) if r.workload == workload]
    if not runs:
        return {}
    return {s.rule: s for s in summarize(runs).get(workload, [])}


def finals(summary: RuleSummary, column: str) -> list[float]:
    """The last value of ``column`` in each of the best trial's runs (``inf``/``-inf`` for diverged or failed runs,
    worst for the column's direction)."""
    worst = -math.inf if column.endswith("accuracy") else math.inf
    return [worst if run.status in BAD else run.final(column) for run in summary.best_runs]


def final_median(summary: RuleSummary | None, column: str) -> float:
    """The median over seeds of :func:`finals` (NaN when the rule did not run)."""
    if summary is None:
        return math.nan
    values = [v for v in finals(summary, column) if not math.isnan(v)]
    return float(np.median(values)) if values else math.nan


def run_dirs(summary: RuleSummary, root: Path) -> list[str]:
    """The best trial's run directories relative to ``root``."""
    return [os.path.relpath(run.directory, root).replace(os.sep, "/") for run in summary.best_runs]


def first_reach(run: Run, column: str, level: float, *, below: bool = True) -> float:
    """The ``epoch`` of the first evaluation with ``column <= level`` (``>=`` when ``below`` is false); ``inf`` when
    none does."""
    values, epochs = run.column(column), run.column("epoch")
    for value, epoch in zip(values, epochs):
        if math.isfinite(value) and (value <= level if below else value >= level):
            return float(epoch)
    return math.inf


def median(values: Iterable[float]) -> float:
    """The median of the non-NaN values (``inf`` allowed), NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.median(kept)) if kept else math.nan


def layout(fig: Any) -> None:
    """Fixed margins for a grid of panels (cheaper than ``tight_layout``, which dominates the drawing time): room
    for a suptitle and panel titles above, axis labels below, whatever the figure's height."""
    height = float(fig.get_size_inches()[1])
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.6 / height, top=1.0 - 0.8 / height, wspace=0.3, hspace=0.45)


def median_curve(runs: Sequence[Run], column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, median over runs of column)`` on the longest run's epochs (NaN-padded)."""
    if not runs:
        return np.array([]), np.array([])
    columns = [r.column(column) for r in runs]
    length = max(c.size for c in columns)
    stacked = np.full((len(columns), length), np.nan)
    for i, c in enumerate(columns):
        stacked[i, : c.size] = c
    longest = max(runs, key=lambda r: len(r.rows))
    with np.errstate(all="ignore"):
        valid = ~np.all(np.isnan(stacked), axis=0)
        med = np.full(length, np.nan)
        med[valid] = np.nanmedian(stacked[:, valid], axis=0)
    return longest.column("epoch"), med


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` (from :func:`theorylr.lab.plots.subplots`) as PNG atomically and return ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    atomic_write_bytes(path, buffer.getvalue())
    return path
