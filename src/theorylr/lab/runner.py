"""The runner: every (rule, trial, seed) cell of a comparison, resumable, one directory per run.

Layout of a results directory (``compare(..., out=DIR)``)::

    DIR/<workload>/compare.json                       the invocations that wrote here (how each ended), skipped rules
    DIR/<workload>/compare.json.lock                  empty; serialises updates of compare.json
    DIR/<workload>/<rule>/trial-<k>/seed-<s>/
        config.json      the cell: workload and rule definitions, trial, lr, seed, epochs, data fingerprint
                         (--data-dir only; never changes)
        meta.json        versions, git commit, CPU/GPU, start/end, set-up info, status and its details
        metrics.csv      one row per epoch (epoch 0 = before training)
        checkpoint.pt    the last epoch's state while the run is unfinished (removed when it ends)
        metrics.csv.damaged[-N]   an ended run's metrics.csv found incomplete or unreadable, kept aside (below)
        .run.lock        empty; held while a process runs the cell, so that two comparisons into one DIR run it once

Every file is written atomically (:mod:`theorylr.lab._files`). ``status`` in ``meta.json`` is ``running`` while a
cell runs, then ``finished``, ``diverged`` (a non-finite loss; the epoch and step are recorded) or ``failed`` (the
error and traceback are recorded); ``interrupted`` when the comparison was stopped with Ctrl-C or SIGTERM (with
worker processes too: the running runs are interrupted, queued ones are not started, and the workers exit; on
Linux they also exit when the comparison's process is killed).

Resuming: finished and diverged cells are skipped; any other cell restarts from its checkpoint (model, optimizer,
scheduler, averagers, torch's global RNG and the shuffling generator, the metrics rows so far and the elapsed
time) and produces the same metrics as an uninterrupted run, wall times aside. An unreadable ``meta.json`` counts
as unfinished; an unreadable checkpoint is discarded (with a warning) and the run restarts from epoch 0. A
finished or diverged cell is skipped only when its ``metrics.csv`` holds every epoch ``meta.json`` records
(:func:`~theorylr.lab.results.read_metrics`); otherwise (a truncated copy, a damaged file) the file is renamed
``metrics.csv.damaged`` (``-2``, ``-3``, ... when taken), never deleted, and the run is redone, with a warning. A
run that (re)starts removes the temporary files that writes killed mid-way (``kill -9``) left in its directory
(:func:`~theorylr.lab._files.remove_stale_temp_files`). A directory whose ``config.json`` differs from the
requested cell, or cannot be read, is an error, never silently mixed; the workload's and the rule's
``description`` and ``reference`` are prose and may differ (:func:`~theorylr.lab.results.without_prose`).

``metrics.csv`` columns: ``epoch``, ``step`` (optimizer steps so far), ``wall_time`` (seconds of set-up and
training so far, evaluation excluded), ``train_loss``, ``train_accuracy``, ``grad_norm`` (the full-batch gradient
norm of the training loss, measured on the evaluated model), ``test_loss``, ``test_accuracy``, ``lr`` (the first
parameter group's lr after the epoch), and the rule's own quantities (``effective_lr``, ``trust_ratio/<layer>``,
``K_hat``, ``L``, ``K_z``, ...). Evaluations run in eval mode on the whole training and test sets.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import hashlib
import importlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from theorylr._validation import SEED_MAX, check_choice, check_int
from theorylr._warnings import warn
from theorylr.lab._files import (
    config_default,
    load_checkpoint,
    locked,
    read_json,
    remove_stale_temp_files,
    save_checkpoint,
    write_csv,
    write_json,
)
from theorylr.lab.environment import environment, now
from theorylr.lab.losses import LossSpec
from theorylr.lab.results import read_meta, read_metrics, without_prose
from theorylr.lab.rules import DEFAULT_RULES, RULES, Rule, RuleContext, resolve_rule
from theorylr.lab.workloads import DEFAULT_WORKLOAD, Workload, get_workload

__all__ = [
    "Cell",
    "CellResult",
    "CompareResult",
    "ConfigMismatchError",
    "WorkerDiedError",
    "compare",
    "evaluate",
    "parse_seeds",
    "plan_cells",
    "run_cell",
]

TERMINAL = ("finished", "diverged")

# The files of a run directory, all written through theorylr.lab._files's atomic writes.
_RUN_FILES = ("config.json", "meta.json", "metrics.csv", "checkpoint.pt")


class ConfigMismatchError(ValueError):
    """A run directory holds results of a different configuration than the one requested."""


@dataclass
class _RunState:
    """What a run has produced so far (survives an exception in the middle of training)."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0


class _DivergedError(Exception):
    def __init__(self, epoch: int, step: int, loss: float, where: str) -> None:
        super().__init__(f"non-finite {where} ({loss}) at epoch {epoch}, step {step}")
        self.epoch, self.step, self.loss, self.where = epoch, step, loss, where


@dataclass(frozen=True)
class Cell:
    """One run: a rule's trial on a workload with one seed."""

    workload: Workload
    rule: Rule
    trial: int
    lr: float
    seed: int
    epochs: int
    data: dict[str, Any] | None = None  # the data files' fingerprint, for a workload read from a --data-dir

    @property
    def label(self) -> str:
        """``adam trial 2 (lr=0.001) seed 0``."""
        trial = f" trial {self.trial} (lr={self.lr:g})" if self.rule.tuned else ""
        return f"{self.rule.name}{trial} seed {self.seed}"

    def directory(self, root: str | os.PathLike[str]) -> Path:
        """``root/<workload>/<rule>/trial-<kk>/seed-<s>``."""
        return Path(root) / self.workload.name / self.rule.name / f"trial-{self.trial:02d}" / f"seed-{self.seed}"

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds (JSON-normalised)."""
        raw = {
            "workload": self.workload.to_dict(),
            "rule": self.rule.to_dict(),
            "trial": self.trial,
            "lr": self.lr,
            "seed": self.seed,
            "epochs": self.epochs,
        }
        if self.data is not None:  # built-in data keep the config they always had (older results resume)
            raw["data"] = self.data
        normalised: dict[str, Any] = json.loads(json.dumps(raw, default=config_default))
        return normalised


@dataclass
class CellResult:
    """The outcome of :func:`run_cell` (plain data, so it crosses process boundaries)."""

    workload: str
    rule: str
    trial: int
    lr: float
    seed: int
    status: str
    directory: str
    tuned: bool = False
    skipped: bool = False
    epochs_done: int = 0
    wall_time: float = math.nan
    final: dict[str, float] = dataclasses.field(default_factory=dict)
    message: str = ""

    def line(self) -> str:
        """One line for the progress log."""
        trial = f" trial {self.trial} (lr={self.lr:.3g})" if self.tuned else ""
        head = f"{self.workload}/{self.rule}{trial} seed {self.seed}: {self.status}"
        if self.skipped:
            return head + " (already done, skipped)"
        parts = [f"{self.epochs_done} epochs", f"{self.wall_time:.1f} s"]
        for key in ("train_loss", "test_accuracy"):
            value = self.final.get(key)
            if value is not None and math.isfinite(value):
                parts.append(f"{key} {value:.4g}")
        if self.message:
            parts.append(self.message)
        return head + ", " + ", ".join(parts)


def parse_seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """Seeds from ``3`` (= 0, 1, 2), ``"3"``, ``"0,5,7"`` or a list."""
    if isinstance(seeds, str):
        text = seeds.strip()
        if "," in text:
            try:
                values = [int(s) for s in text.split(",") if s.strip()]
            except ValueError:
                raise ValueError(
                    f"seeds must be a count or a comma-separated list of integers (got {seeds!r})"
                ) from None
        else:
            try:
                count = int(text)
            except ValueError:
                raise ValueError(
                    f"seeds must be a count or a comma-separated list of integers (got {seeds!r})"
                ) from None
            check_int("seeds", count, min_value=1, max_value=MAX_SEED_COUNT)
            values = list(range(count))
    elif isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of integers (got {seeds!r})")
    elif isinstance(seeds, int):
        check_int("seeds", seeds, min_value=1, max_value=MAX_SEED_COUNT)
        values = list(range(seeds))
    else:
        try:
            listed = list(seeds)
        except TypeError:
            raise ValueError(f"seeds must be a count or a list of integers (got {seeds!r})") from None
        for i, seed in enumerate(listed):  # 1.5 was truncated to 1
            check_int(f"seeds[{i}]", seed, min_value=0, max_value=SEED_MAX)
        values = [int(s) for s in listed]
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise ValueError(f"seeds must be distinct non-negative integers (got {seeds!r})")
    if max(values) > SEED_MAX:  # "0,18446744073709551616": torch's generators would fail in the run
        raise ValueError(f"seeds must be integers <= {SEED_MAX} (got {seeds!r})")
    return values


#: The most seeds a count may ask for (``seeds=3`` means seeds 0, 1, 2): a count is a number of runs per trial.
MAX_SEED_COUNT = 10_000


def plan_cells(
    workload: Workload,
    rules: Sequence[Rule],
    seeds: Sequence[int],
    epochs: int,
    trials: int,
    data: dict[str, Any] | None = None,
) -> list[Cell]:
    """Every (rule, trial, seed) cell: ``trials`` grid points for tuned rules, one trial for the others; ``data``
    is the fingerprint of data read from a directory (:func:`data_fingerprint`), recorded in every cell."""
    cells = []
    for rule in rules:
        lrs = rule.trial_lrs(trials) if rule.tuned else [_fixed_lr(workload, rule)]
        for trial, lr in enumerate(lrs):
            for seed in seeds:
                cells.append(Cell(workload, rule, trial, lr, seed, epochs, data))
    return cells


def data_fingerprint(data: Any) -> dict[str, Any]:
    """What identifies data loaded from a user's directory: the SHA-256 of the training and test tensors as
    loaded, and their sizes. It goes into every run's ``config.json``, so that a run resumed, or a seed added, on
    other files (another ``--data-dir``, or files changed in place) is refused, never mixed into one summary."""
    digest = hashlib.sha256()
    sizes = {}
    for name in ("x_train", "y_train", "x_test", "y_test"):
        t = getattr(data, name).detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        sizes[name] = int(t.shape[0])
    return {"sha256": digest.hexdigest(), "train": sizes["x_train"], "test": sizes["x_test"]}


def _fixed_lr(workload: Workload, rule: Rule) -> float:
    return float(workload.options_for(rule.name).get("lr", rule.defaults["lr"]))


# ----------------------------------------------------------------------------------------------------------------
# data, batches, evaluation

_DATA_CACHE: dict[tuple[str, str, str, str | None], Any] = {}

# The modules the rule factories import lazily (theorylr.lab.rules): imported before a run's set-up is timed.
_RULE_MODULES = (
    "theorylr.optim.lars",
    "theorylr.optim.param_groups",
    "theorylr.optim.adaptive",
    "theorylr.optim.exact_adam",
    "theorylr.lipschitz.scheduler",
    "theorylr.lab.range_test",
    "theorylr.models",
    "theorylr.estimate",
)


def _load_data(workload: Workload, data_dir: str | None) -> Any:
    """The workload's data, loaded once per process for each (dataset, options, dtype, data_dir).

    The dtype is part of the key: :meth:`Workload.load_data` scales the features in the workload's dtype, so a
    float64 workload must not get the float32 copy another workload on the same dataset loaded first.
    """
    options = json.dumps(dict(workload.dataset_options), sort_keys=True, default=str)
    key = (workload.dataset, options, workload.dtype, data_dir)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = workload.load_data(data_dir)
    return _DATA_CACHE[key]


def _batches(
    x: Tensor, y: Tensor, batch_size: int | None, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        yield x, y
        return
    order = (
        torch.randperm(n, generator=generator).to(x.device)
        if generator is not None
        else torch.arange(n, device=x.device)
    )
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


def evaluate(
    model: nn.Module,
    loss: LossSpec,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 4096,
    gradient: bool = False,
    grad_samples: int | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode, and optionally the gradient norm.

    The gradient is that of the mean loss over the first ``grad_samples`` examples (all by default), computed with
    :func:`torch.autograd.grad` so that no ``.grad`` is touched. The model's train/eval mode is restored.

    Returns:
        ``{"loss", "accuracy"}`` (accuracy only for classification losses) and ``"grad_norm"`` when asked.
    """
    check_int("batch_size", batch_size, min_value=1)
    if grad_samples is not None:
        check_int("grad_samples", grad_samples, min_value=1)
    was_training = model.training
    model.eval()
    n = x.shape[0]
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    grads: list[Tensor] | None = None
    limit = n if grad_samples is None else min(grad_samples, n)
    try:
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            need_grad = gradient and start < limit
            with torch.set_grad_enabled(need_grad):
                out = model(xb)
                value = loss(out, yb)
            total += value.detach().double() * xb.shape[0]
            if loss.classification:
                correct += loss.correct(out.detach(), yb).double()
            if need_grad:
                stop = min(start + batch_size, limit)
                part = value if stop == start + xb.shape[0] else loss(out[: stop - start], yb[: stop - start])
                weight = (stop - start) / limit
                chunk = torch.autograd.grad(part * weight, params, allow_unused=True)
                chunk_list = [torch.zeros_like(p) if g is None else g for g, p in zip(chunk, params)]
                grads = chunk_list if grads is None else [a + b for a, b in zip(grads, chunk_list)]
    finally:
        model.train(was_training)
    result = {"loss": float(total / n)}
    if loss.classification:
        result["accuracy"] = float(correct / n)
    if gradient:
        result["grad_norm"] = (
            float(torch.linalg.vector_norm(torch.stack([g.double().norm() for g in grads]))) if grads else 0.0
        )
    return result


# ----------------------------------------------------------------------------------------------------------------
# one cell


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_WARM = False


def _warm_up() -> None:
    """Pay torch's one-off costs before anything is timed.

    The first optimizer built in a process imports parts of ``torch._dynamo`` (seconds); without this, whichever
    run came first in a process would carry that cost in its set-up time.
    """
    global _WARM
    if _WARM:
        return
    with torch.random.fork_rng(devices=[]):  # leaves torch's global generator as it was
        layer = nn.Linear(2, 1)
        for optimizer in (torch.optim.SGD(layer.parameters(), lr=0.0), torch.optim.Adam(layer.parameters(), lr=0.0)):
            optimizer.zero_grad()
            layer(torch.ones(1, 2)).sum().backward()
            optimizer.step()
    _WARM = True


_DEVICE_TYPES = ("cpu", "cuda", "mps")
_DEVICES = "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` (``"auto"``: CUDA when available, else the CPU).

    Raises:
        ValueError: naming ``device`` and the allowed values, or saying that the device is not available here.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = _parse_device(device)
    _check_available(dev)
    return dev


def _parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in _DEVICE_TYPES:
        raise ValueError(f"device must be {_DEVICES} (got {str(device)!r})")
    return dev


def _check_available(dev: torch.device) -> None:
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(dev)!r} is not available: torch finds no CUDA device here "
                f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not compiled in'}); use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(dev)!r} is not available: there are {count} CUDA devices (cuda:0 ...)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(dev)!r} is not available: torch finds no MPS device here; use 'cpu' or 'auto'")


def _check_config(directory: Path, config: dict[str, Any]) -> None:
    path = directory / "config.json"
    if not path.exists():
        write_json(path, config)
        return
    problem = ""
    try:
        existing = read_json(path)
    except (OSError, ValueError) as exc:
        existing, problem = None, f"{type(exc).__name__}: {exc}"
    if not isinstance(existing, dict):
        problem = problem or f"a JSON {type(existing).__name__}, not an object"  # e.g. a file holding "hello"
        raise ConfigMismatchError(
            f"{path} cannot be read ({problem}): the run in {directory} cannot be matched to a configuration; "
            "delete that directory to redo the run, or choose another --out"
        )
    existing, wanted = without_prose(existing), without_prose(json.loads(json.dumps(config)))
    if existing != wanted:  # a reworded description or reference (an upgrade) is the same configuration
        changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
        hint = ": the files read from --data-dir are not those the run was started on" if "data" in changed else ""
        raise ConfigMismatchError(
            f"{directory} holds a run with a different configuration ({', '.join(changed)} differ{hint}); "
            "rerun with the same arguments to resume, or choose another --out"
        )


def run_cell(
    cell: Cell,
    root: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    keep_checkpoint: bool = False,
    epoch_callback: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CellResult:
    """Run (or resume, or skip) one cell and write its directory.

    Args:
        cell: the cell.
        root: the results directory.
        data_dir: where the workload's data files are (MNIST, CIFAR-10).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``, ...
        keep_checkpoint: keep ``checkpoint.pt`` after the run ends (default: removed).
        epoch_callback: called with the epoch number after each epoch's files are written (tests use it to
            simulate a kill).
        progress: called with the epoch number after each epoch (a progress bar's update).

    Returns:
        a :class:`CellResult`; a failure inside the run is recorded (status ``failed``), not raised. Raises only on
        a configuration mismatch or an unreadable ``config.json`` (:class:`ConfigMismatchError`), an invalid or
        unavailable ``device`` (``ValueError``) and on ``KeyboardInterrupt`` (after recording ``interrupted``).

    An unreadable ``meta.json`` counts as an unfinished run and an unreadable ``checkpoint.pt`` is discarded: the run
    is redone (from its checkpoint if that can be read, else from epoch 0), with a warning naming the file. So is a
    finished or diverged run whose ``metrics.csv`` does not hold every epoch ``meta.json`` records
    (:func:`~theorylr.lab.results.read_metrics`): that file is renamed ``metrics.csv.damaged`` (or
    ``.damaged-N``), never deleted. A run that (re)starts first removes the temporary files of atomic writes killed
    mid-way in its directory (``.metrics.csv.<random>.tmp``, ...; nothing else).
    """
    directory = cell.directory(root)
    directory.mkdir(parents=True, exist_ok=True)
    # One process at a time per run directory: two comparisons into one OUT would otherwise run the same cell
    # twice and remove each other's temporary files mid-write. The second waits, then finds the run ended and
    # skips it (or resumes it, if the first was interrupted).
    with locked(directory / ".run"):
        return _run_cell(cell, root, data_dir, device, keep_checkpoint, epoch_callback, progress)


def _run_cell(
    cell: Cell,
    root: str | os.PathLike[str],
    data_dir: str | None,
    device: str | torch.device,
    keep_checkpoint: bool,
    epoch_callback: Callable[[int], None] | None,
    progress: Callable[[int], None] | None,
) -> CellResult:
    """:func:`run_cell`'s work, under its lock."""
    directory = cell.directory(root)
    _check_config(directory, cell.config())
    base = CellResult(
        cell.workload.name, cell.rule.name, cell.trial, cell.lr, cell.seed, "running", str(directory), cell.rule.tuned
    )
    meta_path = directory / "meta.json"
    previous, unreadable = read_meta(directory)  # an unreadable one: the run is redone
    if previous is not None and previous.get("status") in TERMINAL:
        _, problem = read_metrics(directory, previous)
        if problem is None:
            base.status, base.skipped = str(previous["status"]), True
            base.wall_time = float(previous.get("wall_time") or math.nan)
            if previous.get("keep_checkpoint") is False:  # killed between its last meta.json and the removal
                (directory / "checkpoint.pt").unlink(missing_ok=True)
            return base
        aside = _set_aside(directory / "metrics.csv")
        note = problem if aside is None else f"{problem}; kept as {aside.name}"
        warn(f"{note}: the {previous['status']} run is redone", RuntimeWarning)
        # Redone from epoch 0: a fresh meta.json (this environment, this start), keeping only what was discarded.
        previous = {"discarded_metrics": note}
    if unreadable is not None:
        warn(f"{unreadable}: the run is redone", RuntimeWarning)
    remove_stale_temp_files(directory, _RUN_FILES)  # left by writes killed mid-way; this run is the only writer

    meta: dict[str, Any] = previous or {}
    dev = resolve_device(device)
    started = now()
    env = environment(dev)
    if "status" in meta:  # a resume: the first part's environment stays; each later part records what differs
        meta.setdefault("resumed", []).append(started)
        changed = {k: v for k, v in env.items() if meta.get(k) != v}
        meta.setdefault("resumed_environment", []).append({"started": started, **changed})
    meta.update({k: v for k, v in env.items() if k not in meta})
    meta.setdefault("started", started)
    for key in ("ended", "error", "traceback", "diverged"):
        meta.pop(key, None)
    meta["status"] = "running"
    write_json(meta_path, meta)

    state = _RunState()
    try:
        _train(cell, directory, meta, dev, data_dir, state, epoch_callback, progress)
        meta["status"] = "finished"
    except _DivergedError as exc:
        meta["status"] = "diverged"
        meta["diverged"] = {"epoch": exc.epoch, "step": exc.step, "loss": repr(exc.loss), "where": exc.where}
        base.message = str(exc)
    except FloatingPointError as exc:  # e.g. LipschitzLR's L = 0 after a step killed every ReLU: a divergence
        meta["status"] = "diverged"
        epoch = int(state.rows[-1]["epoch"]) + 1 if state.rows else 0
        meta["diverged"] = {"epoch": epoch, "step": None, "loss": None, "where": f"{type(exc).__name__}: {exc}"}
        base.message = f"diverged: {exc}"
    except Exception as exc:  # recorded, never a crash of the whole comparison
        meta["status"] = "failed"
        meta["error"] = f"{type(exc).__name__}: {exc}"
        meta["traceback"] = traceback.format_exc()
        base.message = meta["error"]
    except BaseException:  # Ctrl-C, SystemExit: record and let it through
        meta["status"] = "interrupted"
        meta["ended"] = now()
        write_json(meta_path, meta)
        raise
    rows, elapsed = state.rows, state.elapsed
    if not rows and meta["status"] in TERMINAL:  # diverged in its set-up: rows here are an earlier attempt's
        (directory / "metrics.csv").unlink(missing_ok=True)
    meta["ended"] = now()
    meta["wall_time"] = elapsed
    meta["epochs_done"] = int(rows[-1]["epoch"]) if rows else 0
    meta["keep_checkpoint"] = keep_checkpoint  # a later skip removes a checkpoint only where it was not kept
    write_json(meta_path, meta)
    checkpoint = directory / "checkpoint.pt"
    if meta["status"] in TERMINAL and checkpoint.exists() and not keep_checkpoint:
        checkpoint.unlink()
    base.status = meta["status"]
    base.epochs_done = meta["epochs_done"]
    base.wall_time = elapsed
    if rows:
        base.final = {k: float(v) for k, v in rows[-1].items() if isinstance(v, (int, float))}
    return base


def _train(
    cell: Cell,
    directory: Path,
    meta: dict[str, Any],
    device: torch.device,
    data_dir: str | None,
    state: _RunState,
    epoch_callback: Callable[[int], None] | None,
    progress: Callable[[int], None] | None,
) -> None:
    workload, rule = cell.workload, cell.rule
    loss = workload.loss_spec
    data = _load_data(workload, data_dir)
    dtype = workload.torch_dtype
    x_train = data.x_train.to(device=device, dtype=dtype)
    x_test = data.x_test.to(device=device, dtype=dtype)
    y_train = loss.prepare_targets(data.y_train, dtype).to(device)
    y_test = loss.prepare_targets(data.y_test, dtype).to(device)
    num_classes = getattr(data, "num_classes", None)

    _warm_up()
    torch.manual_seed(cell.seed)
    init_generator = torch.Generator(device="cpu").manual_seed(cell.seed)
    model = workload.build_model(data, generator=init_generator).to(device)
    model.train()
    batch_size = workload.batch_size
    steps_per_epoch = 1 if batch_size is None else math.ceil(x_train.shape[0] / batch_size)

    options = {**dict(rule.defaults), **workload.options_for(rule.name), "lr": cell.lr}
    context = RuleContext(
        model=model,
        loss=loss,
        workload=workload,
        x_train=x_train,
        y_train=y_train,
        batches=lambda g: _batches(x_train, y_train, batch_size, g),
        epochs=cell.epochs,
        steps_per_epoch=steps_per_epoch,
        num_classes=num_classes,
        options=options,
        seed=cell.seed,
    )
    if rule.requires is not None:
        importlib.import_module(rule.requires)  # import time is not the rule's cost
    for name in _RULE_MODULES:  # nor is theorylr's own: whichever rule ran first in a process paid it (10-60 ms)
        importlib.import_module(name)
    first_setup_time = meta.get("setup_time")  # the attempt that made the checkpoint, if any
    begin = time.perf_counter()
    setup = rule.factory(context)
    setup_time = time.perf_counter() - begin
    meta["setup_time"] = setup_time
    meta["setup"] = setup.info
    optimizer, scheduler = setup.optimizer, setup.scheduler
    eval_model = setup.eval_model or (lambda: _yield(model))
    batch_generator = torch.Generator(device="cpu").manual_seed(cell.seed)
    checkpoint_path = directory / "checkpoint.pt"
    metrics_path = directory / "metrics.csv"

    def measure(epoch: int, step: int, wall: float) -> dict[str, Any]:
        with eval_model() as evaluated:
            train = evaluate(
                evaluated,
                loss,
                x_train,
                y_train,
                batch_size=workload.eval_batch_size,
                gradient=True,
                grad_samples=workload.grad_norm_samples,
            )
            test = evaluate(evaluated, loss, x_test, y_test, batch_size=workload.eval_batch_size)
        row: dict[str, Any] = {"epoch": epoch, "step": step, "wall_time": wall, "train_loss": train["loss"]}
        if "accuracy" in train:
            row["train_accuracy"] = train["accuracy"]
        row["grad_norm"] = train["grad_norm"]
        row["test_loss"] = test["loss"]
        if "accuracy" in test:
            row["test_accuracy"] = test["accuracy"]
        row.update(setup.probe() if setup.probe else {"lr": float(optimizer.param_groups[0]["lr"])})
        return row

    def save(epoch: int, step: int, elapsed: float, rows: list[dict[str, Any]]) -> None:
        write_csv(metrics_path, rows)
        payload: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "elapsed": elapsed,
            "rows": rows,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "stateful": {name: obj.state_dict() for name, obj in setup.stateful.items()},
            "rng": _rng_state(batch_generator),
        }
        save_checkpoint(checkpoint_path, payload)

    try:
        saved = _load_saved(checkpoint_path, meta)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None and saved["scheduler"] is not None:
                scheduler.load_state_dict(saved["scheduler"])
            for name, obj in setup.stateful.items():
                obj.load_state_dict(saved["stateful"][name])
            _set_rng_state(saved["rng"], batch_generator)
            state.rows = [dict(r) for r in saved["rows"]]
            start_epoch, step, state.elapsed = int(saved["epoch"]), int(saved["step"]), float(saved["elapsed"])
            meta["resumed_from_epoch"] = start_epoch
            if isinstance(first_setup_time, (int, float)):  # the setup behind epoch 0's wall time stays on record
                meta["setup_time"], meta["resume_setup_time"] = float(first_setup_time), setup_time
            write_csv(metrics_path, state.rows)  # drops any row written after this checkpoint
        else:
            meta.pop("resumed_from_epoch", None)
            meta.pop("resume_setup_time", None)
            metrics_path.unlink(missing_ok=True)  # rows of an earlier attempt, if any, do not belong to this one
            start_epoch, step, state.elapsed = 0, 0, setup_time
            row = measure(0, 0, setup_time)
            _check_finite(row, 0, 0)
            state.rows = [row]
            save(0, 0, state.elapsed, state.rows)

        for epoch in range(start_epoch + 1, cell.epochs + 1):
            tick = time.perf_counter()
            model.train()
            for xb, yb in _batches(x_train, y_train, batch_size, batch_generator):
                optimizer.zero_grad(set_to_none=True)
                value = loss(model(xb), yb)
                if setup.observe_targets is not None:
                    setup.observe_targets(yb)
                value.backward()
                if not math.isfinite(float(value.detach())):
                    state.elapsed += time.perf_counter() - tick
                    raise _DivergedError(epoch, step + 1, float(value.detach()), "training loss")
                optimizer.step()
                step += 1
                if setup.after_step is not None:
                    setup.after_step()
                if scheduler is not None and setup.scheduler_interval == "step":
                    scheduler.step()
            if scheduler is not None and setup.scheduler_interval == "epoch":
                scheduler.step()
            state.elapsed += time.perf_counter() - tick
            row = measure(epoch, step, state.elapsed)
            _check_finite(row, epoch, step)
            state.rows.append(row)
            save(epoch, step, state.elapsed, state.rows)
            if progress is not None:
                progress(epoch)
            if epoch_callback is not None:
                epoch_callback(epoch)
    finally:
        if setup.close is not None:
            setup.close()


def _set_aside(path: Path) -> Path | None:
    """Rename ``path`` to ``<name>.damaged``, or ``<name>.damaged-2``, ``-3``, ... when that is taken (an earlier
    one is never overwritten); returns the new path, or ``None`` when there is no file."""
    if not path.exists():
        return None
    for n in itertools.count(1):
        target = path.with_name(f"{path.name}.damaged" + ("" if n == 1 else f"-{n}"))
        if not target.exists() and not target.is_symlink():
            path.rename(target)
            return target
    raise AssertionError("unreachable")  # pragma: no cover


_CHECKPOINT_KEYS = ("epoch", "step", "elapsed", "rows", "model", "optimizer", "scheduler", "stateful", "rng")


def _load_saved(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path``; ``None`` when there is none, or when it cannot be read: it is then removed, with a
    warning naming it (and a note in ``meta``), and the run restarts from epoch 0 instead of failing on every rerun."""
    if not path.exists():
        return None
    try:
        saved = load_checkpoint(path)
        missing = [key for key in _CHECKPOINT_KEYS if key not in saved]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except Exception as exc:  # a truncated or foreign file: torch raises RuntimeError, UnpicklingError, EOFError...
        lines = str(exc).splitlines()
        message = f"{path} cannot be read ({type(exc).__name__}: {lines[0] if lines else ''}); discarded"
        warn(f"{message}: the run restarts from epoch 0", RuntimeWarning)
        meta["discarded_checkpoint"] = message
        path.unlink(missing_ok=True)
        return None
    return saved


def _check_finite(row: dict[str, Any], epoch: int, step: int) -> None:
    for key in ("train_loss", "grad_norm"):
        value = row.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise _DivergedError(epoch, step, value, f"full-batch {key}")


class _yield:  # noqa: N801 - a tiny context manager that yields its argument
    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        return self.model

    def __exit__(self, *exc: object) -> None:
        return None


# ----------------------------------------------------------------------------------------------------------------
# a comparison


@dataclass
class CompareResult:
    """What :func:`compare` did.

    Attributes:
        out: the results directory.
        workload: the workload's name.
        results: one :class:`CellResult` per cell, in plan order.
        skipped_rules: ``(rule, message)`` for each rule skipped (a package missing, or unsuited to the workload).
    """

    out: Path
    workload: str
    results: list[CellResult]
    skipped_rules: list[tuple[str, str]]

    def counts(self) -> dict[str, int]:
        """How many cells ended in each status."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def _default_start_method(device: str) -> str:
    # Checking a CUDA device here (compare does, up front) leaves CUDA unusable in forked children: spawn them.
    if sys.platform.startswith("linux") and not torch.cuda.is_initialized() and not device.startswith("cuda"):
        return "fork"
    return "spawn"


@dataclass
class _WorkerState:
    """A worker process's view of the comparison: set by :func:`_worker_init` and :func:`_on_worker_signal`."""

    parent: int | None = None  # the comparison's process id (None: not this process's parent, e.g. forkserver)
    busy: bool = False  # a run is in progress
    stopped: bool = False  # Ctrl-C or SIGTERM came: finish recording, start nothing new


_WORKER = _WorkerState()

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(threads: int, parent: int, formatwarning: Callable[..., str] | None = None) -> None:
    torch.set_num_threads(threads)
    if formatwarning is not None:  # the command line's one-line warnings, which a spawned worker does not inherit
        warnings.formatwarning = formatwarning
    _WORKER.parent = parent if os.getppid() == parent else None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_worker_signal)
    _exit_with_parent()


def _cli_formatwarning() -> Callable[..., str] | None:
    """``theorylr.cli.format_warning`` while the command line runs (a module-level function, so a spawned worker can
    receive it), else ``None``: a user's own ``warnings.formatwarning`` may not pickle, and workers keep Python's."""
    current = warnings.formatwarning
    return current if getattr(current, "__module__", None) == "theorylr.cli" else None


def _exit_with_parent() -> None:
    """Linux: have the kernel send this worker SIGTERM when the comparison's process dies, even by ``kill -9``."""
    if not sys.platform.startswith("linux") or _WORKER.parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
    if os.getppid() != _WORKER.parent:  # it died before prctl took effect
        os._exit(1)


def _parent_gone() -> bool:
    return _WORKER.parent is not None and os.getppid() != _WORKER.parent


def _on_worker_signal(signum: int, frame: object) -> None:
    """Ctrl-C (the whole process group gets it) or the comparison's SIGTERM: interrupt the running run once, so that
    it is recorded as ``interrupted``; a repeated signal does not interrupt that recording. An orphan exits."""
    first = not _WORKER.stopped
    _WORKER.stopped = True
    if not _WORKER.busy and _parent_gone():
        os._exit(128 + signum)
    if first and _WORKER.busy:
        raise KeyboardInterrupt


def _run_cell_job(cell: Cell, root: str, data_dir: str | None, device: str) -> CellResult:
    _WORKER.busy = True
    try:
        if _WORKER.stopped:  # the comparison was interrupted: a queued run is not started
            raise KeyboardInterrupt
        return run_cell(cell, root, data_dir=data_dir, device=device)
    finally:
        _WORKER.busy = False
        if _WORKER.stopped and _parent_gone():
            os._exit(1)


class WorkerDiedError(RuntimeError):
    """A worker process of ``compare(jobs > 1)`` died while runs were going on (killed from outside, e.g. by the
    out-of-memory killer). The runs it held stay ``running`` in their ``meta.json``; the same comparison run again
    resumes them from their last checkpoint and skips every run that had ended with a complete ``metrics.csv`` (one
    whose file is damaged is redone)."""


def _run_in_workers(
    cells: list[Cell],
    job: tuple[str, str | None, str],
    jobs: int,
    threads: int,
    start_method: str,
    report: Callable[[int, CellResult], None],
) -> None:
    """Run ``cells`` in ``jobs`` worker processes; on Ctrl-C or SIGTERM, interrupt the running runs (recorded as
    ``interrupted``), start no queued one and wait for the workers before raising ``KeyboardInterrupt``. A worker
    that dies raises :class:`WorkerDiedError` once the others have stopped."""
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(start_method),
        initializer=_worker_init,
        initargs=(threads, os.getpid(), _cli_formatwarning()),
    )
    ended = 0
    try:
        futures = {pool.submit(_run_cell_job, cell, *job): i for i, cell in enumerate(cells)}
        for future in concurrent.futures.as_completed(futures):
            report(futures[future], future.result())
            ended += 1
    except concurrent.futures.process.BrokenProcessPool as exc:
        _interrupt_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise WorkerDiedError(
            f"a worker process died while the runs went on ({exc}; killed from outside, e.g. by the "
            f"out-of-memory killer?). {ended} of {len(cells)} runs had ended; the others are unfinished "
            "(interrupted, left 'running' by the dead worker, or not started): run the same command again to resume "
            "them"
        ) from None
    except KeyboardInterrupt:
        workers = _interrupt_workers(pool)
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:  # a second Ctrl-C can cut the shutdown short before it tells the idle workers to exit
            _reap(workers, _REAP_GRACE)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# Seconds that workers still alive after an interrupted shutdown get to record their runs before they are killed.
_REAP_GRACE = 2.0


def _interrupt_workers(pool: concurrent.futures.ProcessPoolExecutor) -> list[multiprocessing.process.BaseProcess]:
    """SIGTERM to every live worker (a Ctrl-C reached them already; SIGTERM to this process alone did not); returns
    the workers, which the pool forgets once shut down."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if process.is_alive():
                process.terminate()
    return processes


def _reap(workers: Sequence[multiprocessing.process.BaseProcess], grace: float) -> None:
    """Join ``workers`` within ``grace`` seconds in all, then kill the ones left. After a complete shutdown none is
    left. After one cut short by a second Ctrl-C, an idle worker would wait for work forever, and this process would
    hang at exit joining it (seen once under load: ``multiprocessing.util._exit_function``); a run a killed worker
    held stays ``running`` and resumes from its checkpoint."""
    deadline = time.monotonic() + grace
    for process in workers:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the runs go on, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (main thread only): the running
    runs are recorded as ``interrupted`` and the workers stopped, instead of dying with the workers orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _check_data(workload: Workload, data_dir: str | None) -> None:
    """Load the workload's data once before any run (every run would fail the same way): a clear error now."""
    if workload.needs_data_dir and data_dir is None:
        workload.load_data(None)  # raises the clear "needs --data-dir" error
    where = f" from data_dir {data_dir!r}" if data_dir is not None else ""
    try:
        data = _load_data(workload, data_dir)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(
            f"cannot load the {workload.dataset} data of workload {workload.name!r}{where}: {exc}"
        ) from None
    try:  # the loss against the data's classes (a binary loss on three classes would misread the labels)
        workload.loss_spec.outputs(getattr(data, "num_classes", None))
    except ValueError as exc:
        raise ValueError(f"workload {workload.name!r}: {exc}") from None
    empty = [name for name in ("x_train", "x_test") if getattr(data, name).shape[0] == 0]
    if empty:
        raise ValueError(
            f"the {workload.dataset} data of workload {workload.name!r}{where} hold no examples "
            f"({' and '.join(empty)} empty)"
        )


def _resolve_rules(rules: Sequence[str | Rule] | str | None) -> list[Rule]:
    if isinstance(rules, str):
        rules = [r for r in rules.split(",") if r.strip()]
    specs: Sequence[str | Rule] = DEFAULT_RULES if rules is None else rules
    if not specs:
        raise ValueError(f"rules must name at least one rule, one of {', '.join(sorted(RULES))} (got none)")
    for spec in specs:
        if not isinstance(spec, (str, Rule)):
            raise ValueError(f"rules must be rule names or Rule objects (got {spec!r})")
    resolved = [resolve_rule(r) if isinstance(r, str) else r for r in specs]
    if len({r.name for r in resolved}) != len(resolved):
        raise ValueError(f"rules must not repeat (got {', '.join(r.name for r in resolved)})")
    return resolved


def compare(
    workload: str | Workload = DEFAULT_WORKLOAD,
    rules: Sequence[str | Rule] | str | None = None,
    *,
    out: str | os.PathLike[str],
    seeds: int | str | Sequence[int] = 1,
    epochs: int | None = None,
    trials: int = 5,
    jobs: int = 1,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    verbose: bool = True,
    start_method: str | None = None,
    threads: int | None = None,
) -> CompareResult:
    """Run rules side by side on a workload and write one directory per (rule, trial, seed).

    Args:
        workload: a registered name or a :class:`Workload` (default ``digits-mlp``).
        rules: names or ``name@lr`` specs, a comma-separated string, or :class:`Rule` objects (default
            :data:`~theorylr.lab.rules.DEFAULT_RULES`). Rules whose peer package is missing, or that do not apply
            to the workload (:meth:`Rule.unsuitable`), are skipped with a message.
        out: the results directory (created; existing results are resumed).
        seeds: a count (``3`` = seeds 0, 1, 2) or a list.
        epochs: the budget (default: the workload's).
        trials: the tuning budget ``k`` of tuned rules (log-grid points).
        jobs: worker processes (1 = run in this process).
        data_dir: where MNIST/CIFAR-10 files are. The data are loaded (and checked) once before any run starts.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``; checked before any run starts.
        progress: show progress bars (default: when stderr is a terminal).
        verbose: print one line per finished run.
        threads: torch threads per run (default: torch's setting with ``jobs=1``, ``cpu_count // jobs`` with
            workers). On a shared or small machine, 1 is often fastest for the small workloads.
        start_method: how worker processes start (``"fork"``, ``"spawn"``, ``"forkserver"``); default ``"fork"``
            on Linux while CUDA is not initialised and the device is not a CUDA one (workers inherit the imported
            modules and the loaded data: no start-up cost), else ``"spawn"``.

    Returns:
        a :class:`CompareResult`.

    Raises:
        ValueError: on a bad argument (unknown or no rules, a device that is not valid or not available here, data
            that cannot be loaded, ...) before any run starts; :class:`ConfigMismatchError` when a run directory
            holds another configuration or an unreadable ``config.json``.
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after the running runs were recorded as ``interrupted`` (rerun to
            resume them); with workers, queued runs are not started and the workers have exited.
        WorkerDiedError: with workers, when one died (killed from outside); rerun to resume.

    Example:
        >>> import tempfile
        >>> result = compare("iris-softmax", "adam,sgd", out=tempfile.mkdtemp(), epochs=2, trials=2, verbose=False)
        >>> result.counts()
        {'finished': 4}
    """
    if not isinstance(workload, (str, Workload)):
        raise ValueError(f"workload must be a workload name or a Workload (got {type(workload).__name__})")
    w = get_workload(workload) if isinstance(workload, str) else workload
    resolved = _resolve_rules(rules)
    check_int("trials", trials, min_value=1)
    check_int("jobs", jobs, min_value=1)
    if start_method is not None:
        check_choice("start_method", start_method, multiprocessing.get_all_start_methods())
    if threads is not None:
        check_int("threads", threads, min_value=1)
    n_epochs = w.epochs if epochs is None else epochs
    check_int("epochs", n_epochs, min_value=1)
    seed_list = parse_seeds(seeds)
    if str(device) != "auto":  # "auto" is resolved in each run: checking CUDA here would poison forked workers
        resolve_device(device)
    data_path = None if data_dir is None else str(data_dir)
    _check_data(w, data_path)
    root = Path(out)
    show = _print if verbose else None

    skipped: list[tuple[str, str]] = []
    runnable = []
    for rule in resolved:
        reason = rule.missing_message() if not rule.available() else rule.unsuitable(w)
        if reason is None:
            runnable.append(rule)
        else:
            skipped.append((rule.name, reason))
            if show:
                show(reason)
    if not runnable:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped)
        raise ValueError(f"rules: none of the rules can run on workload {w.name!r}, nothing to do ({reasons})")
    fingerprint = None if data_path is None else data_fingerprint(_load_data(w, data_path))  # hashes the whole set
    cells = plan_cells(w, runnable, seed_list, n_epochs, trials, fingerprint)
    invocation = _record_invocation(root, w, resolved, skipped, seed_list, n_epochs, trials, jobs)
    outcome = "interrupted"

    bars = sys.stderr.isatty() if progress is None else progress
    results: list[CellResult | None] = [None] * len(cells)
    from tqdm.auto import tqdm

    overall = tqdm(total=len(cells), desc=f"{w.name}", unit="run", disable=not bars, dynamic_ncols=True)

    finished = [0]

    def report(index: int, result: CellResult) -> None:
        results[index] = result
        overall.update(1)
        finished[0] += 1
        if show:
            line = f"[{finished[0]:>{len(str(len(cells)))}}/{len(cells)}] {result.line()}"
            (overall.write if bars else show)(line)

    previous_threads = torch.get_num_threads()
    try:
        with _sigterm_as_interrupt():
            if jobs == 1:
                if threads is not None:
                    torch.set_num_threads(threads)
                for i, cell in enumerate(cells):
                    bar = tqdm(total=cell.epochs, desc=cell.label, leave=False, disable=not bars, unit="ep")

                    def tick(_epoch: int, bar: Any = bar) -> None:
                        bar.update(1)

                    try:
                        res = run_cell(cell, root, data_dir=data_path, device=device, progress=tick)
                    finally:
                        bar.close()
                    report(i, res)
            else:
                per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // jobs)
                method = start_method or _default_start_method(str(device))
                _run_in_workers(cells, (str(root), data_path, str(device)), jobs, per_worker, method, report)
        outcome = "complete"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        outcome = f"error: {type(exc).__name__}"
        raise
    finally:
        overall.close()
        torch.set_num_threads(previous_threads)
        result = CompareResult(root, w.name, [r for r in results if r is not None], skipped)
        _finish_invocation(root, w, invocation, outcome, result.counts())
    return result


def _print(text: str) -> None:
    print(text, flush=True)


def _record_invocation(
    root: Path,
    workload: Workload,
    rules: Sequence[Rule],
    skipped: list[tuple[str, str]],
    seeds: list[int],
    epochs: int,
    trials: int,
    jobs: int,
) -> str:
    """Append this invocation to the workload's ``compare.json`` with ``status: "running"`` (until
    :func:`_finish_invocation`); returns its id."""
    path = root / workload.name / "compare.json"
    invocation = uuid.uuid4().hex
    with locked(path):  # concurrent comparisons into one directory each keep their record
        # compare.json is written under this lock only: a temp file of it here is a write killed mid-way.
        remove_stale_temp_files(path.parent, ["compare.json"])
        record: dict[str, Any] = (
            _read_invocations(path) if path.exists() else {"workload": workload.to_dict(), "invocations": []}
        )
        record["invocations"].append(
            {
                "id": invocation,
                "time": now(),
                "rules": [r.name for r in rules],
                "skipped": [{"rule": name, "reason": msg} for name, msg in skipped],
                "seeds": seeds,
                "epochs": epochs,
                "trials": trials,
                "jobs": jobs,
                "status": "running",
            }
        )
        write_json(path, record)
    return invocation


def _finish_invocation(root: Path, workload: Workload, invocation: str, status: str, counts: dict[str, int]) -> None:
    """Record how the invocation ended in ``compare.json``: ``status`` ``"complete"`` (every run ran; each run's own
    status is in ``counts``), ``"interrupted"`` (Ctrl-C or SIGTERM) or ``"error: <exception type>"``, and when. An
    invocation killed outright stays ``"running"``. Best effort: a failure to write here never hides the
    comparison's own outcome (the runs' results are in their directories either way)."""
    path = root / workload.name / "compare.json"
    try:
        with locked(path):
            record = _read_invocations(path)
            for entry in record["invocations"]:
                if isinstance(entry, dict) and entry.get("id") == invocation:
                    entry.update(status=status, ended=now(), counts=counts)
                    write_json(path, record)
                    return
    except (OSError, ValueError):
        return


def _read_invocations(path: Path) -> dict[str, Any]:
    """An existing ``compare.json``; ``ValueError`` naming it when it cannot be read (never silently replaced)."""
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(record, dict) and isinstance(record.get("invocations"), list):
            return record
        problem = "not a theorylr compare record"
    raise ValueError(
        f"{path} cannot be read ({problem}); it only logs the earlier invocations: move or delete it and rerun"
    )
