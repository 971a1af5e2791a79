"""`theorylr reproduce`: the experiments themselves. Each recorded number is checked against its definition (the
paper's formula, :mod:`theorylr.theory.lars`, or a run of the real optimizer), the problems against the papers'
settings, and the analytic cache against the inputs the computation reads. Sizes are tiny; lab runs are replaced
by fakes where only the bookkeeping around them is under test."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from theorylr.lab.reproduce import QUICK, Scale
from theorylr.lab.reproduce import _common as common
from theorylr.lab.reproduce import exact_adam as ea
from theorylr.lab.reproduce import lars as lr_
from theorylr.lab.reproduce import lipschitz as lp
from theorylr.lab.reproduce._common import Context
from theorylr.lab.reproduce.scale import LarsScale
from theorylr.theory import lars as theory

# ----------------------------------------------------------------------------------------------------------------
# fakes of the lab's run files (only what the experiments read)


class _Run:
    """A run with ``columns`` (one value per evaluation), a status and a directory under ``root``."""

    def __init__(self, root: Path, name: str, status: str = "finished", **columns: list[float]) -> None:
        self.status = status
        self.directory = root / "runs" / name
        self._columns = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
        n = len(next(iter(self._columns.values())))
        self._columns.setdefault("epoch", np.arange(n, dtype=np.float64))
        self.rows = [{} for _ in range(n)]
        self.meta: dict[str, Any] = {}

    def column(self, name: str) -> np.ndarray:
        return self._columns.get(name, np.full(len(self.rows), math.nan))

    def final(self, name: str) -> float:
        return float(self.column(name)[-1])


@dataclasses.dataclass
class _Summary:
    best_runs: list[_Run]
    lr: float = math.nan


# ----------------------------------------------------------------------------------------------------------------
# LARS §3: the real optimizer on one dimension

_ORIGIN_STEPS = 60


@pytest.fixture(scope="module")
def origin() -> dict[str, Any]:
    return lr_._origin_1d(_ORIGIN_STEPS)


def test_lars_trajectory_follows_an_lr_sequence_and_stops_at_until() -> None:
    def loss(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * (w - 1.0).square().sum()

    lrs = [0.5, 0.0, 0.25, 0.1]
    traj = lr_.lars_trajectory(loss, [0.5], lrs, 4)
    assert traj[:, 0].tolist() == pytest.approx(theory.lars_1d_trajectory(0.5, 1.0, lrs), rel=1e-14, abs=0)
    # until: the array ends at the first iterate for which it is true (0.5 -> 0.75 -> 1.125)
    stopped = lr_.lars_trajectory(loss, [0.5], 0.5, 10, until=lambda w: float(w) > 1.0)
    assert stopped[:, 0].tolist() == [0.5, 0.75, 1.125]


def test_interval_rows_are_the_closed_form_and_the_curves_the_quadratic_runs() -> None:
    steps = 40
    data = lr_._interval_1d(steps)
    rows = data["rows"]
    assert [(r["w0"], r["a"], r["lr"]) for r in rows[:: len(lr_.FUNCTIONS_1D)]] == list(lr_.CASES_1D)
    for r in rows:
        closed = theory.lars_1d_trajectory(r["w0"], r["a"], r["lr"], steps)
        low, high = theory.invariant_interval(r["a"], r["lr"])
        inside = [low <= w <= high for w in closed]
        assert r["steps_run"] == steps
        assert r["measured_steps"] == (inside.index(True) if any(inside) else -1)
        assert r["left_interval"] == (not any(inside) or not all(inside[inside.index(True) :]))
        assert r["max_rel_deviation"] < 1e-13  # relative to |a|: the iterates are the closed form
    # the drawn curves are the quadratic's iterates, all steps + 1 of them
    assert list(data["curves"]) == [f"{w0:g},{a:g},{lr:g}" for w0, a, lr in lr_.CASES_1D]
    for (w0, a, lr), curve in zip(lr_.CASES_1D, data["curves"].values()):
        assert curve == pytest.approx(theory.lars_1d_trajectory(w0, a, lr, steps), rel=1e-13, abs=0)


def test_interval_deviation_is_relative_to_a(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deviation of the iterates from the closed form is reported relative to |a| (the claim prints it so)."""
    original = lr_.lars_trajectory

    def shifted(*args: Any, **kwargs: Any) -> np.ndarray:
        return original(*args, **kwargs) + 1e-3

    monkeypatch.setattr(lr_, "lars_trajectory", shifted)
    rows = lr_._interval_1d(10)["rows"]
    for r in rows:
        assert r["max_rel_deviation"] == pytest.approx(1e-3 / abs(r["a"]), rel=1e-6)


def test_origin_rows_follow_the_geometric_law_and_fall_back_at_the_predicted_step(origin: dict[str, Any]) -> None:
    rows = origin["rows"]
    assert [(r["w0"], r["a"], r["lr"]) for r in rows[:: len(lr_.FUNCTIONS_1D)]] == list(lr_.ORIGIN_CASES)
    for r in rows:
        # §6.1: the SGD fallback below ||w|| = 0.01
        assert r["predicted_fallback"] == theory.steps_to_fallback(r["w0"], r["lr"], 0.01)
        assert r["measured_fallback"] == r["predicted_fallback"]
        # the pure eq. (1) run never changes sign (the fallback run does, when it crosses to a's side)
        assert r["sign_changes"] == 0 and r["max_rel_deviation"] < 1e-12
        assert r["escaped"] is True
        iterates = np.asarray(r["abs_iterates"])
        k = np.arange(r["predicted_fallback"] + 1)
        np.testing.assert_allclose(iterates[k], np.abs((1 - r["lr"]) ** k * r["w0"]), rtol=1e-12)


def test_origin_deviation_is_relative_to_the_geometric_iterate(monkeypatch: pytest.MonkeyPatch) -> None:
    original = lr_.lars_trajectory

    def scaled(*args: Any, **kwargs: Any) -> np.ndarray:
        out = original(*args, **kwargs)
        return out if kwargs.get("min_norm") else out * (1 + 1e-6)

    monkeypatch.setattr(lr_, "lars_trajectory", scaled)
    rows = lr_._origin_1d(25)["rows"]
    assert all(r["max_rel_deviation"] == pytest.approx(1e-6, rel=1e-6) for r in rows)


def test_origin_endpoint_checks_read_the_fallback_run(origin: dict[str, Any]) -> None:
    """escaped / ends_in_interval describe the run with the SGD fallback (the pure run stays on w0's side)."""
    rows = [r for r in origin["rows"] if r["function"] == "quadratic"]
    for r in rows:
        guarded = lr_.lars_trajectory(
            lambda w, r=r: 0.5 * (w - r["a"]).square().sum(), [r["w0"]], r["lr"], _ORIGIN_STEPS, min_norm=0.01
        )[-1, 0]
        low, high = theory.invariant_interval(r["a"], r["lr"])
        assert r["escaped"] == bool(np.sign(guarded) == np.sign(r["a"]))
        assert r["ends_in_interval"] == bool(low <= guarded <= high)
    assert any(r["ends_in_interval"] for r in rows)


# ----------------------------------------------------------------------------------------------------------------
# LARS §5, Fig. 1


def test_fig1_problem_gd_steps_and_region_numbers() -> None:
    steps = 60
    data = lr_._fig1(steps)
    q, w_star = lr_._quadratic(lr_._FIG1)
    # the problem the notes and the claims' settings describe: diag(1, 10), w* = (1, 1), w0 = (4, 3)
    assert (data["smoothness"], data["strong_convexity"]) == (10.0, 1.0)
    assert data["gap0"] == pytest.approx(0.5 * (1 * 3.0**2 + 10 * 2.0**2), rel=1e-15)
    assert data["level"] == pytest.approx(0.1 * data["gap0"], rel=1e-15)
    assert data["w_star_norm"] == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert data["cosine"] == theory.quadratic_cosine_bound(10.0)
    # gradient descent at its two classical fixed steps, 1/L and 2/(m+L)
    assert [(r["label"], r["lr"]) for r in data["gd"]] == [("1/L", 0.1), ("2/(m+L)", pytest.approx(2 / 11))]
    for r in data["gd"]:
        path = np.asarray(data["paths"][f"gd {r['label']}"]["path"])
        assert path.shape == (steps + 1, 2)
        np.testing.assert_allclose(path[1], np.array([4.0, 3.0]) - r["lr"] * np.array([3.0, 20.0]), rtol=1e-15)
        gaps = q.loss(torch.from_numpy(path)).numpy() - q.min_value
        assert r["final_gap"] == pytest.approx(gaps[-1], rel=1e-12, abs=0)
        hit = np.nonzero(gaps <= data["level"])[0]
        assert r["steps_to_level"] == (int(hit[0]) if hit.size else -1)
    for r in data["lars"]:
        path = np.asarray(data["paths"][f"lars {r['lr']:g}"]["path"])
        assert path.shape == (steps + 1, 2)  # 80 points are kept, the run has 61
        dist = np.linalg.norm(path - w_star, axis=1)[steps // 2 :]
        assert (r["tail_max"], r["tail_min"]) == (pytest.approx(dist.max(), rel=1e-14), pytest.approx(dist.min()))
        assert r["lower"] == theory.region_lower_bound(r["lr"], math.sqrt(2.0))
        assert r["radius"] == theory.region_radius(r["lr"], math.sqrt(2.0), data["cosine"])
        gaps = q.loss(torch.from_numpy(path)).numpy() - q.min_value
        assert r["final_gap"] == pytest.approx(gaps[-1], rel=1e-12, abs=0)


# ----------------------------------------------------------------------------------------------------------------
# LARS §4: Theorem 2, Corollary 2.1, Theorem 3


def test_fig1_claims_read_the_region_bounds_and_gds_better_step(tmp_path: Path) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    lars = [
        {"lr": 0.02, "tail_max": 0.1, "lower": 0.01, "radius": 1.0},
        {"lr": 0.05, "tail_max": 0.1, "lower": 0.2, "radius": 1.0},  # equal region; below the lower bound
        {"lr": 0.1, "tail_max": 0.3, "lower": 0.05, "radius": 1.0},
    ]
    data = {
        "lars": lars,
        "lars_early": [{"lr": 0.3, "steps_to_level": 20}],
        "gd": [{"label": "1/L", "steps_to_level": 30}, {"label": "2/(m+L)", "steps_to_level": 10}],
    }
    claims = {c.id: c.verdict for c in lr_._claims_fig1(ctx, data, "f.png")}
    # "grows with lr" needs a strict rise; the region must lie above the lower bound; GD at its better step
    assert claims == {
        "lars-fig1-region": "partly",
        "lars-fig1-bounds": "does not hold",
        "lars-fig1-early": "does not hold",
    }


def test_theorem2_rows_and_curves_are_their_definitions() -> None:
    steps = 40
    data = lr_._theorem2(steps)
    q, w_star = lr_._quadratic(lr_._THM2)
    assert data["smoothness"] == 4.0 and data["dist0"] == pytest.approx(math.hypot(1.5, 2.0))
    for r in data["rows"]:
        traj = lr_.lars_trajectory(q.loss, lr_._THM2.w0, r["lr"], steps)
        gaps = q.loss(torch.from_numpy(traj)).numpy() - q.min_value
        g = np.minimum.accumulate(gaps)  # g[k-1] = min_{i<k}, compared with the bound at k
        m1 = float(np.linalg.norm(traj - w_star, axis=1).max())
        m2 = float(np.linalg.norm(traj, axis=1).min())
        assert (r["m1"], r["m2"]) == (pytest.approx(m1, rel=1e-15), pytest.approx(m2, rel=1e-15))
        c1, c2 = theory.theorem2_constants(4.0, m1, m2, math.sqrt(5.0))
        assert (r["c1"], r["c2"]) == (pytest.approx(c1), pytest.approx(c2))
        assert r["floor_term"] == pytest.approx(r["lr"] ** 2 * c2, rel=1e-14)
        assert r["final_min_gap"] == pytest.approx(gaps.min(), rel=1e-12, abs=0)
        stated = np.array([theory.theorem2_bound(k, r["lr"], c1, c2) for k in range(1, steps + 2)])
        assert r["violations"] == int(np.sum(g > stated * (1 + 1e-12)))
        assert r["max_ratio"] == pytest.approx(float(np.max(g / stated)), rel=1e-12)
        curve = data["curves"][f"{r['lr']:g}"]
        assert curve["k"][:3] == [1, 2, 3]
        assert curve["measured"][0] == pytest.approx(gaps[0], rel=1e-15)
        assert curve["measured"] == pytest.approx(g.tolist(), rel=1e-12, abs=0)
        assert curve["stated"][0] == pytest.approx(theory.theorem2_bound(1, r["lr"], c1, c2), rel=1e-15)
        rigorous = [
            theory.fixed_lr_bound(
                k, r["lr"], lipschitz=4.0, m1=m1, m2=m2, w_star_norm=math.sqrt(5), dist0=data["dist0"]
            )
            for k in curve["k"]
        ]
        assert curve["rigorous"] == pytest.approx(rigorous, rel=1e-12)


def test_theorem2_far_start_counts_violations_of_the_stated_bound_not_the_corrected_one() -> None:
    rows = lr_._theorem2(30, lr_._THM2_FAR)["rows"]
    assert all(r["violations"] > 0 and r["rigorous_violations"] == 0 for r in rows)
    assert all(r["max_ratio"] > 1 for r in rows)


def test_corollary_rows_use_constants_valid_for_their_run_and_count_steps_as_theorem2() -> None:
    eps_values = (0.5, 0.2)
    data = lr_._corollary(eps_values, 2000)
    q, w_star = lr_._quadratic(lr_._THM2)
    measured = []
    for r, eps in zip(data["rows"], eps_values):
        lr, predicted = theory.corollary_2_1(eps, r["c1"], r["c2"])
        assert (r["lr"], r["predicted_steps"]) == (lr, predicted)
        assert (r["c1"], r["c2"]) == theory.theorem2_constants(4.0, r["m1"], r["m2"], math.sqrt(5.0))
        full = lr_.lars_trajectory(q.loss, lr_._THM2.w0, lr, min(predicted, 2000))
        # M1 and M2 bound the run the lr was computed for (the fixed point the notes describe)
        assert np.linalg.norm(full - w_star, axis=1).max() <= r["m1"] * (1 + 1e-12)
        assert np.linalg.norm(full, axis=1).min() >= r["m2"] * (1 - 1e-12)
        gaps = q.loss(torch.from_numpy(full)).numpy() - q.min_value
        first = int(np.nonzero(gaps < eps)[0][0])
        # k steps = the first k with min_{i<k} f(w_i) - f* < eps (Theorem 2's convention); the run stops there
        assert r["measured_steps"] == first + 1 and r["steps_run"] == first
        measured.append(r["measured_steps"])
    slope = np.polyfit(np.log([1 / e for e in eps_values]), np.log(measured), 1)[0]
    assert data["slope"] == pytest.approx(slope, rel=1e-12)


def test_theorem3_rows_are_bound_8_on_the_decayed_run() -> None:
    steps = 40
    data = lr_._theorem3(steps)
    q, w_star = lr_._quadratic(lr_._THM2)
    fixed = q.loss(torch.from_numpy(lr_.lars_trajectory(q.loss, lr_._THM2.w0, 0.2, steps))).numpy() - q.min_value
    assert [r["power"] for r in data["rows"]] == [1.0, 0.6] and all(r["lr0"] == 0.2 for r in data["rows"])
    for r in data["rows"]:
        lrs = [theory.theorem3_lr(k, 0.2, r["power"]) for k in range(steps)]  # lr_0 = lr0
        traj = lr_.lars_trajectory(q.loss, lr_._THM2.w0, lrs, steps)
        gaps = q.loss(torch.from_numpy(traj)).numpy() - q.min_value
        m1 = float(np.linalg.norm(traj - w_star, axis=1).max())
        m2 = float(np.linalg.norm(traj, axis=1).min())
        assert (r["m1"], r["m2"]) == (pytest.approx(m1, rel=1e-15), pytest.approx(m2, rel=1e-15))
        # min over i < steps (the bound at k = steps covers w_0 .. w_{steps-1})
        assert r["final_min_gap"] == pytest.approx(gaps[:-1].min(), rel=1e-12, abs=0)
        assert r["fixed_final_min_gap"] == pytest.approx(fixed[:-1].min(), rel=1e-12, abs=0)
        bound = theory.theorem3_bound(lrs, lipschitz=4.0, m1=m1, m2=m2, w_star_norm=math.sqrt(5.0))
        assert r["final_bound"] == pytest.approx(bound, rel=1e-12)
        curve = data["curves"][f"bound p={r['power']:g}"]
        assert curve[-1] == pytest.approx(bound, rel=1e-12)
        first = theory.theorem3_bound(lrs[:1], lipschitz=4.0, m1=m1, m2=m2, w_star_norm=math.sqrt(5.0))
        assert curve[0] == pytest.approx(first, rel=1e-12)
        assert r["bound_violations"] == 0 and r["first_form_violations"] == 0
    assert data["curves"]["fixed"][0] == pytest.approx(fixed[0], rel=1e-15)


# ----------------------------------------------------------------------------------------------------------------
# LARS §6.2 Fig. 2 and §6.3 Fig. 3: the settings and the numbers read from the runs


def test_fig2_panels_are_the_papers_settings(tmp_path: Path) -> None:
    from theorylr.lab.workloads import get_workload

    ctx = Context(tmp_path, QUICK, verbose=False)
    panels = {label: (w, epochs, problem) for label, w, epochs, problem in lr_._fig2_workloads(ctx)}
    mini, full = QUICK.lars.fig2_epochs_mini, QUICK.lars.fig2_epochs_full
    expected = {
        "SVM, mini-batch 100": ("separable-svm", 100, mini, "svm"),
        "SVM, full batch": ("separable-svm", None, full, "svm"),
        "logistic regression (digits), mini-batch 225": ("digits", 225, mini, "logreg"),  # 1348 / 6
        "logistic regression (digits), full batch": ("digits", None, full, "logreg"),
    }
    assert set(panels) == set(expected)
    for label, (data, batch, epochs, problem) in expected.items():
        w, e, p = panels[label]
        assert (w.batch_size, e, p) == (batch, epochs, problem), label
        assert w.dataset == get_workload(data).dataset if data != "digits" else w.dataset == "digits"
    # with MNIST: the paper's batch of 10,000 and full batch
    ctx._probed["mnist"] = None
    ctx.data_dir = str(tmp_path)
    mnist = {label: (w.batch_size, e, p) for label, w, e, p in lr_._fig2_workloads(ctx) if "MNIST" in label}
    assert mnist == {
        "logistic regression (MNIST), mini-batch 10000": (10000, mini, "logreg"),
        "logistic regression (MNIST), full batch": (None, full, "logreg"),
    }


def test_fig2_rules_are_the_papers_learning_rates() -> None:
    """§6.2.1: SVM with GD 0.01, Adam 0.1, LARS 0.1; §6.2.2: logistic regression with GD 0.5, Adam 0.001, LARS 0.05."""
    from theorylr.lab.workloads import get_workload

    for problem, workload, (gd, adam, lars) in (
        ("svm", "separable-svm", ("sgd@0.01", "adam@0.1", 0.1)),
        ("logreg", "digits-logreg", ("sgd@0.5", "adam@0.001", 0.05)),
    ):
        rules = lr_._fig2_rules(problem)
        assert {k: r.name for k, r in rules.items()} == {
            "gd": gd,
            "adam": adam,
            "lars": "lars",
            "lars-decay": "lars-decay",
        }
        assert rules["lars-decay"].defaults["decay"] == "linear"
        options = get_workload(workload).rule_options
        assert options["lars"]["lr"] == options["lars-decay"]["lr"] == lars


def test_last_quarter_is_the_last_quarter_of_the_first_seeds_evaluations(tmp_path: Path) -> None:
    losses = [float(v) for v in range(13)]  # 13 evaluations: the last ceil(13 / 4) = 4
    summary = _Summary([_Run(tmp_path, "a", train_loss=losses), _Run(tmp_path, "b", train_loss=[9.0] * 13)])
    assert lr_._last_quarter(summary) == [9.0, 10.0, 11.0, 12.0]  # type: ignore[arg-type]
    assert lr_._last_quarter(_Summary([_Run(tmp_path, "c", train_loss=[3.0, 2.0, 1.0])])) == [2.0, 1.0]  # type: ignore[arg-type]


def _fig2_summaries(tmp_path: Path, problem: str) -> dict[str, _Summary]:
    """Curves with known answers: GD, Adam and LARS-decay end together; fixed LARS oscillates and ends higher."""
    curves = {
        "gd": [1.0, 0.6, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1],
        "adam": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.12, 0.105],
        "lars": [1.0, 0.3, 0.25, 0.2, 0.3, 0.2, 0.35, 0.3, 0.25, 0.2, 0.35, 0.3],
        "lars-decay": [1.0, 0.5, 0.3, 0.2, 0.15, 0.14, 0.13, 0.12, 0.115, 0.11, 0.105, 0.1],
    }
    if problem == "logreg":  # GD first, then LARS, then Adam: the order the paper reports
        curves["lars"] = [1.0, 0.7, *curves["lars"][2:]]
    rules = lr_._fig2_rules(problem)
    return {rules[k].name: _Summary([_Run(tmp_path, f"{problem}-{k}", train_loss=v)]) for k, v in curves.items()}


def test_fig2_reads_initial_final_tails_and_speeds_from_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    monkeypatch.setattr(lr_, "_plot_fig2", lambda ctx, panels: None)
    problems = {w.name: p for _, w, _, p in lr_._fig2_workloads(ctx)}
    monkeypatch.setattr(ctx, "run_rules", lambda w, rules, epochs: _fig2_summaries(tmp_path, problems[w.name]))
    claims = {c.id: c for c in lr_._fig2(ctx)[0]}
    panel = claims["lars-fig2-optimum"].values["panels"]["SVM, full batch"]
    assert panel["initial_train_loss"] == 1.0
    assert panel["final_train_loss"] == {"gd": 0.1, "adam": 0.105, "lars": 0.3, "lars-decay": 0.1}
    assert panel["tail_lars"] == [0.2, 0.35, 0.3] and panel["tail_lars_decay"] == [0.11, 0.105, 0.1]
    # level half way from 1.0 to the worst final of lars/gd/adam (0.3): 0.65; near the best: 0.1 + 0.05 * 0.9
    assert panel["level"] == pytest.approx(0.65)
    assert panel["epochs_to_level"] == {"gd": 1.0, "adam": 4.0, "lars": 1.0, "lars-decay": 1.0}
    assert panel["level_near_best"] == pytest.approx(0.145)
    assert panel["epochs_to_level_near_best"] == {"gd": 5.0, "adam": 10.0, "lars": math.inf, "lars-decay": 5.0}
    logreg = claims["lars-fig2-optimum"].values["panels"]["logistic regression (digits), full batch"]
    assert logreg["epochs_to_level"] == {"gd": 1.0, "adam": 4.0, "lars": 2.0, "lars-decay": 1.0}
    # fixed-lr LARS is left out of "the same optimum" (the paper says GD, Adam and LARS-decay); it oscillates
    assert claims["lars-fig2-optimum"].values["checks"] == [True] * 4
    assert claims["lars-fig2-oscillation"].values["checks"] == [True] * 4
    # speed: SVM needs LARS before both GD and Adam (a tie with GD is not faster); logreg GD < LARS < Adam
    assert claims["lars-fig2-svm-speed"].values["checks"] == [False, False]
    assert claims["lars-fig2-logreg-order"].values["checks"] == [True, True]


def test_fig3_runs_the_papers_rules_and_reads_error_at_3000_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = dataclasses.replace(QUICK, lars=dataclasses.replace(QUICK.lars, full_only=True, resnet_epochs=7))
    ctx = Context(tmp_path, scale, data_dir=str(tmp_path), verbose=False)
    ctx._probed["cifar10"] = None
    asked: list[tuple[str, list[str], int]] = []
    step = [0.0, 1500.0, 3000.0, 6000.0, 9000.0, 12000.0]
    accuracy = {"momentum@0.1": [0.1, 0.3, 0.5, 0.8, 0.9, 0.99], "adam@0.005": [0.1, 0.5, 0.7, 0.8, 0.85, 0.9]}
    accuracy["lars"] = [0.1, 0.2, 0.45, 0.8, 0.95, 0.988]

    def run_rules(w: Any, rules: list[Any], epochs: int) -> dict[str, _Summary]:
        asked.append((w.name, [r.name for r in rules], epochs))
        assert w.rule_options["lars"]["lr"] == 0.001  # the paper's tuned LARS lr on ResNet / CIFAR-10
        return {r.name: _Summary([_Run(tmp_path, r.name, train_accuracy=accuracy[r.name], step=step)]) for r in rules}

    monkeypatch.setattr(ctx, "run_rules", run_rules)
    monkeypatch.setattr(lr_, "_plot_fig2", lambda ctx, panels, **kwargs: None)
    claim, _ = lr_._fig3(ctx)
    assert asked == [("lars-cifar10-resnet20", ["momentum@0.1", "adam@0.005", "lars"], 7)]
    assert claim.values["train_error"] == pytest.approx({"sgd": 0.01, "adam": 0.1, "lars": 0.012})
    assert claim.values["early_train_error"] == pytest.approx({"sgd": 0.5, "adam": 0.3, "lars": 0.55})
    # Adam ends behind both and leads at 3000 steps, but LARS ends 1.2 x SGD's error: more than 1.1 x
    assert claim.verdict == "partly"


# ----------------------------------------------------------------------------------------------------------------
# LARS: the analytic cache is keyed by every input its computation reads


def _analytic_calls(tmp_path: Path, scale: Scale, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``{name: (config, result)}`` of run_lars' analytic experiments at ``scale`` (stopped before the figures)."""
    calls: dict[str, Any] = {}

    def cached(self: Context, name: str, config: Any, compute: Any) -> Any:
        calls[name] = (json.loads(json.dumps(dict(config), default=list)), compute())
        return calls[name][1]

    class _StopError(Exception):
        pass

    def stop(*args: Any) -> None:
        raise _StopError

    monkeypatch.setattr(Context, "cached", cached)
    monkeypatch.setattr(lr_, "_plot_1d", stop)
    with pytest.raises(_StopError):
        lr_.run_lars(Context(tmp_path / scale.name, scale, verbose=False))
    return calls


def test_lars_analytic_cache_keys_cover_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = Scale(name="a", lars=LarsScale(steps_1d=6, steps_2d=6, theorem_steps=6, eps=(0.5,)))
    first = _analytic_calls(tmp_path, small, monkeypatch)
    assert set(first) == {"sec3_interval", "sec3_origin", "fig1_quadratic", "thm2", "thm2_far", "cor2_1"} | {
        "cor2_1_far",
        "thm3",
    }
    for i, lars in enumerate(
        (LarsScale(steps_1d=7, steps_2d=7, theorem_steps=7, eps=(0.5,)), dataclasses.replace(small.lars, eps=(0.4,)))
    ):
        second = _analytic_calls(tmp_path, Scale(name=f"b{i}", lars=lars), monkeypatch)
        for name in first:
            if json.dumps(first[name][1], default=str) != json.dumps(second[name][1], default=str):
                assert first[name][0] != second[name][0], f"{name}: another result under the same cache key"
    # each experiment is the one its name says, at the scale's size
    assert first["thm2_far"][1]["dist0"] == 10.0 and first["thm2"][1]["dist0"] == pytest.approx(2.5)
    assert [r["eps"] for r in first["cor2_1_far"][1]["rows"]] == list(lr_._COR_FAR_EPS)
    assert first["cor2_1_far"][0]["w0"] == [20.0] and first["cor2_1"][0]["w0"] == [0.5, 3.0]
    assert first["cor2_1_far"][1]["rows"][0]["m1"] >= 10.0  # ||w0 - w*|| of the far start
    assert first["sec3_interval"][1]["rows"][0]["steps_run"] == 6
    assert len(first["thm3"][1]["curves"]["fixed"]) == 6
    # the corollary may run 20 x the theorem's steps before calling a run cut short
    assert first["cor2_1"][0]["cap"] == 120


def test_lars_analytic_cache_keys_name_the_problem_constants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scale = Scale(name="a", lars=LarsScale(steps_1d=4, steps_2d=4, theorem_steps=4, eps=(0.5,)))
    before = _analytic_calls(tmp_path, scale, monkeypatch)
    monkeypatch.setattr(lr_, "_EARLY_LRS", (0.3, 0.5))
    monkeypatch.setattr(lr_, "_THM3_POWERS", (0.8,))
    monkeypatch.setattr(lr_, "_THM3_LR0", 0.1)
    after = _analytic_calls(tmp_path, scale, monkeypatch)
    assert after["fig1_quadratic"][0] != before["fig1_quadratic"][0]
    assert after["thm3"][0] != before["thm3"][0]


# ----------------------------------------------------------------------------------------------------------------
# shared helpers: the cache, reading the runs back, running the lab


def test_cached_recomputes_over_a_corrupt_file(tmp_path: Path) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    path = tmp_path / "analytic" / "exp.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"config": {"n": 1}, "result": ', encoding="utf-8")  # an interrupted write of an old version
    assert ctx.cached("exp", {"n": 1}, lambda: {"x": 2.0}) == {"x": 2.0}
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "config": {"n": 1, "code": common.code_fingerprint()},
        "result": {"x": 2.0},
    }


def test_finals_count_a_diverged_run_as_the_worst_value(tmp_path: Path) -> None:
    runs = [
        _Run(tmp_path, "a", train_loss=[2.0, 1.0], test_accuracy=[0.1, 0.8]),
        _Run(tmp_path, "b", status="diverged", train_loss=[2.0, 0.5], test_accuracy=[0.1, 0.9]),
        _Run(tmp_path, "c", train_loss=[2.0, 7.0], test_accuracy=[0.1, 0.2]),
    ]
    summary = _Summary(runs)
    assert common.finals(summary, "train_loss") == [1.0, math.inf, 7.0]  # type: ignore[arg-type]
    assert common.finals(summary, "test_accuracy") == [0.8, -math.inf, 0.2]  # type: ignore[arg-type]
    assert common.final_median(summary, "train_loss") == 7.0  # type: ignore[arg-type]
    assert common.final_median(_Summary(runs[:1] + runs[2:]), "test_accuracy") == pytest.approx(0.5)  # type: ignore[arg-type]
    assert common.median([1.0, 2.0, 30.0, math.nan]) == 2.0


def test_median_curve_is_the_median_on_the_longest_runs_epochs(tmp_path: Path) -> None:
    runs = [
        _Run(tmp_path, "a", train_loss=[1.0, 2.0], epoch=[0.0, 1.0]),
        _Run(tmp_path, "b", train_loss=[3.0, 4.0, 5.0], epoch=[0.0, 2.0, 4.0]),
        _Run(tmp_path, "c", train_loss=[10.0, 20.0, 30.0], epoch=[0.0, 2.0, 4.0]),
    ]
    epochs, med = common.median_curve(runs, "train_loss")  # type: ignore[arg-type]
    assert epochs.tolist() == [0.0, 2.0, 4.0]
    assert med.tolist() == [3.0, 4.0, 17.5]


def test_run_rules_passes_seeds_trials_and_data_to_the_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from theorylr.lab.workloads import get_workload

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(common, "compare", lambda workload, rules, **kw: seen.append(kw))
    monkeypatch.setattr(common, "summaries_of", lambda runs_dir, name: {"ok": name})
    scale = dataclasses.replace(QUICK, seeds=3)
    ctx = Context(tmp_path, scale, data_dir="/data", device="cuda", jobs=2, verbose=False)
    workload = get_workload("digits-logreg")
    assert ctx.run_rules(workload, [], epochs=4, trials=5) == {"ok": "digits-logreg"}
    ctx.run_rules(workload, [], epochs=4, seeds=1)
    first, second = seen
    assert (first["seeds"], first["trials"], first["epochs"], second["seeds"], second["trials"]) == (3, 5, 4, 1, 1)
    assert (first["data_dir"], first["device"], first["jobs"], first["out"]) == ("/data", "cuda", 2, tmp_path / "runs")


def test_dataset_problem_reads_the_files_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.data

    calls: list[str] = []
    monkeypatch.setattr(theorylr.data, "load_mnist", lambda d: calls.append(d))
    ctx = Context(tmp_path, QUICK, data_dir=str(tmp_path), verbose=False)
    assert ctx.has("mnist") and ctx.has("mnist") and ctx.dataset_problem("mnist") is None
    assert calls == [str(tmp_path)]


# ----------------------------------------------------------------------------------------------------------------
# LipschitzLR: Table 1's problems and the lab settings of Tables 2-3


def test_gd_epochs_to_threshold_records_the_stopping_epoch_beyond_the_log_marks() -> None:
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    # w_k = 1 - 0.99^k, loss 0.5 * 0.99^(2k) < 1e-3 first at k = 310, which is none of the log-spaced marks
    epochs, curve = lp.gd_epochs_to_threshold(
        "least_squares", x, y, torch.zeros(1, dtype=torch.float64), 0.01, 1e-3, 999
    )
    assert epochs == 310.0 and curve[-1][0] == 310 and curve[-1][1] < 1e-3 <= curve[-2][1]


def test_table1_rigorous_weight_bound_is_twice_the_least_squares_solution() -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = lp.table1_lipschitz("least_squares", x, y, None)
    w_star = torch.linalg.lstsq(x, y[:, None]).solution
    assert out["weight_bound_rigorous"] == pytest.approx(2 * float(w_star.norm()), rel=1e-12)


def test_table1_rows_thresholds_start_and_step_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    rows_in = (("diabetes", "least_squares", None, None), ("iris", "softmax", 0.2, None))
    monkeypatch.setattr(lp, "TABLE1", rows_in)
    data = lp._table1(30)
    assert data["max_epochs"] == 30
    for row, (name, kind, threshold, _) in zip(data["rows"], rows_in):
        x, y, k = lp._table1_data(name, kind)
        assert row["m"] == x.shape[0]
        if threshold is None:  # least squares: the loss of the best constant predictor
            threshold = float(0.5 * (y - y.mean()).square().mean())
        assert row["threshold"] == pytest.approx(threshold, rel=1e-12)
        shape = (x.shape[1],) if k is None else (x.shape[1], k)
        w0 = 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        assert row["initial_loss"] == pytest.approx(lp._loss_grad(kind, x, y, w0)[0], rel=1e-12)
        for key, lr in (("0.1", 0.1), ("1/L", 1 / row["paper"]), ("1/B", 1 / row["rigorous"])):
            if not lr > 0:  # the paper's least-squares L can be <= 0 (NaN): nothing is run
                assert math.isnan(row[f"epochs {key}"]) and f"{name} {key}" not in data["curves"]
                continue
            expected, curve = lp.gd_epochs_to_threshold(kind, x, y, w0, lr, threshold, 30)
            assert row[f"epochs {key}"] == expected, (name, key)
            assert data["curves"][f"{name} {key}"] == curve, (name, key)


def test_table1_a_non_positive_paper_constant_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp, "TABLE1", (("iris", "softmax", 0.2, None),))
    monkeypatch.setattr(lp, "table1_lipschitz", lambda kind, x, y, k: {"paper": -2.0, "rigorous": 4.0})
    data = lp._table1(5)
    assert math.isnan(data["rows"][0]["epochs 1/L"]) and "iris 1/L" not in data["curves"]
    assert data["rows"][0]["epochs 1/B"] in (math.inf, *range(6))


def test_table2_workloads_are_the_papers_settings(tmp_path: Path) -> None:
    scale = dataclasses.replace(
        QUICK,
        lipschitz=dataclasses.replace(QUICK.lipschitz, table2_epochs={"iris": 7, "digits": 8, "breast_cancer": 9}),
    )
    workloads = dict(lp._table2_workloads(Context(tmp_path, scale, verbose=False)))
    assert {k: w.epochs for k, w in workloads.items()} == {"iris": 7, "digits": 8, "breast_cancer": 9}
    for key, w in workloads.items():
        assert w.dataset == key and w.dataset_options["test_fraction"] == 0.3 and w.model == "linear"
    # the setting says: iris and digits unscaled, breast cancer scaled to sum to 1, without a bias
    assert [workloads[k].dataset_options["scaling"] for k in ("iris", "digits")] == [None, None]
    assert workloads["breast_cancer"].dataset_options["scaling"] == "sum_to_one"
    assert [workloads[k].model_options["bias"] for k in ("iris", "digits", "breast_cancer")] == [True, True, False]
    assert workloads["breast_cancer"].loss == "bce" and workloads["iris"].loss == "cross_entropy"


def test_table3_rules_are_the_papers_baselines() -> None:
    """§7.4.2: SGD and momentum at 0.01, RMSprop and Adam at 0.001; every compared name is among the rules run."""
    rules = {r.name: r for r in lp._table3_rules()}
    assert {*(n for pair in lp._PAIRS for n in pair), "auto-adam", "adam@0.001", "lipschitz-sgd-rigorous"} <= set(rules)
    momentum = rules["momentum@0.01"].defaults
    assert (momentum["optimizer"], momentum["lr"], momentum["momentum"]) == ("sgd", 0.01, 0.9)
    rmsprop = rules["rmsprop@0.001"].defaults
    assert (rmsprop["optimizer"], rmsprop["lr"], rmsprop["momentum"]) == ("rmsprop", 0.001, 0.0)
    assert lp._baseline("sgd", 0.01).name == "sgd@0.01"


def test_table3_cnn_and_resnet_workloads(tmp_path: Path) -> None:
    def cnn(size: int, train: int | None) -> Any:
        s = dataclasses.replace(QUICK.lipschitz, cnn_image_size=size, cnn_train_size=train, cnn_epochs=4)
        return lp._cnn_workload(Context(tmp_path, dataclasses.replace(QUICK, lipschitz=s), verbose=False))

    native = cnn(8, 500)
    assert "resize" not in native.dataset_options and native.dataset_options["train_size"] == 500
    assert (native.batch_size, native.epochs, native.model) == (256, 4, "lipschitz_cnn")
    # AdaMo's first epoch at 0.1 (§7.3.1): one epoch of batches of 256
    assert native.rule_options["adamo"] == {"initial_step_size": 0.1, "initial_steps": 2}
    upscaled = cnn(28, None)
    assert upscaled.dataset_options["resize"] == 28 and "train_size" not in upscaled.dataset_options
    assert upscaled.rule_options["adamo"]["initial_steps"] == math.ceil(1348 / 256)
    resnet = lp._resnet_workload(Context(tmp_path, QUICK, verbose=False))
    assert resnet.epochs == QUICK.lipschitz.resnet_epochs
    # §7.4: weight decay 1e-3 for every rule; AdaMo's first epoch (391 batches of 128) at x = 1, the 1e-3 row's
    assert all(o["weight_decay"] == 1e-3 for o in resnet.rule_options.values())
    assert set(resnet.rule_options) == {r.name for r in lp._table3_rules()}
    assert resnet.rule_options["adamo"]["initial_steps"] == 391
    assert resnet.rule_options["adamo"]["initial_step_size"] == 1.0


def test_median_lr_skips_epoch_zero_and_counts(tmp_path: Path) -> None:
    summary = _Summary([_Run(tmp_path, "a", lr=[1e-8, 0.5, 0.7, 0.6], train_loss=[1.0] * 4)])
    assert lp._median_lr(summary) == 0.6  # type: ignore[arg-type]
    runs = [
        _Run(tmp_path, "a", train_loss=[1.0, 0.5]),
        _Run(tmp_path, "b", status="diverged", train_loss=[1.0, 0.5]),
        _Run(tmp_path, "c", train_loss=[1.0, 2.0]),
    ]
    assert lp._diverged(_Summary(runs)) == 1  # type: ignore[arg-type]
    assert lp._not_converged(_Summary(runs)) == 2  # type: ignore[arg-type]


def test_table2_values_are_the_run_finals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    finals = {"sgd@0.1": 0.8, "lipschitz-sgd": 0.8, "lipschitz-sgd-rigorous": 0.5}

    def run_rules(w: Any, rules: list[Any], epochs: int) -> dict[str, _Summary]:
        return {
            r.name: _Summary([_Run(tmp_path, r.name, test_accuracy=[0.1, finals[r.name]], lr=[0.0, 2.0])])
            for r in rules
        }

    monkeypatch.setattr(ctx, "run_rules", run_rules)
    monkeypatch.setattr(lp, "_plot_accuracy", lambda *a: "fig.png")
    (claim,), _, _ = lp._table2(ctx)
    assert claim.values["iris"] == {"A_0.1": 0.8, "A_1/L": 0.8, "lr_1/L": 2.0}
    assert claim.verdict == "holds"  # a tie is "at least as high"
    finals["sgd@0.1"] = 0.9
    (claim,), _, _ = lp._table2(ctx)
    assert claim.values["digits"]["A_0.1"] == 0.9 and claim.verdict == "does not hold"


def test_table3_reads_the_first_epochs_lr_and_auto_adam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context(tmp_path, QUICK, data_dir=str(tmp_path), verbose=False)
    ctx._probed["cifar10"] = None  # CIFAR-10 is there, but ResNet-20 is for the full form only
    accuracy = {"auto-adam": 0.9, "lipschitz-sgd": 0.915}
    ran: list[str] = []

    def run_rules(w: Any, rules: list[Any], epochs: int) -> dict[str, _Summary]:
        ran.append(w.name)
        return {
            r.name: _Summary(
                [_Run(tmp_path, r.name, test_accuracy=[0.1, 0.5, accuracy.get(r.name, 0.9)], lr=[0.0, 0.02, 0.3])]
            )
            for r in rules
        }

    monkeypatch.setattr(ctx, "run_rules", run_rules)
    monkeypatch.setattr(lp, "_plot_accuracy", lambda *a: "fig.png")
    claims = {c.id: c for c in lp._table3(ctx)[0]}
    lr = claims["lipschitz-fig3-lr"]
    assert lr.values == {"median_lr": pytest.approx(0.16), "first_epoch_lr": 0.02}
    auto = claims["lipschitz-table3-auto-adam"]
    assert auto.values["checks"] == [False] and auto.verdict == "does not hold"  # 1.5 points apart: not "as well"
    assert ran == [lp._cnn_workload(ctx).name]
    assert claims["lipschitz-table3-resnet-adaptive"].verdict == "not run (full form only)"


# ----------------------------------------------------------------------------------------------------------------
# exact-step Adam: the networks, what is run, and the analytic experiments


def test_mlp_workloads_are_the_papers_networks(tmp_path: Path) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    full, mini = ea._mlp(ctx, 3, None), ea._mlp(ctx, 5, 128)
    assert full.model_options["hidden"] == (QUICK.adam.width,) * 3 and full.batch_size is None
    assert mini.model_options["hidden"] == (QUICK.adam.width,) * 5 and mini.batch_size == 128
    assert full.tuning_metric == mini.tuning_metric == "grad_norm"  # the claims' metric
    assert full.name != mini.name and full.init == "kaiming_uniform"
    # with MNIST: mini-MNIST (5500 / 1000 images) at full batch, the whole set with mini-batches (§5.2, §5.3)
    ctx._probed["mnist"] = None
    ctx.data_dir = str(tmp_path)
    full, mini = ea._mlp(ctx, 3, None), ea._mlp(ctx, 3, 5000)
    assert full.dataset_options == {"scaling": "unit", "train_size": 5500, "test_size": 1000}
    assert (full.batch_size, full.grad_norm_samples) == (None, None)
    assert (mini.batch_size, mini.grad_norm_samples, mini.dataset_options) == (5000, 10000, {"scaling": "unit"})
    assert full.model_options["hidden"] == (QUICK.adam.width,) * 3 and full.tuning_metric == "grad_norm"


def test_lenet_stand_in_is_upscaled_digits(tmp_path: Path) -> None:
    scale = dataclasses.replace(QUICK, adam=dataclasses.replace(QUICK.adam, lenet_image_size=20))
    lenet = ea._lenet(Context(tmp_path, scale, verbose=False))
    assert lenet.dataset == "digits" and lenet.dataset_options["resize"] == 20
    assert lenet.tuning_metric == "grad_norm"


def test_compare_runs_the_exact_step_schedulers_and_constants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scale = dataclasses.replace(
        QUICK,
        adam=dataclasses.replace(
            QUICK.adam, schedulers=("adam-cosine",), constants=(1e-3,), num_samples=4, trials=3, grid=(1e-3, 1e-1)
        ),
    )
    ctx = Context(tmp_path, scale, verbose=False)
    asked: list[Any] = []

    def run_rules(workload: Any, rules: list[Any], *, epochs: int, trials: int = 1) -> dict[str, Any]:
        asked.append((workload.name, rules, epochs, trials))
        return {}

    monkeypatch.setattr(ctx, "run_rules", run_rules)
    monkeypatch.setattr(ea, "load_runs", lambda path: [])
    c = ea._compare(ctx, "label", ea._mlp(ctx, 1, None), 6)
    ((name, rules, epochs, trials),) = asked
    assert name == "adam-digits-mlp1x64-full"
    assert [r.name for r in rules] == ["exact-adam", "adam-cosine", "adam@0.001"]
    assert rules[0].defaults["num_samples"] == 4 and (epochs, trials) == (6, 3)
    assert (rules[1].search.low, rules[1].search.high) == (1e-3, 1e-1)
    assert (c.schedulers, c.constants) == (["adam-cosine"], ["adam@0.001"])


def test_comparison_numbers_and_best(tmp_path: Path) -> None:
    def summary(grad: float, loss: float, acc: float, lr: float) -> _Summary:
        run = _Run(tmp_path, "r", grad_norm=[1.0, grad], train_loss=[2.3, loss], test_accuracy=[0.1, acc])
        return _Summary([run], lr=lr)

    c = ea._Comparison(
        "net",
        None,  # type: ignore[arg-type]
        {"exact-adam": summary(0.01, 0.2, 0.9, 0.003), "adam-cosine": summary(0.05, 0.1, 0.95, 0.01)},  # type: ignore[dict-item]
        ["adam-cosine"],
        [],
    )
    numbers = c.numbers()
    assert numbers["test_accuracy"] == {"exact-adam": 0.9, "adam-cosine": 0.95}
    assert numbers["grad_norm"] == {"exact-adam": 0.01, "adam-cosine": 0.05}
    assert numbers["lr"] == {"exact-adam": 0.003, "adam-cosine": 0.01}
    assert ea._best({"a": 0.3, "b": 0.1, "c": math.nan}) == ("b", 0.1)


def test_best_trial_that_learned_ignores_a_diverged_runs_accuracy(tmp_path: Path) -> None:
    diverged = _Run(tmp_path, "a", status="diverged", test_accuracy=[0.1, 0.9])
    stuck = _Run(tmp_path, "b", test_accuracy=[0.1, 0.1])
    assert not ea._trial_learned([diverged, stuck])  # type: ignore[list-item]
    assert ea._trial_learned([_Run(tmp_path, "c", test_accuracy=[0.1, 0.6]), stuck, stuck]) is False  # type: ignore[list-item]
    assert ea._trial_learned([_Run(tmp_path, "c", test_accuracy=[0.1, 0.6])])  # type: ignore[list-item]


def test_batch_size_experiment_runs_the_three_layer_mlp_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scale = dataclasses.replace(QUICK, adam=dataclasses.replace(QUICK.adam, batch_sizes=(64, None), batch_epochs=2))
    ctx = Context(tmp_path, scale, verbose=False)
    asked: list[Any] = []
    grads = {64: 0.3, None: 0.1}

    def run_rules(workload: Any, rules: list[Any], *, epochs: int) -> dict[str, Any]:
        asked.append((workload, [r.name for r in rules], epochs))
        run = _Run(tmp_path, workload.name, grad_norm=[1.0, grads[workload.batch_size]], test_accuracy=[0.1, 0.9])
        run._columns["step"] = np.array([0.0, 5.0])
        return {"exact-adam": _Summary([run])}

    monkeypatch.setattr(ctx, "run_rules", run_rules)
    monkeypatch.setattr(ea, "save_figure", lambda fig, path: Path(path))
    claim, _ = ea._batch_sizes(ctx)
    assert [(w.batch_size, len(w.model_options["hidden"]), names, e) for w, names, e in asked] == [
        (64, 3, ["exact-adam"], 2),
        (None, 3, ["exact-adam"], 2),
    ]
    assert claim.values["final_grad_norm"] == [[64.0, 0.3], [None, 0.1]]
    assert claim.verdict == "holds"
    grads[None] = 0.01
    accuracy = _Run.final

    def collapsed(self: _Run, name: str) -> float:
        return 0.1 if name == "test_accuracy" and self.directory.name.endswith("full-fig5") else accuracy(self, name)

    monkeypatch.setattr(_Run, "final", collapsed)
    claim, _ = ea._batch_sizes(ctx)  # full batch learned nothing: it ranks last, whatever its gradient norm
    assert claim.values["final_grad_norm"][1] == [None, math.inf] and claim.verdict == "does not hold"


def test_init_schemes_draw_each_scheme_and_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.optim.exact_adam as exact

    scale = dataclasses.replace(QUICK, adam=dataclasses.replace(QUICK.adam, width=4, init_seeds=2, epochs=7))
    ctx = Context(tmp_path, scale, verbose=False)
    seen: list[Any] = []

    def fake(model: Any, loss: Any, data: Any, total: int, **kw: Any) -> Any:
        first = next(model.parameters()).detach().clone()
        seen.append((total, kw["seed"], kw["estimate_kwargs"]["sampler"].args, first))
        step = type("S", (), {"alpha": 0.1 * (len(seen)), "initial_loss": 2.3, "k_hat": 5.0})()
        return None, step

    monkeypatch.setattr(exact, "exact_step_adam", fake)
    data = ea._init_schemes(ctx)
    schemes = (*ea.INIT_SCHEMES, "default")
    assert [(r["scheme"], r["seed"]) for r in data["rows"]] == [(s, k) for s in schemes for k in range(2)]
    assert [(t, seed, args) for t, seed, args, _ in seen] == [(7, k, (s,)) for s in schemes for k in range(2)]
    assert data["total_steps"] == 7 and data["rows"][3]["alpha"] == pytest.approx(0.4)
    # each scheme draws its own weights (seed 0 of Kaiming-uniform and of Xavier-normal differ)
    assert not torch.equal(seen[0][3], seen[6][3])


def test_theorem4_k_hat_is_the_max_of_n_distinct_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.estimate

    scale = dataclasses.replace(
        QUICK, adam=dataclasses.replace(QUICK.adam, width=4, theorem4_pool=5, theorem4_ns=(1, 5), theorem4_repeats=1000)
    )
    pool = [1.0, 2.0, 3.0, 4.0, 10.0]
    seen: dict[str, Any] = {}

    def fake(model: Any, loss: Any, data: Any, *, num_samples: int, sampler: Any, progress: bool) -> Any:
        seen.update(num_samples=num_samples, sampler=sampler.args)
        return type("E", (), {"samples": [type("S", (), {"value": v})() for v in pool]})()

    monkeypatch.setattr(theorylr.estimate, "smoothness", fake)
    data = ea._theorem4(Context(tmp_path, scale, verbose=False))
    assert seen == {"num_samples": 5, "sampler": ("kaiming_uniform",)} and data["pool"] == pool
    one, every = data["rows"]
    assert (one["n"], every["n"]) == (1, 5)
    # N = the whole pool, drawn without replacement: always its maximum
    assert every["min"] == every["max"] == every["median"] == every["p10"] == every["p90"] == 10.0
    assert one["min"] == 1.0 and one["max"] == 10.0 and one["p10"] <= one["median"] <= one["p90"]
    # N = 1: one draw, uniform on the pool; its 10 % and 90 % quantiles are the pool's smallest and largest values
    assert (one["p10"], one["p90"]) == (1.0, 10.0)


def test_init_claim_spread_is_over_the_four_schemes(tmp_path: Path) -> None:
    rows = [{"scheme": s, "alpha": a, "k_hat": 1.0} for s, a in zip((*ea.INIT_SCHEMES, "default"), (1, 2, 1, 1, 50))]
    claim = ea._init_claim(
        Context(tmp_path, QUICK, verbose=False), {"rows": rows, "workload": "w", "total_steps": 3}, "f"
    )
    assert claim.values["spread"] == 2.0 and set(claim.values["alpha_by_scheme"]) == set(ea.INIT_SCHEMES)


# ----------------------------------------------------------------------------------------------------------------
# the full form is the papers' size


def test_theory_demo_cases_are_the_papers() -> None:
    from theorylr.lab import lars_theory_demo as demo

    # §3.3: any convex f, so the interval experiment runs more than the quadratic; §6.1: the fallback at 0.01
    assert {case[0] for case in demo.ONE_D_CASES} == set(demo.FUNCTIONS_1D) and len(demo.FUNCTIONS_1D) >= 3
    assert demo.ORIGIN_CASE[3] == lr_._FALLBACK == 0.01


def test_full_scale_is_the_papers_size() -> None:
    from theorylr.lab.reproduce import FULL

    # exact-step Adam §5.2: 1000-wide MLPs with 1, 3, 5 hidden layers, 100 epochs; §5.4 LeNet on 28x28 MNIST
    assert (FULL.adam.width, FULL.adam.depths, FULL.adam.epochs, FULL.adam.lenet_image_size) == (
        1000,
        (1, 3, 5),
        100,
        28,
    )
    assert None in FULL.adam.batch_sizes and FULL.adam.schedulers == QUICK.adam.schedulers
    assert FULL.adam.constants == (1e-2, 1e-3, 1e-4, 1e-5)
    # LipschitzLR Table 2 epochs; Table 4 CNN 20 epochs on 28x28 (all of it); ResNet-20 300 epochs
    assert dict(FULL.lipschitz.table2_epochs) == {"iris": 200, "digits": 200, "breast_cancer": 1000}
    assert (FULL.lipschitz.cnn_epochs, FULL.lipschitz.cnn_image_size, FULL.lipschitz.cnn_train_size) == (20, 28, None)
    assert FULL.lipschitz.resnet_epochs == 300
    assert FULL.seeds > 1 and FULL.adam.full_only and FULL.lars.full_only and FULL.lipschitz.full_only
    assert not (QUICK.adam.full_only or QUICK.lars.full_only or QUICK.lipschitz.full_only)


def test_lipschitz_table1_cache_key_has_the_epoch_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[Any] = []

    class _StopError(Exception):
        pass

    def cached(self: Context, name: str, config: Any, compute: Any) -> Any:
        configs.append((name, json.loads(json.dumps(dict(config), default=list))))
        raise _StopError

    monkeypatch.setattr(Context, "cached", cached)
    for cap in (50, 60):
        scale = dataclasses.replace(QUICK, lipschitz=dataclasses.replace(QUICK.lipschitz, table1_max_epochs=cap))
        with pytest.raises(_StopError):
            lp.run_lipschitz(Context(tmp_path, scale, verbose=False))
    (first_name, first), (_, second) = configs
    assert first_name == "table1" and first != second and first["max_epochs"] == 50


def test_interval_claim_counts_runs_as_long_as_their_prediction_and_names_the_far_case(
    tmp_path: Path, origin: dict[str, Any]
) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    interval = lr_._interval_1d(12)
    rows = interval["rows"]
    # a run exactly as long as its predicted step count is a test (and here a failed one)
    probe = next(r for r in rows if 0 < r["predicted_steps"] <= 12)
    for r in rows:
        r["steps_run"] = r["predicted_steps"] if r is probe else -1
    probe["measured_steps"] = -1
    far = next(r for r in rows if (r["w0"], r["a"], r["lr"]) == (0.02, 3.0, 0.05))
    far["measured_steps"] = 4321  # the example the measured text quotes is this case's row
    c1, c2 = lr_._claims_1d(ctx, interval, origin, "f.png")
    assert c1.verdict == "does not hold"
    assert "w0=0.02, a=3, lr=0.05: 4321 steps" in c1.measured
    assert c2.verdict == "holds"
    # a sign change of the pure eq. (1) run refutes "never change sign"
    origin = {"rows": [dict(r) for r in origin["rows"]]}
    origin["rows"][0]["sign_changes"] = 1
    assert lr_._claims_1d(ctx, interval, origin, "f.png")[1].verdict == "does not hold"


def test_exact_adam_analytic_cache_keys_cover_the_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs: dict[str, list[Any]] = {}
    compared: list[Any] = []

    def cached(self: Context, name: str, config: Any, compute: Any) -> Any:
        configs.setdefault(name, []).append(json.loads(json.dumps(dict(config), default=list)))
        return {"rows": [], "pool": [1.0], "workload": "w", "total_steps": 1}

    class _StopError(Exception):
        pass

    def stop(*args: Any) -> None:
        raise _StopError

    monkeypatch.setattr(Context, "cached", cached)
    monkeypatch.setattr(
        ea, "_compare", lambda ctx, label, w, epochs: compared.append(w) or ea._Comparison(label, w, {}, [], [])
    )
    monkeypatch.setattr(ea, "_comparison_claims", lambda *args: ([], []))
    monkeypatch.setattr(ea, "_batch_sizes", lambda ctx: (None, []))
    monkeypatch.setattr(ea, "_plot_init_and_theorem4", stop)
    base = dataclasses.replace(QUICK.adam, epochs=3, init_seeds=1, theorem4_repeats=10, theorem4_pool=4)
    for adam in (
        base,
        dataclasses.replace(base, epochs=4),
        dataclasses.replace(base, init_seeds=2),
        dataclasses.replace(base, theorem4_repeats=11),
        dataclasses.replace(base, theorem4_pool=5),
    ):
        with pytest.raises(_StopError):
            ea.run_exact_adam(Context(tmp_path, dataclasses.replace(QUICK, adam=adam), verbose=False))
    init, thm4 = configs["c4_init_schemes"], configs["thm4_k_hat"]
    assert init[0] != init[1] and init[0] != init[2]  # T and the number of draws per scheme
    assert thm4[0] != thm4[3] and thm4[0] != thm4[4]  # repeats and pool
    assert init[0]["num_samples"] == QUICK.adam.num_samples
    # with MNIST and CIFAR-10 files: §5.3's batch of 5000 MNIST images; VGG-9 is for the full form only
    ctx = Context(tmp_path, dataclasses.replace(QUICK, adam=base), data_dir=str(tmp_path), verbose=False)
    ctx._probed.update(mnist=None, cifar10=None)
    compared.clear()
    with pytest.raises(_StopError):
        ea.run_exact_adam(ctx)
    n = len(base.depths) + len(base.minibatch_depths)
    assert [w.batch_size for w in compared[:n]] == [None] * len(base.depths) + [5000] * len(base.minibatch_depths)
    assert [w.name for w in compared[n:]] == ["adam-mnist-lenet"]
    assert not any("vgg" in w.name for w in compared)


def test_competitive_compares_with_every_other_rule_and_the_table_shows_alpha(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def summary(acc: float, alpha: float | None = None) -> _Summary:
        run = _Run(tmp_path, "r", grad_norm=[1.0, 0.1], train_loss=[2.3, 0.1], test_accuracy=[0.1, acc])
        if alpha is not None:
            run.meta = {"setup": {"exact_step": {"alpha": alpha}}}
        return _Summary([run], lr=0.01)

    summaries = {"exact-adam": summary(0.9, alpha=0.0123), "adam-cosine": summary(0.9), "adam@0.01": summary(0.99)}
    c = ea._Comparison("net", ea._mlp(Context(tmp_path, QUICK), 1, None), summaries, ["adam-cosine"], ["adam@0.01"])  # type: ignore[arg-type]
    monkeypatch.setattr(ea, "_plot_comparison", lambda ctx, c: None)
    claims, _ = ea._comparison_claims(
        Context(tmp_path, QUICK, verbose=False),
        "x",
        "§5.2",
        "w",
        [c],
        {"schedulers": "", "constants": "", "competitive": ""},
    )
    competitive = next(k for k in claims if k.id == "x-competitive")
    assert competitive.verdict == "does not hold"  # a constant step reached 0.99: 0.9 is more than 2 points below
    table = ea._settings_table([c], (1e-3, 1e-2), 2)
    exact_row = next(row for row in table["rows"] if row[1] == "exact-adam")
    assert exact_row[3] == "0.0123"
