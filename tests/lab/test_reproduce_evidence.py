"""`theorylr reproduce`: verdicts computed from evidence that can refute the claim."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
    # stated for every k (every eps): the counterexample on (b) refutes it, whatever (a) says
    assert claims["lars-thm2"].verdict == DOES_NOT_HOLD
    assert claims["lars-cor2.1"].verdict == DOES_NOT_HOLD
    assert "(b)" in claims["lars-thm2"].measured and "fixed_lr_bound): 0 violations" in claims["lars-thm2"].measured
    assert "not reached in" in claims["lars-cor2.1"].measured
    assert "analytic/thm2_far.json" in claims["lars-thm2"].sources


def test_the_lars_figures_draw_the_evidence_their_verdicts_rest_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The §3.2 panel drew only the formula (1 - lr)^k |w0>, also past the SGD fallback where the iterates turn
    away, and the Corollary 2.1 panel only problem (a), while the "does not hold" rests on problem (b)."""
    from theorylr.theory import lars as theory

    drawn: list[Any] = []
    monkeypatch.setattr(lr_, "save_figure", lambda fig, path: drawn.append(fig) or Path(path))
    ctx = Context(tmp_path, QUICK, verbose=False)
    origin = lr_._origin_1d(100)
    row = next(r for r in origin["rows"] if r["function"] == "quadratic")
    fallback = row["predicted_fallback"]
    assert len(row["abs_iterates"]) == fallback + 21
    formula = abs(theory.origin_attraction(row["w0"], row["lr"], fallback + 5))
    assert row["abs_iterates"][fallback + 5] > 5 * formula  # past the fallback the iterates leave the formula
    lr_._plot_1d(ctx, lr_._interval_1d(60), origin)
    measured = [line for line in drawn[0].axes[1].get_lines() if str(line.get_label()).startswith("|w_k|")]
    assert len(measured) == 2 and list(measured[0].get_ydata()) == row["abs_iterates"]

    thm2, thm3 = lr_._theorem2(60), lr_._theorem3(60)
    cor, cor_far = lr_._corollary((0.5,), 2000), lr_._corollary(lr_._COR_FAR_EPS, 2000, lr_._THM2_FAR)
    lr_._plot_theorems(ctx, thm2, cor, thm3, lr_._theorem2(60, lr_._THM2_FAR), cor_far)
    labels = [str(line.get_label()) for line in drawn[1].axes[1].get_lines()]
    assert "(b) far start: Corollary 2.1 bound" in labels
    assert "(b) far start: not reached in the steps run (more needed)" in labels


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
    assert claims["lipschitz-rigorous-divergence"].verdict == DOES_NOT_HOLD  # "never": one workload refutes it
    claims = {c.id: c for c in lp._rigorous_claims(ctx, table1, {"breast_cancer": fine}, "t1.png", [])}  # type: ignore[dict-item]
    assert claims["lipschitz-rigorous-divergence"].verdict == HOLDS


# ----------------------------------------------------------------------------------------------------------------
# exact-step Adam: the page's notes describe what the registered rule does


def test_exact_adam_note_matches_the_registered_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page says the registered rule draws K_hat's weights from the workload's own init: run the rule with
    exact_step_adam replaced by a spy and check the sampler it is given (a search of the source could not fail)."""
    import dataclasses
    import functools
    import inspect

    from theorylr.lab import rules
    from theorylr.lab.runner import Cell, run_cell
    from theorylr.lab.workloads import get_workload

    seen: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise RuntimeError("spy: stop here")

    monkeypatch.setattr(rules, "_load", lambda target, rule: spy)
    workload = dataclasses.replace(get_workload("digits-mlp"), epochs=1)
    assert workload.init == "kaiming_uniform"
    run_cell(Cell(workload, rules.get_rule("exact-adam"), 0, 1.0, 0, 1), tmp_path)
    sampler = seen["estimate_kwargs"]["sampler"]
    assert isinstance(sampler, functools.partial) and sampler.func is rules.init_sampler
    assert sampler.args == ("kaiming_uniform",)
    source = inspect.getsource(ea.run_exact_adam)
    assert "registered exact-adam rule draws with torch's default scheme" not in source


# ----------------------------------------------------------------------------------------------------------------
# Networks at chance are no evidence (the audit's quick-scale CNN: everything adaptive stuck at 10 %)


def test_table3_pairs_at_chance_are_not_counted() -> None:
    # two pairs at chance "matched" and only the informative one failed: the verdict was 'partly'
    assert lp.pairs_verdict([(0.098, 0.1002), (0.1002, 0.1002), (0.1002, 0.3274)]) == DOES_NOT_HOLD
    assert lp.pairs_verdict([(0.9, 0.8), (0.1, 0.1), (0.7, 0.72)]) == PARTLY
    assert lp.pairs_verdict([(0.9, 0.8), (0.1, 0.1)]) == HOLDS
    assert lp.pairs_verdict([(0.1, 0.1)]).startswith("not run (inconclusive")


def test_fig3_lr_claim_needs_the_run_at_that_lr_to_learn() -> None:
    assert lp.lr_verdict(2.03, 0.098, [0.098, 0.33]) == PARTLY  # a large lr at which the network learned nothing
    assert lp.lr_verdict(2.03, 0.95, [0.95]) == HOLDS
    assert lp.lr_verdict(0.001, 0.098, [0.098, 0.33]) == DOES_NOT_HOLD
    assert lp.lr_verdict(2.03, 0.1, [0.1, 0.1]).startswith("not run (inconclusive")


def test_exact_step_gradient_norm_wins_need_a_network_that_learned() -> None:

    assert not ea.learned_anything(0.100) and not ea.learned_anything(math.nan) and ea.learned_anything(0.906)
    # Fig. 5: the full-batch run collapsed (accuracy 0.098, small gradient norm): it ranks last, not first
    assert ea.batch_size_verdict([(64, 0.826), (256, 0.423), (math.inf, math.inf)]) == DOES_NOT_HOLD


def test_exact_step_gradient_norm_claims_skip_collapsed_networks() -> None:
    """A collapsed network (accuracy at chance, loss at ln 10) ends with a small gradient norm: it was counted as
    the exact step's win (the quick page's only 'partly' came from two dead networks)."""

    def summary(grad_norm: float, accuracy: float) -> Any:
        run = _Run([1.0, 0.5], lr=0.01)
        run._columns["grad_norm"] = np.array([1.0, grad_norm])
        run._columns["test_accuracy"] = np.array([0.1, accuracy])
        return _Summary(run)

    def comparison(**summaries: Any) -> Any:
        return ea._Comparison("c", None, summaries, ["sched"], ["const"])  # type: ignore[arg-type]

    assert not comparison(**{ea.EXACT: summary(0.07, 0.100), "sched": summary(0.6, 0.9)}).grad_norm_win(["sched"])
    assert comparison(**{ea.EXACT: summary(0.07, 0.9), "sched": summary(0.6, 0.9)}).grad_norm_win(["sched"])
    # a competitor that collapsed does not count against the exact step either
    assert comparison(**{ea.EXACT: summary(0.5, 0.9), "sched": summary(0.01, 0.1)}).grad_norm_win(["sched"])


def test_fig3_early_train_error_is_read_at_3000_steps_or_a_third_of_the_run() -> None:
    """Fig. 3's "Adam leads early" is now checked: the train error at the first evaluation at or after 3000 steps."""
    run = _Run([1.0] * 5, lr=0.1)
    run._columns["step"] = np.array([0.0, 1000.0, 3000.0, 6000.0, 9000.0])
    run._columns["train_accuracy"] = np.array([0.1, 0.5, 0.7, 0.9, 0.95])
    assert lr_._early_train_error(_Summary(run), 3000) == pytest.approx(0.3)  # type: ignore[arg-type]
    short = _Run([1.0] * 4, lr=0.1)
    short._columns["step"] = np.array([0.0, 100.0, 200.0, 300.0])
    short._columns["train_accuracy"] = np.array([0.1, 0.6, 0.8, 0.9])
    assert lr_._early_train_error(_Summary(short), 3000) == pytest.approx(0.4)  # a third of 300 steps: step 100


def test_fig2_speed_is_judged_at_a_level_every_compared_rule_reaches() -> None:
    """The level near the *best* final loss made 'LARS converges quicker' true whenever LARS ended lowest (GD and
    Adam never reached it); one near the *worst* final made the worst-ending rule the slowest by construction. Speed
    is now compared half way down to the worst final among the rules that decreased."""
    finals = {"lars": 0.0329, "gd": 0.818, "adam": 0.439, "lars-decay": 0.05}
    level = lr_.fig2_speed_level(finals, 1.0)
    assert level == pytest.approx(1.0 - 0.5 * (1.0 - 0.818)) and all(level > finals[k] for k in ("lars", "gd", "adam"))
    # a rule that ended above its start (or diverged) sets no level ...
    assert lr_.fig2_speed_level({"lars": 0.05, "gd": 0.5, "adam": 2.5}, 1.0) == pytest.approx(0.75)
    assert lr_.fig2_speed_level({**finals, "gd": math.inf}, 1.0) == pytest.approx(1.0 - 0.5 * (1.0 - 0.439))
    assert math.isnan(lr_.fig2_speed_level({"lars": 2.0, "gd": math.nan, "adam": 1.5}, 1.0))
    # ... and never reaches it, whenever it passed it on the way up
    assert lr_.fig2_epochs_to_level(1.0, 2.5, 0.75) == math.inf
    assert lr_.fig2_epochs_to_level(1.0, math.nan, 0.75) == math.inf
    assert lr_.fig2_epochs_to_level(4.0, 0.05, 0.75) == 4.0


def test_fig1_early_searches_lars_lr_against_gds_better_step(tmp_path: Path) -> None:
    """'LARS *can* converge faster' needs some lr: the grid stopped at 0.2, where LARS ties GD, and missed 0.4."""
    data = lr_._fig1(200)
    steps = {r["lr"]: r["steps_to_level"] for r in data["lars_early"]}
    gd = min(r["steps_to_level"] for r in data["gd"] if r["steps_to_level"] >= 0)
    assert steps[0.2] == gd and min(k for k in steps.values() if k >= 0) < gd
    ctx = Context(tmp_path, QUICK, verbose=False)
    early = next(c for c in lr_._claims_fig1(ctx, data, "f.png") if c.id == "lars-fig1-early")
    assert early.verdict == HOLDS and "lr 0.4: 2" in early.measured


def test_a_scheduler_is_compared_at_its_best_trial_that_learned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuned for the lowest final gradient norm, three LeNet schedulers chose lr 1e-3, where the network learned
    nothing (a small gradient norm too), and dropped out of the comparison although lr 1e-2 learned."""
    from theorylr.lab.results import Run, group_runs
    from theorylr.lab.scores import summarize_rule

    def run(trial: int, lr: float, seed: int, grad: float, accuracy: float) -> Run:
        config = {
            "workload": {"name": "w", "tuning_metric": "grad_norm"},
            "rule": {"name": "adam-cosine", "kind": "tuned", "search": {}},
            "trial": trial,
            "seed": seed,
            "lr": lr,
            "epochs": 1,
        }
        rows = [
            {"epoch": 0, "step": 0, "wall_time": 0.0, "grad_norm": 1.0, "test_accuracy": 0.1, "train_loss": 2.3},
            {"epoch": 1, "step": 9, "wall_time": 1.0, "grad_norm": grad, "test_accuracy": accuracy, "train_loss": 1.0},
        ]
        return Run(tmp_path / f"t{trial}s{seed}", config, {"status": "finished", "epochs_done": 1}, rows)

    runs = [run(0, 1e-3, s, 0.04, 0.10) for s in (0, 1)] + [run(1, 1e-2, s, 0.30, 0.60) for s in (0, 1)]
    chosen = summarize_rule("adam-cosine", group_runs(runs)["w"]["adam-cosine"])
    assert chosen.best_trial == 0  # the lab's choice: the collapsed trial
    monkeypatch.setattr(ea, "load_runs", lambda path: runs)
    ctx = Context(tmp_path, QUICK, verbose=False)
    workload = dataclasses.replace(ea._lenet(ctx), name="w")
    redone = ea._best_trials_that_learned(ctx, workload, {"adam-cosine": chosen}, ["adam-cosine"])
    assert redone["adam-cosine"].best_trial == 1 and redone["adam-cosine"].lr == 1e-2
    # a rule whose chosen trial learned, or none of whose trials did, keeps the lab's choice
    assert ea._best_trials_that_learned(ctx, workload, {"adam-cosine": redone["adam-cosine"]}, ["adam-cosine"]) == {}
    monkeypatch.setattr(ea, "load_runs", lambda path: runs[:2])
    assert ea._best_trials_that_learned(ctx, workload, {"adam-cosine": chosen}, ["adam-cosine"]) == {}


def test_claims_json_keeps_inf_apart_from_nan(tmp_path: Path) -> None:
    """``claims.json`` wrote inf and NaN both as ``null``: a ratio that diverged read back like one never measured."""
    from theorylr.lab.reproduce.claims import HOLDS, Claim, PaperResult, read_result, write_result

    values = {"ratio": math.inf, "low": -math.inf, "missing": math.nan, "runs": [1.0, math.inf], "rule": "lars"}
    write_result(
        tmp_path,
        PaperResult("lars", "t", "ref", "quick", [Claim("a", "lars", "s", "c", "r", "m", "k", HOLDS, values=values)]),
    )
    back = read_result(tmp_path).claims[0].values
    assert back["ratio"] == math.inf and back["low"] == -math.inf and math.isnan(back["missing"])
    assert back["runs"] == [1.0, math.inf] and back["rule"] == "lars"
