"""The LARS theory demonstration runs, writes its two files atomically, and its numbers are the theory's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from theorylr.lab.lars_theory_demo import ONE_D_CASES, TWO_D_LRS, run_lars_theory_demo
from theorylr.theory import lars as theory


def _sections(text: str) -> dict[str, list[list[str]]]:
    """Rows (whitespace-split) of each ``## name`` section, without the column-header line."""
    out: dict[str, list[list[str]]] = {}
    current = None
    header_pending = False
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].split(":")[0]
            if name in ("one_d", "origin", "two_d"):
                current, header_pending = name, True
                out[name] = []
            continue
        if not line.strip() or line.startswith("#") or current is None:
            if not line.strip():
                current = None
            continue
        if header_pending:
            header_pending = False
            continue
        out[current].append(line.split())
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], str]:
    out = tmp_path_factory.mktemp("lars_theory")
    (out / "lars_theory.txt").write_text("stale", encoding="utf-8")  # a previous run's file is replaced
    paths = run_lars_theory_demo(out)
    return paths, paths["summary"].read_text(encoding="utf-8")


def test_writes_the_plot_and_the_summary_atomically(demo: tuple[dict[str, Path], str]) -> None:
    paths, _ = demo
    assert set(paths) == {"plot", "summary"}
    assert paths["plot"].name == "lars_theory.png" and paths["summary"].name == "lars_theory.txt"
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert demo[1].startswith("# LARS theory demonstration")
    assert sorted(p.name for p in paths["plot"].parent.iterdir()) == ["lars_theory.png", "lars_theory.txt"]


def test_one_d_rows_are_the_theory_and_the_optimizer_agrees(demo: tuple[dict[str, Path], str]) -> None:
    rows = _sections(demo[1])["one_d"]
    assert len(rows) == len(ONE_D_CASES)
    for (name, w0, a, lr), row in zip(ONE_D_CASES, rows):
        function, w0_s, a_s, lr_s, predicted, approx, measured, stays = row
        assert (function, float(w0_s), float(a_s), float(lr_s)) == (name, w0, a, lr)
        assert int(predicted) == theory.steps_to_interval(w0, a, lr)
        assert float(approx) == pytest.approx(theory.steps_to_interval_approx(w0, a, lr), abs=0.006)
        assert int(measured) == int(predicted) and stays == "yes"


def test_origin_row_is_the_theory(demo: tuple[dict[str, Path], str]) -> None:
    (row,) = _sections(demo[1])["origin"]
    w0, a, lr, min_norm, predicted, measured, rate_error, final = row
    assert int(predicted) == theory.steps_to_fallback(float(w0), float(lr), float(min_norm))
    assert int(measured) == int(predicted)
    assert float(rate_error) < 1e-12
    low, high = theory.invariant_interval(float(a), float(lr))
    assert low <= float(final) <= high  # after the fallback the iterates reach a's interval


def test_two_d_rows_are_the_theory_and_the_region_grows_with_lr(demo: tuple[dict[str, Path], str]) -> None:
    text = demo[1]
    match = re.search(r"kappa ([0-9.]+), \|\|w\*\|\| = ([0-9.]+)", text)
    assert match is not None
    kappa, w_star = float(match.group(1)), float(match.group(2))
    rows = _sections(text)["two_d"]
    assert [float(r[0]) for r in rows] == list(TWO_D_LRS)
    measured_sizes = []
    for lr_s, lower, measured, radius, constant, entered, within in rows:
        lr = float(lr_s)
        assert float(lower) == pytest.approx(theory.region_lower_bound(lr, w_star), rel=1e-6)
        expected_radius = theory.region_radius(lr, w_star, theory.quadratic_cosine_bound(kappa))
        assert float(radius) == pytest.approx(expected_radius, rel=1e-6)
        assert float(constant) == pytest.approx(expected_radius / (lr * w_star), abs=1e-4)
        assert float(lower) <= float(measured) <= float(radius) and within == "yes"
        assert int(entered) >= 0
        measured_sizes.append(float(measured))
    assert measured_sizes == sorted(measured_sizes)
    gd = re.search(r"gradient_descent lr=1/L: \|w - w\*\| after \d+ steps = ([0-9.e+-]+)", text)
    assert gd is not None and float(gd.group(1)) < 1e-10
