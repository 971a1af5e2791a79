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
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from theorylr._warnings import warn
from theorylr.lab._files import read_csv, read_json

__all__ = ["Run", "check_consistent", "group_runs", "load_runs", "read_meta", "read_metrics", "without_prose"]

#: The statuses of a run that has ended (the runner skips such a run when it is run again).
_ENDED = ("finished", "diverged")

#: The fields of ``config.json``'s workload and rule that are prose only: rewording them changes no result.
PROSE = ("description", "reference")


@dataclass
class Run:
    """One run directory.

    Attributes:
        directory: where it is.
        config: ``config.json``.
        meta: ``meta.json`` (empty when missing).
        rows: ``metrics.csv`` rows (numbers as floats, missing as ``None``).
        problem: what is wrong with ``metrics.csv`` (:func:`read_metrics`: unreadable, or not every epoch of a run
            that ended), ``None`` when nothing is.
    """

    directory: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None

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
        """``finished``, ``diverged``, ``failed``, ``running``, ``interrupted`` or ``missing`` (from ``meta.json``),
        or ``incomplete``: finished by ``meta.json``, but its ``metrics.csv`` has a :attr:`problem` (a truncated
        copy, a damaged file), so that its last row is not its final result; the same comparison run again redoes
        it."""
        status = str(self.meta.get("status", "missing"))
        return "incomplete" if status == "finished" and self.problem is not None else status

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
    malformed file never raises. A ``meta.json`` that exists but cannot be read, a ``metrics.csv`` that cannot be
    read, or one that lacks epochs of a run that ended (:func:`read_metrics`), is a ``RuntimeWarning`` naming the
    file; the run keeps the problem
    (:attr:`Run.problem`), and a finished one shows as ``incomplete``, not as a finished result.
    """
    runs = []
    for config_path in sorted(Path(root).rglob("config.json")):
        directory = config_path.parent
        config: Any = None
        with contextlib.suppress(OSError, ValueError):
            config = read_json(config_path)
        if not _usable_config(config):
            continue
        rows: list[dict[str, Any]] = []
        read, unreadable = read_meta(directory)
        meta: dict[str, Any] = read or {}
        if unreadable is not None:
            warn(
                f"{unreadable}: the run is shown without its status; run the same 'theorylr compare' command again "
                "to redo it",
                RuntimeWarning,
            )
        rows, problem = read_metrics(directory, meta)
        if problem is not None:
            status = meta.get("status")
            shown = "with the rows that could be read" if rows else "without metrics"
            consequence = (
                f"the {status} run is shown as {'incomplete' if status == 'finished' else status} {shown}; run "
                "the same 'theorylr compare' command again to redo it"
                if status in _ENDED
                else f"the run is shown {shown}"
            )
            warn(f"{problem}: {consequence}", RuntimeWarning)
        runs.append(Run(directory, config, meta, rows, problem))
    runs.sort(key=lambda r: (r.workload, r.rule, r.trial, r.seed))
    return runs


def read_meta(directory: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """A run's ``meta.json``, and why it cannot be used when it exists but cannot be read (a sentence naming the
    file, for a warning). ``(None, None)`` when there is none (a run not started yet).

    Example:
        >>> import tempfile, pathlib
        >>> directory = pathlib.Path(tempfile.mkdtemp())
        >>> read_meta(directory)
        (None, None)
        >>> _ = (directory / "meta.json").write_text("[1, 2]")
        >>> read_meta(directory)[1].endswith("meta.json cannot be read (a JSON list, not an object)")
        True
    """
    path = Path(directory) / "meta.json"
    try:
        meta = read_json(path)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read ({str(exc) or type(exc).__name__})"
    if not isinstance(meta, dict):
        return None, f"{path} cannot be read (a JSON {type(meta).__name__}, not an object)"
    for key, (kinds, what) in _META_FIELDS.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            return None, f"{path} cannot be read ({key!r} holds {json.dumps(value)[:40]}, not {what})"
    return meta, None


# The fields of meta.json that the runner and the report read, and what each must hold where present (a file
# edited by hand, or written by something else, is otherwise taken for unreadable rather than crashing the report).
_META_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "status": (str, "a status string"),
    "wall_time": ((int, float), "a number"),
    "setup_time": ((int, float), "a number"),
    "epochs_done": (int, "an integer"),
    "setup": (dict, "an object"),
    "diverged": (dict, "an object"),
    "error": (str, "a string"),
}


def read_metrics(directory: str | os.PathLike[str], meta: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The rows of ``directory/metrics.csv`` that can be read, and what is wrong with the file (``None``: nothing).

    The runner writes one row per epoch, epoch 0 (before training) included, and records the last one as
    ``epochs_done`` in ``meta.json`` when the run ends. So a file that exists but cannot be read is wrong, and so,
    for a run that ended (``status`` ``finished`` or ``diverged`` in ``meta``), is a missing file, a last row cut
    short (no final newline: a truncated copy) or rows other than epochs 0 to ``epochs_done``. A diverged run that
    ended before its epoch-0 row (``epochs_done`` 0) may have no file; a ``meta`` without ``epochs_done`` (not
    written by the runner) only needs epochs 0, 1, 2, ... A run that has not ended may have any prefix, or no file.

    Returns:
        ``(rows, problem)``: the rows as :func:`~theorylr.lab._files.read_csv` reads them (none when the file cannot
        be read), and a sentence naming the file and what is wrong, or ``None``.
    """
    path = Path(directory) / "metrics.csv"
    status = meta.get("status")
    ended = status in _ENDED
    done = meta.get("epochs_done")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        done = None
    try:
        rows: list[dict[str, Any]] = read_csv(path)
        whole = _ends_with_newline(path)
    except FileNotFoundError:
        if ended and not (status == "diverged" and done in (0, None)):
            return [], f"{path} is missing, though meta.json says the run {status}"
        return [], None
    except (OSError, ValueError) as exc:
        text = str(exc).removeprefix(f"{path}: ")
        return [], f"{path} cannot be read ({type(exc).__name__}: {text})"
    if not ended:
        return rows, None
    if not whole:
        return rows, f"{path} ends in the middle of a row (cut short: a truncated copy?)"
    epochs = [row.get("epoch") for row in rows]
    expected = list(range(len(rows) if done is None else done + 1))
    if epochs != expected or (done is None and not rows):
        held = f"{len(rows)} rows"
        if rows:
            held += f" (epochs {_epoch_text(epochs[0])} to {_epoch_text(epochs[-1])})"
        wanted = f"epochs 0 to {done}, as meta.json records" if done is not None else "epochs 0, 1, 2, ..."
        return rows, f"{path} holds {held}, not one row for each of {wanted} (a truncated or mixed copy?)"
    return rows, None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _epoch_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def without_prose(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a ``config.json``) less the :data:`PROSE` fields of its workload and rule (their ``description``
    and ``reference``): what decides the run's computation. Rewording a rule or a workload (an upgrade) changes
    those fields only, and must not make earlier results look like another configuration."""
    out = dict(config)
    for part in ("workload", "rule"):
        if isinstance(out.get(part), dict):
            out[part] = {k: v for k, v in out[part].items() if k not in PROSE}
    return out


def _usable_config(config: Any) -> bool:
    """Whether ``config`` (a parsed ``config.json``) has what :class:`Run`'s properties read."""
    if not isinstance(config, dict) or not isinstance(config.get("rule"), dict):
        return False
    if not isinstance(config.get("workload"), dict):
        return False
    epochs = config.get("epochs")  # the runner writes it; a hand-made config may leave it out
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)):
        return False
    run = Run(Path(), config)
    try:
        run.workload, run.rule, run.kind, run.trial, run.seed, run.lr  # noqa: B018 - each raises when malformed
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _cell_settings(run: Run) -> dict[str, Any]:
    """What a run's ``config.json`` fixes for its cell, less the seed and the prose (:func:`without_prose`)."""
    return without_prose({key: value for key, value in run.config.items() if key != "seed"})


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
