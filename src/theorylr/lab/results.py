"""Reading a results directory back: every run's config, meta and metrics, from the files only.

Nothing here imports the rules or the workloads registry: a report can be drawn from a directory copied from
another machine, or written by an older version, as long as the files are there.

Example:
    >>> import tempfile
    >>> from theorylr.lab.runner import compare
    >>> out = tempfile.mkdtemp()
    >>> _ = compare("iris-softmax", "sgd", out=out, epochs=2, trials=1, verbose=False)
    >>> runs = load_runs(out)
    >>> [(r.workload, r.rule, r.status, len(r.column("train_loss"))) for r in runs]
    [('iris-softmax', 'sgd', 'finished', 3)]
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theorylr.lab._files import read_csv, read_json

__all__ = ["Run", "check_consistent", "group_runs", "load_runs"]


@dataclass
class Run:
    """One run directory.

    Attributes:
        directory: where it is.
        config: ``config.json``.
        meta: ``meta.json`` (empty when missing).
        rows: ``metrics.csv`` rows (numbers as floats, missing as ``None``).
    """

    directory: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def workload(self) -> str:
        """The workload's name."""
        return str(self.config["workload"]["name"])

    @property
    def rule(self) -> str:
        """The rule's name."""
        return str(self.config["rule"]["name"])

    @property
    def kind(self) -> str:
        """The rule's kind."""
        return str(self.config["rule"]["kind"])

    @property
    def tuned(self) -> bool:
        """Whether the rule was tuned over a grid."""
        return self.config["rule"].get("search") is not None

    @property
    def trial(self) -> int:
        """The trial index."""
        return int(self.config["trial"])

    @property
    def seed(self) -> int:
        """The seed."""
        return int(self.config["seed"])

    @property
    def lr(self) -> float:
        """The trial's lr (or the rule's fixed lr / multiplier)."""
        return float(self.config["lr"])

    @property
    def status(self) -> str:
        """``finished``, ``diverged``, ``failed``, ``running``, ``interrupted`` or ``missing``."""
        return str(self.meta.get("status", "missing"))

    @property
    def wall_time(self) -> float:
        """Seconds of set-up and training (evaluations excluded)."""
        value = self.meta.get("wall_time")
        if value is None and self.rows:
            value = self.rows[-1].get("wall_time")
        return float(value) if value is not None else math.nan

    def columns(self) -> list[str]:
        """The metric columns, in file order."""
        out: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in out:
                    out.append(key)
        return out

    def column(self, name: str) -> np.ndarray:
        """A metric column as float64 (NaN where missing)."""
        values = [row.get(name) for row in self.rows]
        return np.array([math.nan if not isinstance(v, float) else v for v in values], dtype=np.float64)

    def final(self, name: str) -> float:
        """The last row's value of ``name`` (NaN when there is none; a diverged run's metric is its last finite
        evaluation)."""
        column = self.column(name)
        return float(column[-1]) if column.size else math.nan


def load_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every run under ``root`` (any depth), sorted by workload, rule, trial and seed.

    A directory counts as a run when it holds a readable ``config.json`` naming the workload, the rule, the trial,
    the lr and the seed; a missing or unreadable ``metrics.csv`` or ``meta.json`` gives an empty one (the run shows
    as missing or failed in the report), and a ``metrics.csv`` whose last row was cut short loses that row. A
    malformed file never raises.
    """
    runs = []
    for config_path in sorted(Path(root).rglob("config.json")):
        directory = config_path.parent
        config: Any = None
        with contextlib.suppress(OSError, ValueError):
            config = read_json(config_path)
        if not _usable_config(config):
            continue
        meta: Any = {}
        rows: list[dict[str, Any]] = []
        with contextlib.suppress(OSError, ValueError):
            meta = read_json(directory / "meta.json")
        with contextlib.suppress(OSError, ValueError):
            rows = read_csv(directory / "metrics.csv")
        runs.append(Run(directory, config, meta if isinstance(meta, dict) else {}, rows))
    runs.sort(key=lambda r: (r.workload, r.rule, r.trial, r.seed))
    return runs


def _usable_config(config: Any) -> bool:
    """Whether ``config`` (a parsed ``config.json``) has what :class:`Run`'s properties read."""
    if not isinstance(config, dict) or not isinstance(config.get("rule"), dict):
        return False
    run = Run(Path(), config)
    try:
        run.workload, run.rule, run.kind, run.trial, run.seed, run.lr  # noqa: B018 - each raises when malformed
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _cell_settings(run: Run) -> dict[str, Any]:
    """What a run's ``config.json`` fixes for its cell, less the seed and the descriptions (prose only)."""
    settings = {key: value for key, value in run.config.items() if key != "seed"}
    for part in ("workload", "rule"):
        if isinstance(settings.get(part), dict):
            settings[part] = {k: v for k, v in settings[part].items() if k != "description"}
    return settings


def check_consistent(runs: Iterable[Run]) -> None:
    """Check that the runs of each (workload, rule, trial) are seeds of one configuration.

    The report takes a median over the seeds of a trial, so those runs must differ in their seed only: two runs
    of the same seed (two results directories under one root, both with that workload), or a trial whose runs
    have another lr, budget or workload definition (results of two invocations with other ``--trials`` or
    ``--epochs``), cannot be summarised together.

    Raises:
        ValueError: naming the two run directories and what differs.
    """
    first: dict[tuple[str, str, int], Run] = {}
    seen: dict[tuple[str, str, int, int], Run] = {}
    for run in runs:
        key = (run.workload, run.rule, run.trial)
        other = seen.get((*key, run.seed))
        if other is not None:
            raise ValueError(
                f"{other.directory} and {run.directory} are both {run.rule} trial {run.trial} seed {run.seed} on "
                f"{run.workload}: the directory holds the results of several comparisons of that workload; "
                "report each results directory on its own"
            )
        seen[(*key, run.seed)] = run
        reference = first.setdefault(key, run)
        expected, actual = _cell_settings(reference), _cell_settings(run)
        if actual != expected:
            changed = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
            raise ValueError(
                f"{reference.directory} and {run.directory} are seeds of {run.rule} trial {run.trial} on "
                f"{run.workload} with different configurations ({', '.join(changed)} differ): they were written "
                "by comparisons with other settings (--trials, --epochs, ...); move the runs of one setting "
                "elsewhere, or report each results directory on its own"
            )


def group_runs(runs: Iterable[Run]) -> dict[str, dict[str, dict[int, list[Run]]]]:
    """``{workload: {rule: {trial: [runs over seeds]}}}`` in sorted order."""
    out: dict[str, dict[str, dict[int, list[Run]]]] = {}
    for run in runs:
        out.setdefault(run.workload, {}).setdefault(run.rule, {}).setdefault(run.trial, []).append(run)
    return out
