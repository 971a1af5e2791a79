"""Scores drawn from runs: best trials, time-to-target, the summary table and the performance profile.

Definitions (also in ``docs/lab.md``):

* **tuning score** of a trial: the median over its seeds of the workload's ``tuning_metric`` at the last epoch,
  oriented so that lower is better; a diverged or failed run scores ``+inf``. The **best trial** of a rule has the
  lowest score (ties: the lower trial index) among its trials whose runs have all ended (finished, diverged or
  failed); a trial with a run still going or interrupted competes only when no trial has ended, since its last
  epoch is not its final one (a report drawn while a comparison runs).
* **steps-/time-to-target**: the ``step`` and ``wall_time`` of the first evaluated epoch at which the workload's
  target is reached (``inf`` when never); the median over seeds (``inf`` when at least half never reach it: a run
  that never does counts as ``inf``).
* **cost-inclusive time-to-target** of a tuned rule, per seed: the wall time of every other trial with that seed
  plus the best trial's time-to-target; then the median over seeds. For untuned rules it equals the plain one
  (their estimates and range tests are inside their own wall time).
* **total compute**: the sum of the wall times of all the rule's runs (every trial and seed).
* **performance profile** (Dolan & Moré 2002, as in AlgoPerf): for each workload with a target, the ratio
  ``r = t(rule) / min over rules t``; ``rho_rule(tau)`` is the fraction of those workloads on which the rule's
  ratio is at most ``tau``.

Example:
    >>> performance_profile({"w1": {"a": 1.0, "b": 2.0}, "w2": {"a": 3.0, "b": 3.0}}, [1.0, 2.0])
    {'a': [1.0, 1.0], 'b': [0.5, 1.0]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from theorylr.lab.results import Run, group_runs
from theorylr.lab.workloads import METRICS, Target

__all__ = [
    "ENDED",
    "RuleSummary",
    "best_trial",
    "performance_profile",
    "summarize",
    "summarize_rule",
    "target_of",
    "time_to_target",
    "tuning_score",
]

BAD = ("diverged", "failed")
ENDED = ("finished", *BAD)


def target_of(run: Run) -> Target | None:
    """The workload's target as recorded in the run's ``config.json``."""
    spec = run.config["workload"].get("target")
    if not spec:
        return None
    return Target(str(spec["metric"]), float(spec["value"]))


def tuning_metric_of(run: Run) -> str:
    """The workload's tuning metric as recorded in ``config.json``."""
    return str(run.config["workload"].get("tuning_metric", "train_loss"))


def _median(values: Sequence[float]) -> float:
    finite_or_inf = [v for v in values if not math.isnan(v)]
    return float(np.median(finite_or_inf)) if finite_or_inf else math.nan


def tuning_score(runs: Sequence[Run], metric: str) -> float:
    """Median over seeds of the final ``metric``, lower is better (accuracies negated); ``inf`` for bad runs."""
    sign = -1.0 if METRICS.get(metric, False) else 1.0
    values = []
    for run in runs:
        value = run.final(metric)
        values.append(math.inf if run.status in BAD or not math.isfinite(value) else sign * value)
    return _median(values)


def best_trial(trials: Mapping[int, Sequence[Run]], metric: str) -> int:
    """The trial index with the lowest :func:`tuning_score` (ties and all-inf: the lowest index), among the trials
    whose runs have all ended when there is one: an unfinished run's last epoch is not its final one."""
    scores = {t: tuning_score(runs, metric) for t, runs in sorted(trials.items())}
    ended = {t for t, runs in trials.items() if all(r.status in ENDED for r in runs)}
    return min(scores, key=lambda t: (t not in ended, scores[t] if not math.isnan(scores[t]) else math.inf, t))


def time_to_target(run: Run, target: Target) -> tuple[float, float]:
    """``(steps, seconds)`` at the first evaluation that reaches ``target`` (``(inf, inf)`` when none does)."""
    values = run.column(target.metric)
    steps, times = run.column("step"), run.column("wall_time")
    for i, value in enumerate(values):
        if target.reached(float(value)):
            return float(steps[i]), float(times[i])
    return math.inf, math.inf


@dataclass
class RuleSummary:
    """One row of a workload's summary table (the best trial's seeds, plus cost over all trials)."""

    workload: str
    rule: str
    kind: str
    tuned: bool
    trials: int
    best_trial: int
    lr: float
    seeds: int
    final_train_loss: float
    final_grad_norm: float
    best_test_accuracy: float
    final_test_loss: float
    steps_to_target: float
    time_to_target: float
    time_to_target_cost_inclusive: float
    reached: int
    diverged: int
    failed: int
    runs: int
    total_compute: float
    best_runs: list[Run] = field(default_factory=list, repr=False)
    trial_scores: dict[int, tuple[float, float]] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """The summary's scalar fields."""
        return {k: v for k, v in self.__dict__.items() if k not in ("best_runs", "trial_scores")}


def summarize_rule(rule: str, trials: Mapping[int, list[Run]]) -> RuleSummary:
    """One rule's :class:`RuleSummary` from its runs by trial (the best trial by the workload's tuning metric)."""
    first = next(iter(trials.values()))[0]
    metric = tuning_metric_of(first)
    best = best_trial(trials, metric)
    best_runs = sorted(trials[best], key=lambda r: r.seed)
    target = target_of(first)
    all_runs = [r for runs in trials.values() for r in runs]

    def final_or_inf(run: Run, name: str) -> float:
        return math.inf if run.status in BAD else run.final(name)

    ttt, stt, cost_ttt = [], [], []
    for run in best_runs:
        steps, seconds = time_to_target(run, target) if target is not None else (math.nan, math.nan)
        stt.append(steps)
        ttt.append(seconds)
        others = sum(
            _finite(r.wall_time) for t, runs in trials.items() if t != best for r in runs if r.seed == run.seed
        )
        cost_ttt.append(seconds + others)
    accuracies = [float(np.nanmax(r.column("test_accuracy"))) for r in best_runs if _has(r, "test_accuracy")]
    return RuleSummary(
        workload=first.workload,
        rule=rule,
        kind=first.kind,
        tuned=first.tuned,
        trials=len(trials),
        best_trial=best,
        lr=best_runs[0].lr,
        seeds=len(best_runs),
        final_train_loss=_median([final_or_inf(r, "train_loss") for r in best_runs]),
        final_grad_norm=_median([final_or_inf(r, "grad_norm") for r in best_runs]),
        best_test_accuracy=_median(accuracies) if accuracies else math.nan,
        final_test_loss=_median([final_or_inf(r, "test_loss") for r in best_runs]),
        steps_to_target=_median(stt),
        time_to_target=_median(ttt),
        time_to_target_cost_inclusive=_median(cost_ttt),
        reached=sum(math.isfinite(t) for t in ttt),
        diverged=sum(r.status == "diverged" for r in all_runs),
        failed=sum(r.status == "failed" for r in all_runs),
        runs=len(all_runs),
        total_compute=sum(_finite(r.wall_time) for r in all_runs),
        best_runs=best_runs,
        trial_scores={t: (runs[0].lr, tuning_score(runs, metric)) for t, runs in sorted(trials.items())},
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _has(run: Run, name: str) -> bool:
    column = run.column(name)
    return bool(column.size) and not bool(np.all(np.isnan(column)))


def summarize(runs: Sequence[Run]) -> dict[str, list[RuleSummary]]:
    """``{workload: [RuleSummary per rule]}``, rules in order of kind (theory, lr-free, tuned, baseline), name."""
    order = {"theory": 0, "lr-free": 1, "tuned": 2, "baseline": 3}
    out: dict[str, list[RuleSummary]] = {}
    for workload, rules in group_runs(runs).items():
        rows = [summarize_rule(rule, trials) for rule, trials in rules.items()]
        rows.sort(key=lambda s: (order.get(s.kind, 9), s.rule))
        out[workload] = rows
    return out


def performance_profile(times: Mapping[str, Mapping[str, float]], taus: Sequence[float]) -> dict[str, list[float]]:
    """``rho_rule(tau)`` for each rule from ``{workload: {rule: time-to-target}}``.

    Workloads where no rule reaches the target are left out; a rule absent from a workload (or never reaching the
    target there) counts as not within any ``tau``.
    """
    rules = sorted({rule for per in times.values() for rule in per})
    usable = {w: per for w, per in times.items() if any(math.isfinite(t) for t in per.values())}
    out: dict[str, list[float]] = {}
    for rule in rules:
        fractions = []
        for tau in taus:
            hits = 0
            for per in usable.values():
                best = min(t for t in per.values() if math.isfinite(t))
                value = per.get(rule, math.inf)
                if math.isfinite(value) and value <= tau * best:
                    hits += 1
            fractions.append(hits / len(usable) if usable else math.nan)
        out[rule] = fractions
    return out
