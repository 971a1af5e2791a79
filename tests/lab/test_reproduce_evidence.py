"""`theorylr reproduce`: verdicts computed from evidence that can refute the claim."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from theorylr.lab.reproduce import DOES_NOT_HOLD, HOLDS, PARTLY, QUICK
from theorylr.lab.reproduce import exact_adam as ea
from theorylr.lab.reproduce import lars as lr_
from theorylr.lab.reproduce import lipschitz as lp
from theorylr.lab.reproduce._common import Context

# ----------------------------------------------------------------------------------------------------------------
# LARS: Theorem 2 and Corollary 2.1 are checked on a start far from w*, where the statement fails


def test_theorem2_far_start_refutes_the_stated_bound_but_not_the_corrected_one() -> None:
    data = lr_._theorem2(60, lr_._THM2_FAR)
    assert [r["lr"] for r in data["rows"]] == list(lr_._THM2.lrs)
    assert all(r["violations"] > 0 for r in data["rows"])  # the paper's C1 lacks ||w0 - w*||^2
    assert all(r["rigorous_violations"] == 0 for r in data["rows"])  # fixed_lr_bound holds


def test_corollary_far_start_has_a_step_count_the_run_exceeds() -> None:
    rows = lr_._corollary(lr_._COR_FAR_EPS, 2000, lr_._THM2_FAR)["rows"]
    assert [r["eps"] for r in rows] == list(lr_._COR_FAR_EPS)
    failed = [r for r in rows if not 0 < r["measured_steps"] <= r["predicted_steps"]]
    assert failed and failed[0]["eps"] == 5.0 and failed[0]["predicted_steps"] == 1


def test_theorem_claims_are_not_supported_by_the_benign_instance_alone(tmp_path: Path) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    steps = 60
    thm2, thm2_far = lr_._theorem2(steps), lr_._theorem2(steps, lr_._THM2_FAR)
    cor, cor_far = lr_._corollary((0.5,), 2000), lr_._corollary(lr_._COR_FAR_EPS, 2000, lr_._THM2_FAR)
    thm3 = lr_._theorem3(steps)
    assert all(r["violations"] == 0 for r in thm2["rows"])  # alone, this instance said "holds"
    claims = {c.id: c for c in lr_._claims_theorems(ctx, thm2, cor, thm3, "f.png", thm2_far, cor_far)}
    assert claims["lars-thm2"].verdict == PARTLY
    assert claims["lars-cor2.1"].verdict == PARTLY
    assert "(b)" in claims["lars-thm2"].measured and "fixed_lr_bound): 0 violations" in claims["lars-thm2"].measured
    assert "not reached in" in claims["lars-cor2.1"].measured
    assert "analytic/thm2_far.json" in claims["lars-thm2"].sources


# ----------------------------------------------------------------------------------------------------------------
# LipschitzLR: "never diverges" is refuted by a loss that ends far above where it started


class _Run:
    def __init__(self, train_loss: list[float], lr: float, status: str = "finished") -> None:
        self.status = status
        self.directory = Path("runs") / "run"
        self._columns = {"train_loss": np.array(train_loss), "lr": np.full(len(train_loss), lr)}

    def column(self, name: str) -> np.ndarray:
        return self._columns.get(name, np.full(len(self._columns["train_loss"]), math.nan))

    def final(self, name: str) -> float:
        return float(self.column(name)[-1])


class _Summary:
    def __init__(self, *runs: _Run) -> None:
        self.best_runs = list(runs)


def test_loss_went_up() -> None:
    assert lp.loss_went_up([0.956, 58.4, 12.9, 17.8])  # iris with the paper's 1/L in the quick run
    assert not lp.loss_went_up([2.3, 2.0, 1.0])
    assert lp.loss_went_up([2.3, math.inf])
    assert lp.loss_went_up([2.3])


def test_divergence_claim_counts_a_run_whose_loss_ended_above_its_start(tmp_path: Path) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    table1: dict[str, Any] = {"rows": []}
    blown_up = {  # finite all along (the lab's status is 'finished'), but 18x the initial loss at the end
        "lipschitz-sgd": _Summary(_Run([0.956, 58.4, 17.8], lr=1.92)),
        "lipschitz-sgd-rigorous": _Summary(_Run([0.956, 0.9, 0.79], lr=0.13)),
    }
    fine = {
        "lipschitz-sgd": _Summary(_Run([0.69, 0.6, 0.53], lr=4280.0)),
        "lipschitz-sgd-rigorous": _Summary(_Run([0.69, 0.69, 0.68], lr=195.0)),
    }
    claims = {c.id: c for c in lp._rigorous_claims(ctx, table1, {"iris": blown_up}, "t1.png", [])}  # type: ignore[dict-item]
    divergence = claims["lipschitz-rigorous-divergence"]
    assert divergence.verdict == DOES_NOT_HOLD
    assert "1 of 1" in divergence.measured and "non-finite: 0" in divergence.measured
    claims = {
        c.id: c
        for c in lp._rigorous_claims(ctx, table1, {"iris": blown_up, "breast_cancer": fine}, "t1.png", [])  # type: ignore[dict-item]
    }
    assert claims["lipschitz-rigorous-divergence"].verdict == PARTLY
    claims = {c.id: c for c in lp._rigorous_claims(ctx, table1, {"breast_cancer": fine}, "t1.png", [])}  # type: ignore[dict-item]
    assert claims["lipschitz-rigorous-divergence"].verdict == HOLDS


# ----------------------------------------------------------------------------------------------------------------
# exact-step Adam: the page's notes describe what the registered rule does


def test_exact_adam_note_matches_the_registered_rule() -> None:
    import inspect

    from theorylr.lab import rules

    assert "ctx.workload.init is not None" in inspect.getsource(rules.build_exact_adam)  # samples the workload's init
    source = inspect.getsource(ea.run_exact_adam)
    assert "registered exact-adam rule draws with torch's default scheme" not in source
