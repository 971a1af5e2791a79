"""The fair tuning protocol: a log-grid over the learning rate with a budget of ``k`` trials.

Tuned rules (kind ``"tuned"``) carry a :class:`LogGrid`; ``compare --trials k`` runs ``k`` trials, trial ``i``
using the ``i``-th point of the grid, each with every seed. The report then shows two views (``docs/lab.md``):

* **best trial** -- the trial whose median over seeds of the workload's tuning metric (final epoch) is best, as if
  the right lr had been known in advance;
* **cost-inclusive** -- the same trial, charged with the compute of all ``k`` trials (for each seed, the wall time
  of every other trial plus the best trial's own time). Theory rules pay their K/L estimation and range tests
  inside their own runtime, so they need no such charge.

The grid is deterministic (no random search), so a results directory can be extended or resumed: the same ``k``
always gives the same learning rates.

Example:
    >>> LogGrid(1e-4, 1e-1).points(4)
    [0.0001, 0.001, 0.01, 0.1]
    >>> LogGrid(1e-3, 1e-1).points(1)
    [0.01]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from theorylr._validation import check_int, check_number

__all__ = ["LogGrid"]


@dataclass(frozen=True)
class LogGrid:
    """Learning rates spaced evenly in log scale between ``low`` and ``high`` (both included when ``k >= 2``).

    With one trial the grid is its geometric midpoint ``sqrt(low * high)``. Points are rounded to 6 significant
    digits so that directory names and JSON files stay readable.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        check_number("low", self.low, min_value=0.0, min_inclusive=False)
        check_number("high", self.high, min_value=self.low)

    def points(self, k: int) -> list[float]:
        """The ``k`` learning rates of a budget of ``k`` trials."""
        check_int("trials", k, min_value=1)
        lo, hi = math.log10(self.low), math.log10(self.high)
        exponents = [(lo + hi) / 2.0] if k == 1 else [lo + (hi - lo) * i / (k - 1) for i in range(k)]
        return [float(f"{10.0**e:.6g}") for e in exponents]
