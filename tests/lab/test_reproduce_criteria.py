"""The reproduce criteria and the report's lr column at their boundaries: gaps a mutation review of
theorylr.lab.reproduce and theorylr.lab.report found (115 mutants, 48 gaps; each docstring names the mutation), and
a bug it found ("never diverges" skipped a workload whose rigorous rule did not run)."""

from __future__ import annotations

import math
from typing import Any

from tests.lab.test_reproduce_evidence import _Run, _Summary
from theorylr.lab.reproduce import DOES_NOT_HOLD, HOLDS, PARTLY
from theorylr.lab.reproduce import exact_adam as ea
from theorylr.lab.reproduce.claims import verdict_ratio


def test_verdict_ratio_accepts_equal_thresholds() -> None:
    """claims.py:107 ``holds_below <= partly_below`` -> ``<``: equal thresholds (no 'partly' band) are allowed."""
    assert verdict_ratio(2.0, 2.0, 2.0) == HOLDS
    assert verdict_ratio(2.5, 2.0, 2.0) == DOES_NOT_HOLD


def test_learned_anything_uses_ten_classes() -> None:
    """exact_adam.py:135 ``learned([accuracy], 10)`` -> 11: chance + 0.05 is 0.15, not 1/11 + 0.05 = 0.141."""
    assert ea.learned_anything(0.145) is False
    assert ea.learned_anything(0.151) is True


def test_beats_all_with_no_other_rule_or_an_infinite_exact_value() -> None:
    """exact_adam.py:145 ``not isfinite(exact) or not others`` -> ``and``: nothing to beat is no win, and an
    infinite value never wins, even against rules that did not run (NaN)."""
    assert ea.beats_all(0.1, {}) is False
    assert ea.beats_all(math.inf, {"a": math.nan}) is False


def test_beats_all_must_beat_every_rule() -> None:
    """exact_adam.py:147 ``all(...)`` -> ``any(...)``: beating one rule of two is not beating all."""
    assert ea.beats_all(0.1, {"a": 0.2, "b": 0.05}) is False


def test_competitive_is_false_when_no_other_accuracy_is_finite() -> None:
    """exact_adam.py:160 ``not finite_acc or not finite_loss`` -> ``and``: no finite accuracy to compare with."""
    assert ea.competitive(0.9, 0.1, [math.nan], [0.05]) is False
    assert ea.competitive(0.9, 0.1, [0.9], [math.inf]) is False


def test_competitive_accepts_exactly_the_slack() -> None:
    """exact_adam.py:162 ``>=`` -> ``>``: an accuracy exactly 2 points below the best is competitive (the existing
    test's 0.93 vs 0.95 - 0.02 is not a tie in floating point: 0.95 - 0.02 < 0.93)."""
    best = 0.95
    assert ea.competitive(best - ea._ACCURACY_SLACK, 0.1, [best], [0.05]) is True


def test_competitive_compares_with_the_best_accuracy_not_the_worst() -> None:
    """exact_adam.py:162 ``max(finite_acc)`` -> ``min``: 0.90 is not within 2 points of the best 0.95."""
    assert ea.competitive(0.90, 0.1, [0.95, 0.5], [0.05, 0.08]) is False


def test_competitive_compares_with_the_best_loss_not_the_worst() -> None:
    """exact_adam.py:162 ``min(finite_loss)`` -> ``max``: 0.3 is more than twice the best loss 0.1."""
    assert ea.competitive(0.95, 0.3, [0.95, 0.9], [0.1, 1.0]) is False


def test_batch_size_verdict_needs_a_strict_fall() -> None:
    """exact_adam.py:179 ``b < a`` -> ``<=`` and :181 ``ordered[-1] < ordered[0]`` -> ``<=``: a flat step is not a
    fall (partly at most), and a largest batch that ends level with the smallest is not even partly."""
    assert ea.batch_size_verdict([(64.0, 0.3), (256.0, 0.3), (math.inf, 0.1)]) == PARTLY
    assert ea.batch_size_verdict([(64.0, 0.3), (256.0, 0.4), (math.inf, 0.3)]) == DOES_NOT_HOLD


def test_batch_size_verdict_partly_compares_the_largest_batch_with_the_smallest() -> None:
    """exact_adam.py:181 ``ordered[0]`` -> ``ordered[1]``: with four sizes, ending below the second is not enough."""
    assert ea.batch_size_verdict([(64.0, 0.3), (128.0, 0.5), (256.0, 0.6), (math.inf, 0.4)]) == DOES_NOT_HOLD


def test_theorem4_checks_boundaries() -> None:
    """exact_adam.py:195: ``all`` -> ``any`` (one fall of the median fails), ``<=`` -> ``<`` (a spread of exactly
    half passes) and ``0.5 *`` -> ``0.5 /`` (0.3 is more than half of 0.5); the spread is compared with the
    smallest N's, not the second's."""
    assert ea.theorem4_checks([1, 2, 4], [1.0, 2.0, 1.5], [1.0, 0.8, 0.45]) == [False, True]
    assert ea.theorem4_checks([1, 2], [1.0, 1.0], [1.0, 0.5]) == [True, True]
    assert ea.theorem4_checks([1, 2], [1.0, 1.0], [0.5, 0.3]) == [True, False]


def test_pairs_verdict_a_tie_or_the_slack_matches() -> None:
    """lipschitz.py:110 ``a >= b - 0.005``: ``>=`` -> ``>`` (exactly the slack below still matches) and ``-`` -> ``+``
    (an equal accuracy matches: Table 3's claim is "matches or beats")."""
    from theorylr.lab.reproduce import lipschitz as lp

    assert lp.pairs_verdict([(0.5, 0.5)]) == HOLDS
    assert lp.pairs_verdict([(0.5 - lp._ACC_SLACK, 0.5)]) == HOLDS
    assert lp.pairs_verdict([(0.49, 0.5)]) == DOES_NOT_HOLD


def test_lr_verdict_thresholds() -> None:
    """lipschitz.py:123 ``verdict_ratio(0.1 / median_lr if median_lr > 0 else inf, 1.0, 10.0)``: holds from lr 0.1,
    partly from 0.01, fails below, and a zero median lr fails (no division by zero); mutants 1.0 -> 2.0,
    10.0 -> 20.0, ``/`` -> ``*``, ``>`` -> ``>=``."""
    from theorylr.lab.reproduce import lipschitz as lp

    assert lp.lr_verdict(0.1, 0.9, [0.9]) == HOLDS
    assert lp.lr_verdict(0.07, 0.9, [0.9]) == PARTLY
    assert lp.lr_verdict(0.01, 0.9, [0.9]) == PARTLY
    assert lp.lr_verdict(0.005, 0.9, [0.9]) == DOES_NOT_HOLD
    assert lp.lr_verdict(0.0, 0.9, [0.9]) == DOES_NOT_HOLD


def test_median_lr_of_a_rule_that_did_not_run_is_nan() -> None:
    """lipschitz.py:449 ``summary is None or not summary.best_runs`` -> ``and``: a missing rule has no lr."""
    from theorylr.lab.reproduce import lipschitz as lp

    assert math.isnan(lp._median_lr(None))


def test_loss_went_up_is_strict_and_needs_two_values() -> None:
    """lipschitz.py:470 ``len(values) < 2`` -> ``<=`` (or 2 -> 3) and :472 ``>`` -> ``>=``: a run of two evaluations
    whose loss fell converged, and a loss that ended level with its start did not go up."""
    from theorylr.lab.reproduce import lipschitz as lp

    assert lp.loss_went_up([1.0, 0.5]) is False
    assert lp.loss_went_up([1.0, 0.9, 1.0]) is False


def _rigorous(tmp_path: Any, lab: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from theorylr.lab.reproduce import QUICK
    from theorylr.lab.reproduce import lipschitz as lp
    from theorylr.lab.reproduce._common import Context

    ctx = Context(tmp_path, QUICK, verbose=False)
    return {c.id: c for c in lp._rigorous_claims(ctx, {"rows": []}, lab, "t1.png", [])}  # type: ignore[arg-type]


def test_rigorous_speed_skips_a_workload_without_the_rigorous_rule(tmp_path: Any) -> None:
    """lipschitz.py:702 ``paper is None or rig is None`` -> ``and``: a workload where only one of the two rules ran
    is no setting (not a failed comparison against NaN)."""
    only_paper = {"iris": {"lipschitz-sgd": _Summary(_Run([1.0, 0.5], lr=2.0))}}
    claims = _rigorous(tmp_path, only_paper)
    assert claims["lipschitz-rigorous-speed"].verdict == "not run (no setting ran)"


def test_never_diverges_counts_a_workload_without_the_rigorous_rule(tmp_path: Any) -> None:
    """ "Training with the paper's 1/L never diverges" is a claim about every lipschitz-sgd run: a workload whose
    rigorous rule did not run was skipped, so a run whose loss rose 50x read "0 of 2 ... holds"."""
    lab = {
        "iris": {"lipschitz-sgd": _Summary(_Run([1.0, 50.0], lr=2.0))},
        "wine": {
            "lipschitz-sgd": _Summary(_Run([1.0, 0.5], lr=2.0)),
            "lipschitz-sgd-rigorous": _Summary(_Run([1.0, 0.7], lr=0.2)),
        },
    }
    claims = _rigorous(tmp_path, lab)
    divergence = claims["lipschitz-rigorous-divergence"]
    assert divergence.verdict == DOES_NOT_HOLD and "1 of 2 (iris 1, wine 0" in divergence.measured
    assert claims["lipschitz-rigorous-speed"].measured == "wine: loss 0.5 (paper L) vs 0.7 (rigorous), lr ratio 10"


def test_rigorous_speed_a_tie_is_not_faster(tmp_path: Any) -> None:
    """lipschitz.py:706 ``lp < lr_`` -> ``<=``: the same final loss with both constants is not "trains faster"."""
    tie = {
        "iris": {
            "lipschitz-sgd": _Summary(_Run([1.0, 0.5], lr=2.0)),
            "lipschitz-sgd-rigorous": _Summary(_Run([1.0, 0.5], lr=0.2)),
        }
    }
    assert _rigorous(tmp_path, tie)["lipschitz-rigorous-speed"].verdict == DOES_NOT_HOLD


def test_rigorous_speed_table1_neither_reaching_the_threshold_is_not_faster(tmp_path: Any) -> None:
    """lipschitz.py:719 ``e_l < e_b`` -> ``<=``: two 'not reached' (inf) are not "fewer epochs with the paper's L"."""
    from theorylr.lab.reproduce import QUICK
    from theorylr.lab.reproduce import lipschitz as lp
    from theorylr.lab.reproduce._common import Context

    ctx = Context(tmp_path, QUICK, verbose=False)
    table1 = {"rows": [{"dataset": "iris", "epochs 1/L": math.inf, "epochs 1/B": math.inf}]}
    claims = {c.id: c for c in lp._rigorous_claims(ctx, table1, {}, "t1.png", [])}
    assert claims["lipschitz-rigorous-speed"].verdict == DOES_NOT_HOLD


def test_rigorous_divergence_prints_the_lr_ratio_range(tmp_path: Any) -> None:
    """lipschitz.py:759 ``min(ratios)`` -> ``max``: the measured text gives the smallest .. largest lr ratio."""
    lab = {
        "iris": {
            "lipschitz-sgd": _Summary(_Run([1.0, 0.5], lr=2.0)),
            "lipschitz-sgd-rigorous": _Summary(_Run([1.0, 0.7], lr=0.2)),
        },
        "wine": {
            "lipschitz-sgd": _Summary(_Run([1.0, 0.5], lr=1.0)),
            "lipschitz-sgd-rigorous": _Summary(_Run([1.0, 0.7], lr=0.2)),
        },
    }
    assert "lr ratio 5 .. 10" in _rigorous(tmp_path, lab)["lipschitz-rigorous-divergence"].measured


def test_fig2_speed_level_with_a_rule_missing_or_ending_at_the_start() -> None:
    """lars.py:342 ``k in finals and isfinite`` -> ``or`` (a rule that did not run is left out, no KeyError) and
    :343 ``v < initial`` -> ``<=`` (a rule that ended at its initial loss did not decrease)."""
    from theorylr.lab.reproduce import lars as lr_

    assert lr_.fig2_speed_level({"lars": 0.5}, 1.0) == 0.75
    assert lr_.fig2_speed_level({"lars": 0.5, "gd": 1.0}, 1.0) == 0.75


def test_fig2_epochs_to_level_counts_a_final_exactly_at_the_level() -> None:
    """lars.py:356 ``final <= level`` -> ``<``."""
    from theorylr.lab.reproduce import lars as lr_

    assert lr_.fig2_epochs_to_level(3.0, 0.75, 0.75) == 3.0


def test_early_speed_verdict_zero_steps_is_reached_not_never() -> None:
    """lars.py:369 ``k < 0`` -> ``<=``: only -1 means "never reached"; 0 steps is the fastest possible."""
    from theorylr.lab.reproduce import lars as lr_

    assert lr_.early_speed_verdict([0], 5) == HOLDS


def test_fig2_optimum_check_empty_and_exact_tolerance() -> None:
    """lars.py:534 ``not values or not all(...)`` -> ``and`` (no rule ran: False, not a ValueError) and :537
    ``<=`` -> ``<`` (a spread of exactly the tolerance passes; binary-exact numbers)."""
    from theorylr.lab.reproduce import lars as lr_

    assert lr_.fig2_optimum_check({}, 1.0) is False
    assert lr_.fig2_optimum_check({"a": 0.25, "b": 0.75}, initial=1.25, tolerance=0.5) is True


def test_fig2_oscillation_check_empty_tail_and_equal_ends() -> None:
    """lars.py:548 ``not fixed or not decay`` -> ``and`` (an empty tail: False, no IndexError) and :550
    ``decay[-1] < fixed[-1]`` -> ``<=`` (ending level is not "ends higher")."""
    from theorylr.lab.reproduce import lars as lr_

    assert lr_.fig2_oscillation_check([], [1.0, 0.9]) is False
    assert lr_.fig2_oscillation_check([1.0, 1.1], []) is False
    assert lr_.fig2_oscillation_check([1.0, 1.1, 1.0, 1.1], [1.2, 1.1, 1.0, 1.1]) is False


def _theorem_claims(tmp_path: Any, cor_row: dict[str, Any], thm3_row: dict[str, Any]) -> dict[str, Any]:
    from theorylr.lab.reproduce import QUICK
    from theorylr.lab.reproduce import lars as lr_
    from theorylr.lab.reproduce._common import Context

    ctx = Context(tmp_path, QUICK, verbose=False)
    thm2 = {"rows": [{"lr": 0.1, "violations": 0, "max_ratio": 0.5, "rigorous_violations": 0}]}
    cor = {"rows": [cor_row], "slope": math.nan}
    thm3 = {"rows": [{"lr0": 0.5, "power": 0.6, "final_bound": 1.0, **thm3_row}]}
    claims = lr_._claims_theorems(ctx, thm2, cor, thm3, "f.png", thm2, {"rows": []})
    return {c.id: c for c in claims}


def test_corollary_reached_exactly_at_the_bound_holds(tmp_path: Any) -> None:
    """lars.py:937 ``0 < measured <= predicted`` -> ``<``: reaching eps at exactly the bound's step is within it."""
    row = {"eps": 0.5, "measured_steps": 7, "predicted_steps": 7, "steps_run": 7}
    thm3 = {"final_min_gap": 0.1, "fixed_final_min_gap": 0.2, "bound_violations": 0}
    assert _theorem_claims(tmp_path, row, thm3)["lars-cor2.1"].verdict == HOLDS


def test_theorem3_needs_both_a_lower_floor_and_no_bound_violation(tmp_path: Any) -> None:
    """lars.py:973 ``gap < fixed and violations == 0``: ``and`` -> ``or`` (a violated bound (8) refutes it) and
    ``<`` -> ``<=`` (ending level with the fixed-lr floor is not "below")."""
    row = {"eps": 0.5, "measured_steps": 3, "predicted_steps": 7, "steps_run": 7}
    violated = {"final_min_gap": 0.1, "fixed_final_min_gap": 0.2, "bound_violations": 1}
    level = {"final_min_gap": 0.2, "fixed_final_min_gap": 0.2, "bound_violations": 0}
    assert _theorem_claims(tmp_path, row, violated)["lars-thm3"].verdict == DOES_NOT_HOLD
    assert _theorem_claims(tmp_path, row, level)["lars-thm3"].verdict == DOES_NOT_HOLD


def test_learned_is_strictly_above_chance_plus_margin() -> None:
    """_common.py:38 ``a > 1/k + 0.05`` -> ``>=``: exactly chance + margin has not learned."""
    from theorylr.lab.reproduce._common import CHANCE_MARGIN, learned

    assert learned([1.0 / 4 + CHANCE_MARGIN], 4) is False


def test_first_reach_counts_a_value_exactly_at_the_level() -> None:
    """_common.py:188 ``value <= level`` -> ``<`` and ``value >= level`` -> ``>``: reaching the level is meeting it."""
    import numpy as np

    from theorylr.lab.reproduce._common import first_reach

    class _Cols:
        def __init__(self, **columns: list[float]) -> None:
            self.columns = {k: np.array(v) for k, v in columns.items()}

        def column(self, name: str) -> Any:
            return self.columns[name]

    run = _Cols(epoch=[0.0, 1.0, 2.0], train_loss=[1.0, 0.5, 0.2], test_accuracy=[0.1, 0.5, 0.9])
    assert first_reach(run, "train_loss", 0.5) == 1.0  # type: ignore[arg-type]
    assert first_reach(run, "test_accuracy", 0.5, below=False) == 1.0  # type: ignore[arg-type]


def _summary(
    *,
    tuned: bool = False,
    lr: float = 0.1,
    trials: int = 1,
    best_trial: int = 0,
    rule: dict[str, Any],
    chosen: list[float | None] | None = None,
) -> Any:
    from types import SimpleNamespace

    runs = [
        SimpleNamespace(config={"rule": rule}, meta={"setup": {"chosen_lr": c}} if c is not None else {})
        for c in (chosen or [None])
    ]
    return SimpleNamespace(tuned=tuned, lr=lr, trials=trials, best_trial=best_trial, best_runs=runs)


def test_report_seconds_at_exactly_one_second() -> None:
    """report.py:157 ``value >= 1.0`` -> ``>``: one second prints with two decimals, as every time >= 1 s."""
    from theorylr.lab.report import _seconds

    assert _seconds(1.0) == "1.00"


def test_report_lr_column_for_range_tests_multipliers_and_grid_edges() -> None:
    """report.py:182 ``endswith(':build_range_test') or chosen`` -> ``and`` (a range test with no chosen_lr recorded
    says 'not run'), :193 ``min(chosen)`` -> ``max`` (per-seed range low-high), :195 ``best_runs and multiplier``
    -> ``or`` (a plain fixed lr is not 'xM'), :187 ``trials >= 3`` -> ``>`` (3 trials, best at 0: grid edge)."""
    from theorylr.lab.report import _lr_text

    assert _lr_text(_summary(rule={"factory": "m:build_range_test"})) == "- (range test: not run)"
    assert _lr_text(_summary(rule={}, chosen=[0.1, 0.3])) == "0.1-0.3 (range test, per seed)"
    assert _lr_text(_summary(rule={}, lr=0.1)) == "0.1"
    assert _lr_text(_summary(rule={"multiplier": True}, lr=2.0)) == "x2"
    assert _lr_text(_summary(tuned=True, trials=3, best_trial=0, rule={})) == "0.1 (trial 0 of 0-2, grid edge)"
