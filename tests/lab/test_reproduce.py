"""``theorylr reproduce``: criteria as pure functions, numerical references, and a tiny run of every target whose
claims tables are checked against the run files they were read from."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from theorylr.cli import main
from theorylr.lab._files import decode_non_finite as _decode
from theorylr.lab.reproduce import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_RUN_DATA,
    NOT_RUN_FULL,
    PARTLY,
    QUICK,
    Claim,
    Scale,
    read_result,
    reproduce,
    write_page,
)
from theorylr.lab.reproduce import exact_adam as ea
from theorylr.lab.reproduce import lars as lr_
from theorylr.lab.reproduce import lipschitz as lp
from theorylr.lab.reproduce._common import Context
from theorylr.lab.reproduce.claims import verdict_all, verdict_ratio, verdict_universal
from theorylr.lab.reproduce.scale import AdamScale, LarsScale, LipschitzScale
from theorylr.theory import lars as theory

# Every target at a tiny size: the pipeline, not the papers' numbers (most verdicts at this size mean nothing).
TINY = Scale(
    name="tiny",
    lars=LarsScale(
        steps_1d=40, steps_2d=60, theorem_steps=60, eps=(0.5,), fig2_epochs_full=3, fig2_epochs_mini=2, full_only=True
    ),
    adam=AdamScale(
        width=8,
        depths=(1,),
        epochs=3,
        minibatch_depths=(1,),
        minibatch_epochs=2,
        batch_sizes=(512, None),
        batch_epochs=1,
        schedulers=("adam-cosine", "adam-exponential"),
        constants=(1e-2, 1e-3),
        trials=1,
        num_samples=1,
        lenet_epochs=1,
        lenet_image_size=12,
        theorem4_pool=3,
        theorem4_ns=(1, 2),
        theorem4_repeats=20,
        full_only=True,
    ),
    lipschitz=LipschitzScale(
        table1_max_epochs=100,
        table2_epochs={"iris": 3, "digits": 2, "breast_cancer": 3},
        cnn_epochs=1,
        cnn_image_size=8,
        cnn_train_size=60,
        full_only=True,
    ),
)


# ----------------------------------------------------------------------------------------------------------------
# criteria: pure functions of measured numbers


def test_verdict_helpers() -> None:
    assert verdict_all([True, True]) == HOLDS
    assert verdict_all([True, False]) == PARTLY
    assert verdict_all([False, False]) == DOES_NOT_HOLD
    with pytest.raises(ValueError, match="checks"):
        verdict_all([])
    assert [verdict_ratio(v, 1.5, 3.0) for v in (1.5, 1.51, 3.0, 3.01, math.nan)] == [
        HOLDS,
        PARTLY,
        PARTLY,
        DOES_NOT_HOLD,
        DOES_NOT_HOLD,
    ]
    with pytest.raises(ValueError, match="verdict"):
        Claim("a", "b", "c", "d", "e", "f", "g", "maybe")


def test_lars_criteria() -> None:
    assert lr_.early_speed_verdict([10, 4], 5) == HOLDS
    assert lr_.early_speed_verdict([5, 6], 5) == DOES_NOT_HOLD  # a tie is not faster
    assert lr_.early_speed_verdict([-1], -1) == DOES_NOT_HOLD
    assert lr_.loss_increases([1.0, 1.0, 0.5]) == 0
    assert lr_.fig2_optimum_check({"a": 0.1, "b": 0.19}, initial=1.0) is True  # 0.09 <= 0.1 * 0.9
    assert lr_.fig2_optimum_check({"a": 0.1, "b": 0.2}, initial=1.0) is False  # 0.1 > 0.09
    assert lr_.fig2_optimum_check({"a": 0.1, "b": math.inf}, initial=1.0) is False
    assert lr_.fig2_oscillation_check([1.0, 1.1, 1.0, 1.1], [1.0, 1.1, 0.9, 0.95]) is False  # equal rise counts
    assert lr_.fig2_oscillation_check([1.0, 1.1, 1.0, 0.8], [1.0, 0.9, 0.85, 0.9]) is False  # decay ends higher


def test_lipschitz_criteria() -> None:
    assert lp.learned([0.1, 0.149], 10) is False and lp.learned([0.1, 0.151], 10) is True
    assert lp.learned([math.nan, -math.inf], 10) is False
    assert lp.INCONCLUSIVE.startswith("not run (inconclusive")


def test_exact_adam_criteria() -> None:
    assert ea.beats_all(0.1, {"a": 0.2, "b": math.nan}) is True
    assert ea.beats_all(0.2, {"a": 0.2}) is False
    assert ea.beats_all(math.inf, {"a": math.inf}) is False
    assert ea.competitive(0.93, 0.1, [0.95], [0.05]) is True  # 0.93 >= 0.93, 0.1 <= 0.1
    assert ea.competitive(0.93, 0.11, [0.95], [0.05]) is False
    assert ea.batch_size_verdict([(math.inf, 0.1), (64.0, 0.3), (256.0, 0.2)]) == HOLDS  # order of input is free
    assert ea.batch_size_verdict([(64.0, 0.3), (256.0, 0.31), (math.inf, 0.4)]) == DOES_NOT_HOLD
    assert ea.theorem4_checks([4, 1, 2], [3.0, 1.0, 2.0], [0.1, 1.0, 0.5]) == [True, True]
    assert ea.theorem4_checks([1, 2], [2.0, 1.0], [1.0, 0.6]) == [False, False]


# ----------------------------------------------------------------------------------------------------------------
# numerical references


def test_lars_trajectory_is_the_real_optimizer_on_eq1() -> None:
    a, w0, step = 2.0, 0.3, 0.1
    traj = lr_.lars_trajectory(lambda w: torch.log(torch.cosh(w - a)).sum(), [w0], step, 40)
    assert np.allclose(traj[:, 0], theory.lars_1d_trajectory(w0, a, step, 40), rtol=1e-13, atol=0)
    # 2-D: one step of eq. (1) by hand, w1 = w0 - lr ||w0|| g / ||g||
    h = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    w_star = torch.tensor([1.0, -1.0], dtype=torch.float64)
    start = torch.tensor([0.5, 2.0], dtype=torch.float64)
    traj = lr_.lars_trajectory(lambda w: 0.5 * (w - w_star) @ h @ (w - w_star), start.tolist(), 0.2, 1)
    g = h @ (start - w_star)
    assert np.allclose(traj[1], (start - 0.2 * start.norm() * g / g.norm()).numpy(), rtol=1e-14)


@pytest.mark.parametrize("kind", ["bce", "softmax", "least_squares"])
def test_table1_gradients_match_autograd(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 4, generator=g, dtype=torch.float64)
    if kind == "softmax":
        y = torch.randint(0, 3, (7,), generator=g)
        w = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(x @ w, y)
    elif kind == "bce":
        y = torch.randint(0, 2, (7,), generator=g).double()
        w = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y)
    else:
        y = torch.randn(7, generator=g, dtype=torch.float64)
        w = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
        loss = 0.5 * (x @ w - y).square().mean()
    (grad,) = torch.autograd.grad(loss, w)
    value, ours = lp._loss_grad(kind, x, y, w.detach())
    assert value == pytest.approx(float(loss.detach()), rel=1e-13)
    torch.testing.assert_close(ours, grad, rtol=1e-12, atol=1e-15)


def test_table1_reproduces_the_papers_breast_cancer_constant() -> None:
    x, y, k = lp._table1_data("breast_cancer", "bce")
    assert x.shape == (569, 31) and torch.allclose(x.sum(0), torch.ones(31, dtype=torch.float64))
    assert 1.0 / lp.table1_lipschitz("bce", x, y, k)["paper"] == pytest.approx(4280.23, abs=0.005)


def test_gd_epochs_to_threshold_counts_steps() -> None:
    # least squares on x = 1: w_k = 1 - 0.5^k, loss = 0.5 (0.5^k)^2 = 0.5^(2k+1) < 1e-3 first at k = 5
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    epochs, curve = lp.gd_epochs_to_threshold("least_squares", x, y, torch.zeros(1, dtype=torch.float64), 0.5, 1e-3, 50)
    assert epochs == 5.0 and curve[-1] == (5, 0.5**11)
    epochs, _ = lp.gd_epochs_to_threshold("least_squares", x, y, torch.zeros(1, dtype=torch.float64), 0.5, 1e-3, 4)
    assert epochs == math.inf


def test_dataset_problem(tmp_path: Path) -> None:
    assert Context(tmp_path, TINY).dataset_problem("mnist") == "needs --data-dir"
    assert Context(tmp_path, TINY).dataset_problem("digits") is None
    ctx = Context(tmp_path, TINY, data_dir=str(tmp_path), verbose=False)
    assert ctx.dataset_problem("cifar10") == "no readable cifar10 files in --data-dir"
    assert not ctx.has("mnist")


def test_full_only_claims_are_not_run_in_the_quick_form(tmp_path: Path) -> None:
    claim, figures = lr_._fig3(Context(tmp_path, QUICK, data_dir=str(tmp_path), verbose=False))
    assert claim.verdict == NOT_RUN_FULL and figures == [] and not (tmp_path / "runs").exists()


def test_command_line_arguments() -> None:
    with pytest.raises(SystemExit):
        main(["reproduce", "everything", "--out", "x"])
    with pytest.raises(SystemExit):
        main(["reproduce", "all"])  # --out is required


# ----------------------------------------------------------------------------------------------------------------
# a tiny run of every target


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reproduce")
    reproduce("all", out, scale=TINY, verbose=False)
    return out


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _claims(out: Path, paper: str) -> dict[str, Claim]:
    return {c.id: c for c in read_result(out / paper / "tiny").claims}


def test_smoke_writes_claims_figures_and_page(smoke: Path) -> None:
    page = (smoke / "REPRODUCTION.md").read_text(encoding="utf-8")
    assert (smoke / "REPRODUCTION.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    for paper in ("lars", "exact-adam", "lipschitz"):
        result = read_result(smoke / paper / "tiny")
        assert result.claims and result.scale == "tiny"
        for claim in result.claims:
            assert f"**{claim.id}**" in page and claim.verdict in page
            for rel in claim.figures + claim.sources:
                assert (smoke / paper / "tiny" / rel).exists(), rel
        for rel, _ in result.figures:
            assert f"{paper}/tiny/{rel}" in page
        # what wrote each target (a page can gather targets written by several invocations)
        assert result.provenance["torch"] == torch.__version__ and "git_commit" in result.provenance
        assert f"{paper} written {result.provenance['written'][:19].replace('T', ' ')} UTC by commit" in page
    # no --data-dir: the MNIST/CIFAR-10-only claims are not run, and say why
    assert _claims(smoke, "lars")["lars-fig3-resnet"].verdict == NOT_RUN_DATA
    assert _claims(smoke, "exact-adam")["adam-5.4-vgg-schedulers"].verdict == NOT_RUN_DATA
    assert _claims(smoke, "lipschitz")["lipschitz-table3-resnet-adaptive"].verdict == NOT_RUN_DATA


def test_exact_adam_measured_numbers_are_the_run_files(smoke: Path) -> None:
    claims = _claims(smoke, "exact-adam")
    claim = claims["adam-5.2-schedulers"]
    label = "1-layer MLP, full batch"
    runs = smoke / "exact-adam" / "tiny" / "runs" / "adam-digits-mlp1x8-full"
    for rule in ("exact-adam", "adam-cosine", "adam@0.01"):
        last = _metrics(runs / rule / "trial-00" / "seed-0" / "metrics.csv")[-1]
        for column in ("grad_norm", "train_loss", "test_accuracy"):
            assert claim.values[label][column][rule] == float(last[column])

    # the verdict is the stated criterion applied to those numbers: exact below every rule that learned something
    # (test accuracy above chance + 0.05), and the exact-step network itself learned something
    def win(values: dict, names: tuple[str, ...]) -> bool:
        v, acc = values["grad_norm"], values["test_accuracy"]
        live = {n: v[n] for n in names if ea.learned_anything(acc[n])}
        if not ea.learned_anything(acc["exact-adam"]) or not math.isfinite(v["exact-adam"]):
            return False
        return ea.beats_all(v["exact-adam"], live) if live else True

    assert claim.verdict == verdict_all([win(claim.values[label], ("adam-cosine", "adam-exponential"))])
    constants = claims["adam-5.2-constants"]
    assert constants.verdict == verdict_all([win(constants.values[label], ("adam@0.01", "adam@0.001"))])
    # App. C.4 from its analytic file: alpha = sqrt(2 L0 / (K_hat T)) per row, verdict from the spread
    c4 = claims["adam-c4-init"]
    saved = json.loads((smoke / "exact-adam" / "tiny" / c4.sources[0]).read_text())["result"]["rows"]
    assert saved == c4.values["rows"]
    for row in saved:
        assert row["alpha"] == pytest.approx(math.sqrt(2 * row["initial_loss"] / (row["k_hat"] * TINY.adam.epochs)))
    alphas = [row["alpha"] for row in saved if row["scheme"] in ea.INIT_SCHEMES]
    assert c4.verdict == verdict_ratio(max(alphas) / min(alphas), 1.5, 3.0)


def test_lipschitz_measured_numbers_are_the_run_files(smoke: Path) -> None:
    claims = _claims(smoke, "lipschitz")
    t2 = claims["lipschitz-table2-accuracy"]
    checks = []
    for key, name in (("iris", "iris"), ("digits", "digits"), ("breast_cancer", "breast-cancer")):
        runs = smoke / "lipschitz" / "tiny" / "runs" / f"lipschitz-t2-{name}"
        a01 = float(_metrics(runs / "sgd@0.1" / "trial-00" / "seed-0" / "metrics.csv")[-1]["test_accuracy"])
        rows = _metrics(runs / "lipschitz-sgd" / "trial-00" / "seed-0" / "metrics.csv")
        assert t2.values[key]["A_0.1"] == a01
        assert t2.values[key]["A_1/L"] == float(rows[-1]["test_accuracy"])
        assert t2.values[key]["lr_1/L"] == float(np.median([float(r["lr"]) for r in rows[1:]]))
        checks.append(t2.values[key]["A_1/L"] >= a01)
    assert t2.verdict == verdict_all(checks)
    t1 = claims["lipschitz-table1-speed"]
    # the analytic file and claims.json both keep inf ("not reached") and NaN ("L <= 0"), as "inf" and "nan"
    raw = json.loads((smoke / "lipschitz" / "tiny" / "analytic" / "table1.json").read_text())["result"]
    rows = _decode(raw)["rows"]
    assert any(v == math.inf for r in rows for v in r.values())  # the case that used to read back as None

    def same(a: object, b: object) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    claimed = t1.values["rows"]
    assert len(rows) == len(claimed)
    assert all(r.keys() == c.keys() and all(same(r[k], c[k]) for k in r) for r, c in zip(rows, claimed))
    assert t1.verdict == verdict_all([r["epochs 1/L"] < r["epochs 0.1"] for r in rows])


def test_lars_measured_numbers_are_the_run_files(smoke: Path) -> None:
    claims = _claims(smoke, "lars")
    panels = claims["lars-fig2-optimum"].values["panels"]
    runs = smoke / "lars" / "tiny" / "runs" / "lars-svm-fullbatch"
    for key, rule in (("gd", "sgd@0.01"), ("adam", "adam@0.1"), ("lars", "lars"), ("lars-decay", "lars-decay")):
        last = _metrics(runs / rule / "trial-00" / "seed-0" / "metrics.csv")[-1]
        assert panels["SVM, full batch"]["final_train_loss"][key] == float(last["train_loss"])
    checks = [
        lr_.fig2_optimum_check({k: v for k, v in p["final_train_loss"].items() if k != "lars"}, p["initial_train_loss"])
        for p in panels.values()
    ]
    assert claims["lars-fig2-optimum"].verdict == verdict_all(checks)
    interval = claims["lars-3.1-interval"]
    assert all(
        r["predicted_steps"] == theory.steps_to_interval(r["w0"], r["a"], r["lr"]) for r in interval.values["rows"]
    )
    long_enough = [r for r in interval.values["rows"] if r["predicted_steps"] <= r["steps_run"]]
    assert len(long_enough) < len(interval.values["rows"])  # this tiny scale stops before some predicted steps
    assert interval.verdict == verdict_universal(
        [r["measured_steps"] == r["predicted_steps"] and not r["left_interval"] for r in long_enough]
    )


def test_rerun_skips_finished_work_and_gives_the_same_claims(smoke: Path, tmp_path: Path) -> None:
    root = smoke / "lipschitz" / "tiny"
    files = sorted(root.rglob("metrics.csv")) + sorted((root / "analytic").glob("*.json"))
    stamps = {f: os.stat(f).st_mtime_ns for f in files}
    before = {c.id: (c.verdict, c.measured) for c in read_result(root).claims}
    reproduce("lipschitz", smoke, scale=TINY, verbose=False, page_out=tmp_path, figures_subdir="reproduction")
    assert {f: os.stat(f).st_mtime_ns for f in files} == stamps
    assert {c.id: (c.verdict, c.measured) for c in read_result(root).claims} == before
    # the page written elsewhere carries copies of its figures
    page = (tmp_path / "REPRODUCTION.md").read_text(encoding="utf-8")
    copied = sorted((tmp_path / "reproduction" / "lipschitz").glob("*.png"))
    assert copied and all(f"reproduction/lipschitz/{p.name}" in page for p in copied)


def test_write_page_needs_results(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no claims"):
        write_page(tmp_path, "quick")


def test_scales_are_distinct_directories() -> None:
    assert dataclasses.replace(QUICK, name="other").name == "other"
    with pytest.raises(ValueError, match="name"):
        Scale(name="a/b")


def test_cached_results_read_back_equal_with_non_finite_values(tmp_path: Path) -> None:
    ctx = Context(tmp_path, TINY, verbose=False)
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"a": math.inf, "b": [1.0, math.nan, (2, -math.inf)], "c": "x"}

    first = ctx.cached("exp", {"n": (1, 2)}, compute)
    second = ctx.cached("exp", {"n": [1, 2]}, compute)  # same config after JSON: not recomputed
    assert calls == [1]
    assert json.dumps(first) == json.dumps(second)
    assert first["a"] == math.inf and math.isnan(first["b"][1]) and first["b"][2] == [2, -math.inf]
    ctx.cached("exp", {"n": 3}, compute)  # another config: recomputed
    assert calls == [1, 1]
