"""The lab: run theory-derived learning rates beside what a user would otherwise do, and report what paid off.

Workloads (:mod:`~theorylr.lab.workloads`) and rules (:mod:`~theorylr.lab.rules`) are registry rows; the runner
(:mod:`~theorylr.lab.runner`) runs every (rule, trial, seed) cell into its own directory, resumably; the report
(:mod:`~theorylr.lab.report`) is drawn from those files only. ``docs/lab.md`` describes the protocol.

Example:
    >>> import tempfile
    >>> import theorylr.lab as lab
    >>> out = tempfile.mkdtemp()
    >>> result = lab.compare("iris-softmax", ["adam", "sgd@0.1"], out=out, epochs=3, trials=2, verbose=False)
    >>> result.counts()
    {'finished': 3}
    >>> lab.report(out).markdown.name
    'report.md'
"""

from __future__ import annotations

from theorylr.lab.losses import LOSSES, LossSpec, get_loss
from theorylr.lab.range_test import RangeTestResult, lr_range_test
from theorylr.lab.report import ReportPaths, report
from theorylr.lab.results import Run, load_runs
from theorylr.lab.rules import (
    DEFAULT_RULES,
    KINDS,
    RULES,
    SCHEDULES,
    Rule,
    RuleContext,
    RuleSetup,
    RuleUnavailableError,
    get_rule,
    register_rule,
    resolve_rule,
)
from theorylr.lab.runner import (
    Cell,
    CellResult,
    CompareResult,
    ConfigMismatchError,
    WorkerDiedError,
    compare,
    evaluate,
    parse_seeds,
    plan_cells,
    run_cell,
)
from theorylr.lab.scores import RuleSummary, performance_profile, summarize
from theorylr.lab.tuning import LogGrid
from theorylr.lab.workloads import DEFAULT_WORKLOAD, WORKLOADS, Target, Workload, get_workload, register_workload

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_WORKLOAD",
    "KINDS",
    "LOSSES",
    "RULES",
    "SCHEDULES",
    "WORKLOADS",
    "Cell",
    "CellResult",
    "CompareResult",
    "ConfigMismatchError",
    "LogGrid",
    "LossSpec",
    "RangeTestResult",
    "ReportPaths",
    "Rule",
    "RuleContext",
    "RuleSetup",
    "RuleSummary",
    "RuleUnavailableError",
    "Run",
    "Target",
    "WorkerDiedError",
    "Workload",
    "compare",
    "evaluate",
    "get_loss",
    "get_rule",
    "get_workload",
    "load_runs",
    "lr_range_test",
    "parse_seeds",
    "performance_profile",
    "plan_cells",
    "register_rule",
    "register_workload",
    "report",
    "resolve_rule",
    "run_cell",
    "summarize",
]
