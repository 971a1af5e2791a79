"""PNG figures for the report, drawn from runs read back from files (matplotlib's Agg backend).

Every function takes :class:`~theorylr.lab.scores.RuleSummary` rows (each holding its best trial's runs) or plain
numbers, writes one PNG and returns its path, or ``None`` when there is nothing to draw. Curves are the median over
seeds with a min-max band; a rule keeps its colour in every figure, and its kind sets the line style (theory solid,
lr-free dashed, tuned dotted, baseline dash-dot). matplotlib is imported inside the functions, so importing
:mod:`theorylr.lab` stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from theorylr.lab.results import Run
from theorylr.lab.scores import RuleSummary

__all__ = [
    "STANDARD_COLUMNS",
    "color_map",
    "estimate_columns",
    "plot_curves",
    "plot_estimates",
    "plot_lr",
    "plot_profile",
    "plot_trust_ratios",
    "plot_tuning",
]

#: Columns every run has; everything else in ``metrics.csv`` is rule-specific.
STANDARD_COLUMNS = (
    "epoch",
    "step",
    "wall_time",
    "train_loss",
    "train_accuracy",
    "grad_norm",
    "test_loss",
    "test_accuracy",
    "lr",
    "effective_lr",
)
_STYLES = {"theory": "-", "lr-free": "--", "tuned": ":", "baseline": "-."}


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float],
    squeeze: bool = True,
    layout: Literal["constrained"] | None = None,
) -> tuple[Any, Any]:
    """A figure and its grid of axes, as ``plt.subplots`` gives, but drawn on a bare ``matplotlib.figure.Figure``:
    pyplot is never imported, so the caller's backend and figure registry are left as they were (``plt.subplots``
    would need ``matplotlib.use("Agg")``, which switches a notebook's inline backend). matplotlib is imported here,
    so importing the package stays cheap.

    Example:
        >>> fig, axes = subplots(1, 2, figsize=(4, 2))
        >>> len(axes), type(fig).__name__
        (2, 'Figure')
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def color_map(names: Sequence[str]) -> dict[str, Any]:
    """A colour per rule name, in the order given (pass the same map to every figure of a report)."""
    import matplotlib

    palette = [color for name in ("tab10", "Dark2", "Set1") for color in cast(Any, matplotlib.colormaps[name]).colors]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _colors(names: Sequence[str], given: Mapping[str, Any] | None) -> dict[str, Any]:
    if given is not None and all(n in given for n in names):
        return dict(given)
    return color_map(names)


def _stack(runs: Sequence[Run], column: str) -> np.ndarray:
    """Runs x epochs, NaN-padded to the longest run."""
    columns = [r.column(column) for r in runs]
    length = max((c.size for c in columns), default=0)
    out = np.full((len(columns), length), np.nan)
    for i, c in enumerate(columns):
        out[i, : c.size] = c
    return out


def _band(
    runs: Sequence[Run], column: str, after_divergence: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max over seeds at each epoch (NaN where no seed has a value).

    With ``after_divergence`` (the metric's worst value: ``inf`` for a loss, ``-inf`` for an accuracy), a diverged
    seed takes that value in the epochs after its last row, for the median: the median is not that of the seeds
    left over, which would draw one surviving seed of two as "the median". The min and max are those of the finite
    values (the seeds still training)."""
    data = _stack(runs, column)
    if data.size == 0:
        empty = np.array([])
        return empty, empty, empty
    if after_divergence is not None:
        for i, run in enumerate(runs):
            if run.status == "diverged":
                data[i, run.column(column).size :] = after_divergence
    with np.errstate(all="ignore"):
        valid = ~np.all(np.isnan(data), axis=0)
        med = np.full(data.shape[1], np.nan)
        lo, hi = med.copy(), med.copy()
        med[valid] = np.nanmedian(data[:, valid], axis=0)
        finite = np.where(np.isfinite(data), data, np.nan)
        some = np.any(np.isfinite(data), axis=0)
        lo[some] = np.nanmin(finite[:, some], axis=0)
        hi[some] = np.nanmax(finite[:, some], axis=0)
    return med, lo, hi


def _last_finite(run: Run, column: str, x: str) -> tuple[float, float] | None:
    """``(x, value)`` at the last row of ``run`` where ``column`` is finite (None when there is none)."""
    values, xs = run.column(column), run.column(x)
    n = min(values.size, xs.size)
    finite = np.nonzero(np.isfinite(values[:n]) & np.isfinite(xs[:n]))[0]
    return None if finite.size == 0 else (float(xs[finite[-1]]), float(values[finite[-1]]))


def _has(runs: Sequence[Run], column: str) -> bool:
    return any(np.any(np.isfinite(r.column(column))) for r in runs)


def _positive_log(ax: Any, values: np.ndarray) -> None:
    """A log y-axis when every finite value is positive (and there is one)."""
    finite = values[np.isfinite(values)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")


def _log_if_any_positive(ax: Any, values: Sequence[np.ndarray]) -> None:
    """A log y-axis when some finite value is positive (matplotlib masks the others); linear otherwise, since a
    log axis with nothing positive on it cannot be drawn."""
    if any(np.any(np.isfinite(v) & (v > 0)) for v in values):
        ax.set_yscale("log")


def plot_curves(
    summaries: Sequence[RuleSummary],
    path: str | Path,
    *,
    x: str = "epoch",
    title: str = "",
    colors: Mapping[str, Any] | None = None,
) -> Path | None:
    """Train loss, gradient norm and test accuracy (test loss for regression) against ``x`` (``"epoch"`` or
    ``"wall_time"``): the median over seeds of each rule's best trial, with a min-max band.

    A seed that diverged counts as the worst value (an infinite loss, an accuracy of ``-inf``) after its last row,
    so the median line ends once half the seeds have diverged; the band spans the seeds that have not, and an
    ``x`` marks each diverged seed's last finite value."""
    rows = [s for s in summaries if s.best_runs and any(r.rows for r in s.best_runs)]
    if not rows:
        return None
    colors = _colors([s.rule for s in summaries], colors)
    classification = any(_has(s.best_runs, "test_accuracy") for s in rows)
    panels = [("train_loss", "train loss"), ("grad_norm", "full-batch gradient norm")]
    panels.append(("test_accuracy", "test accuracy") if classification else ("test_loss", "test loss"))
    fig, axes = subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    diverged = False
    for ax, (column, label) in zip(axes, panels):
        gathered = []
        for s in rows:
            worst = -math.inf if column == "test_accuracy" else math.inf
            med, lo, hi = _band(s.best_runs, column, after_divergence=worst)
            xs, _, _ = _band(s.best_runs, x)
            if med.size == 0:
                continue
            n = min(xs.size, med.size)
            ax.plot(xs[:n], med[:n], _STYLES.get(s.kind, "-"), color=colors[s.rule], label=s.rule, lw=1.5)
            if len(s.best_runs) > 1:
                ax.fill_between(xs[:n], lo[:n], hi[:n], color=colors[s.rule], alpha=0.15, lw=0)
            found = [_last_finite(r, column, x) for r in s.best_runs if r.status == "diverged"]
            ends = [e for e in found if e is not None]
            if ends:
                diverged = True
                ax.plot(*zip(*ends), "x", color=colors[s.rule], ms=7, mew=1.5)
                gathered.append(np.array([v for _, v in ends]))
            gathered.append(med[:n])
        if column != "test_accuracy" and gathered:
            _positive_log(ax, np.concatenate(gathered))
        ax.set_xlabel("epoch" if x == "epoch" else "wall time (s, set-up and training)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if diverged:  # one legend entry for the markers
        axes[0].plot([], [], "x", color="0.3", ms=7, mew=1.5, label="a seed diverged (its last finite value)")
    _legend(fig, axes[0])
    fig.suptitle(title or f"{rows[0].workload}: best trial per rule, median over seeds (diverged ones count as worst)")
    return _save(fig, path)


def plot_lr(
    summaries: Sequence[RuleSummary], path: str | Path, *, title: str = "", colors: Mapping[str, Any] | None = None
) -> Path | None:
    """The effective learning rate against the epoch (``effective_lr`` where the rule logs it, else the group lr;
    LARS' per-layer factor is in :func:`plot_trust_ratios`), seed median."""
    rows = [s for s in summaries if s.best_runs and (_has(s.best_runs, "effective_lr") or _has(s.best_runs, "lr"))]
    if not rows:
        return None
    colors = _colors([s.rule for s in summaries], colors)
    fig, ax = subplots(figsize=(9, 5), layout="constrained")
    drawn = []
    for s in rows:
        column = "effective_lr" if _has(s.best_runs, "effective_lr") else "lr"
        med, _, _ = _band(s.best_runs, column)
        epochs, _, _ = _band(s.best_runs, "epoch")
        n = min(med.size, epochs.size)
        with np.errstate(invalid="ignore"):
            positive = np.where(med[:n] > 0, med[:n], np.nan)
        ax.plot(epochs[:n], positive, _STYLES.get(s.kind, "-"), color=colors[s.rule], label=s.rule, lw=1.5)
        drawn.append(positive)
    _log_if_any_positive(ax, drawn)
    ax.set_xlabel("epoch")
    ax.set_ylabel("effective learning rate (after the epoch)")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    ax.set_title(title or f"{rows[0].workload}: learning rate per rule")
    return _save(fig, path)


def plot_trust_ratios(summaries: Sequence[RuleSummary], path: str | Path) -> Path | None:
    """Per-layer trust ratios ``||w|| / ||g||`` of the LARS-family rules (their first seed), one panel per rule."""
    rows = []
    for s in summaries:
        if s.best_runs:
            columns = [c for c in s.best_runs[0].columns() if c.startswith("trust_ratio/")]
            if columns:
                rows.append((s, columns))
    if not rows:
        return None
    fig, axes = subplots(1, len(rows), figsize=(6.5 * len(rows), 4.6), squeeze=False, layout="constrained")
    for ax, (s, columns) in zip(axes[0], rows):
        run = s.best_runs[0]
        epochs = run.column("epoch")
        for column in columns:
            ax.plot(epochs, run.column(column), lw=1.2, label=column.removeprefix("trust_ratio/"))
        _log_if_any_positive(ax, [run.column(c) for c in columns])
        ax.set_xlabel("epoch")
        ax.set_ylabel("trust ratio")
        ax.set_title(f"{s.rule} (seed {run.seed})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, ncol=2, loc="upper right")
    return _save(fig, path)


def estimate_columns(summaries: Sequence[RuleSummary]) -> list[str]:
    """Rule-specific scalar columns (K_hat, L, K_z, weight bounds, d, ...): everything but the standard columns
    and the trust ratios."""
    out: list[str] = []
    for s in summaries:
        for run in s.best_runs[:1]:
            for column in run.columns():
                if column not in STANDARD_COLUMNS and not column.startswith("trust_ratio/") and column not in out:
                    out.append(column)
    return out


def plot_estimates(
    summaries: Sequence[RuleSummary], path: str | Path, *, colors: Mapping[str, Any] | None = None
) -> Path | None:
    """Each rule-specific estimate (K_hat, L, K_z, ...) against the epoch, one panel per quantity, seed median."""
    columns = estimate_columns(summaries)
    if not columns:
        return None
    colors = _colors([s.rule for s in summaries], colors)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False, layout="constrained")
    for ax, column in zip(axes.flat, columns):
        values = []
        for s in summaries:
            if not s.best_runs or not _has(s.best_runs, column):
                continue
            med, _, _ = _band(s.best_runs, column)
            epochs, _, _ = _band(s.best_runs, "epoch")
            n = min(med.size, epochs.size)
            ax.plot(epochs[:n], med[:n], _STYLES.get(s.kind, "-"), color=colors[s.rule], label=s.rule, marker=".")
            values.append(med[:n])
        if values:
            _positive_log(ax, np.concatenate(values))
        ax.set_title(column)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    fig.suptitle("the rules' own estimates (smoothness, Lipschitz constants, step-size factors)")
    return _save(fig, path)


def plot_tuning(
    summaries: Sequence[RuleSummary], path: str | Path, *, metric: str, colors: Mapping[str, Any] | None = None
) -> Path | None:
    """The tuning score (median final ``metric`` over seeds) against each trial's lr, for the tuned rules.

    A trial without a finite score (diverged or failed) is a dotted vertical line at its lr; when no trial has a
    finite score, the figure says so (and the score axis stays linear)."""
    rows = [s for s in summaries if s.tuned and len(s.trial_scores) > 1]
    if not rows:
        return None
    colors = _colors([s.rule for s in summaries], colors)
    fig, ax = subplots(figsize=(8, 5), layout="constrained")
    higher = metric.endswith("accuracy")
    finite: list[float] = []
    for s in rows:
        lrs = [lr for lr, _ in s.trial_scores.values()]
        scores = [(-v if higher else v) for _, v in s.trial_scores.values()]
        shown = [v if math.isfinite(v) else np.nan for v in scores]
        finite += [v for v in scores if math.isfinite(v)]
        ax.plot(lrs, shown, _STYLES.get(s.kind, "-"), color=colors[s.rule], marker="o", label=s.rule)
        best_lr, best_score = s.trial_scores[s.best_trial]
        if math.isfinite(best_score):
            ax.plot([best_lr], [-best_score if higher else best_score], "*", color=colors[s.rule], ms=14)
        for lr, v in zip(lrs, scores):
            if not math.isfinite(v):
                ax.axvline(lr, color=colors[s.rule], alpha=0.3, ls=":")
    ax.set_xscale("log")
    if not higher:
        _positive_log(ax, np.asarray(finite, dtype=float))
    if not finite:
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "nothing to plot: no trial has a finite score\n(every trial of every tuned rule diverged or failed)",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    ax.set_xlabel("learning rate (trial)")
    ax.set_ylabel(f"final {metric} (median over seeds)")
    ax.set_title("tuning: every trial (star = best; dotted line = diverged or failed)")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax)
    return _save(fig, path)


def plot_profile(
    profiles: Mapping[str, Mapping[str, Sequence[float]]],
    taus: Sequence[float],
    kinds: Mapping[str, str],
    path: str | Path,
    *,
    colors: Mapping[str, Any] | None = None,
) -> Path | None:
    """Performance profiles (one panel per view, e.g. best trial and cost-inclusive): ``rho(tau)`` per rule."""
    if not profiles or all(not p for p in profiles.values()):
        return None
    names = sorted({rule for p in profiles.values() for rule in p})
    colors = _colors(names, colors)
    fig, axes = subplots(1, len(profiles), figsize=(7 * len(profiles), 4.8), squeeze=False, layout="constrained")
    for ax, (view, profile) in zip(axes[0], profiles.items()):
        for rule, values in profile.items():
            ax.step(
                taus, values, where="post", ls=_STYLES.get(kinds.get(rule, ""), "-"), color=colors[rule], label=rule
            )
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("tau (time-to-target / fastest rule's)")
        ax.set_ylabel("fraction of workloads within tau")
        ax.set_title(f"performance profile: {view}")
        ax.grid(alpha=0.3, which="both")
    _legend(fig, axes[0][0])
    return _save(fig, path)


def _legend(fig: Any, ax: Any) -> None:
    """One legend for the figure, outside the axes on the right (no overlap search: fast and never hiding data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def _save(fig: Any, path: str | Path) -> Path:
    import io

    from theorylr.lab._files import atomic_write_bytes

    target = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    atomic_write_bytes(target, buffer.getvalue())
    return target
