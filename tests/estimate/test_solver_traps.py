"""Spectra that trap an eigen-solver whose stopping test is weakened: each test sets one trap that the solvers'
guards (settled ends, resolved other end, both power runs, ...) avoid, and checks the answer against
``torch.linalg.eigvalsh`` of the dense matrix (float64, diagonal operators: every product is exact).

The traps are narrow on purpose: a start vector with little weight on the extreme eigenvector, and a ``tol``
at which a residual test alone stops on the wrong eigenvalue while the full test goes on to the right one.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import Tensor

from tests.estimate._reference import F64, Quadratic, dense_hessian, output_loss
from theorylr.estimate import EigenResult, hessian_spectral_norm, lanczos, power_iteration
from theorylr.estimate.spectral import _start_vector

# The module itself: the package attribute ``theorylr.estimate.hvp`` is the function of that name.
hvp_module = importlib.import_module("theorylr.estimate.hvp")


def _diag_lanczos(ev: Tensor, v0: Tensor, tol: float, *, which: str = "norm", k: int = 100) -> EigenResult:
    return lanczos(lambda v: ev * v, v0, k=k, tol=tol, which=which)


def _truth(ev: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(torch.diag(ev))


def _cluster_below_outlier() -> tuple[Tensor, Tensor]:
    """98 eigenvalues spread over ``1 + 8e-4 * [0, 1]``, an outlier at ``1.0023`` (start weight 0.4) and the top
    at ``1.005`` with start weight ``3e-4`` (the rest 1): the first Ritz values sit on the cluster with tiny
    residuals, and only later steps reach the top."""
    n = 100
    ev = torch.cat([1 + 8e-4 * torch.linspace(0, 1, n - 2, dtype=F64), torch.tensor([1.0023, 1.005], dtype=F64)])
    v0 = torch.ones(n, dtype=F64)
    v0[-2], v0[-1] = 0.4, 3e-4
    return ev, v0


def _negative_outlier_beyond_bulk(n: int, outlier: float, bulk: float, weight: float) -> tuple[Tensor, Tensor]:
    """Spectrum ``{1, -outlier, bulk * linspace(-1, 1)}``; start weight ``weight`` on ``-outlier``, 1 elsewhere."""
    ev = torch.cat([torch.tensor([1.0, -outlier], dtype=F64), bulk * torch.linspace(-1, 1, n - 2, dtype=F64)])
    v0 = torch.ones(n, dtype=F64)
    v0[1] = weight
    return ev, v0


def _low_outlier_below_cluster(
    n: int, spread: float, low: float, top_weight: float, low_weight: float
) -> tuple[Tensor, Tensor]:
    """Spectrum ``{1, -low, spread * linspace(-1, 1)}`` (a dominant top, a cluster near 0 and an outlier below it);
    start weights ``top_weight`` on 1 and ``low_weight`` on ``-low``, 1 on the cluster."""
    ev = torch.cat([torch.tensor([1.0, -low], dtype=F64), spread * torch.linspace(-1, 1, n - 2, dtype=F64)])
    v0 = torch.ones(n, dtype=F64)
    v0[0], v0[1] = top_weight, low_weight
    return ev, v0


@pytest.mark.parametrize("tol", [8e-5, 1e-4])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_lanczos_does_not_stop_on_a_cluster_below_an_outlier(sign: float, tol: float) -> None:
    """Trap: a spread cluster just below an outlier the start vector barely sees (and its negation, where the
    dominant end is the low one). The residual at the cluster passes ``tol`` after 2-4 steps, while the dominant
    Ritz value is still moving; waiting for the dominant end to settle reaches the outlier. Kills a Lanczos that
    skips the settled test, and one that checks the settling of the high end whatever the dominant end is."""
    ev, v0 = _cluster_below_outlier()
    ev = sign * ev
    truth = _truth(ev)
    dominant = float(truth[-1]) if sign > 0 else float(truth[0])
    r = _diag_lanczos(ev, v0, tol)
    assert r.converged
    assert abs(r.eigenvalue - dominant) <= tol * abs(dominant), (r.eigenvalue, dominant, r.matvecs)


@pytest.mark.parametrize("tol", [1.5e-5, 2e-5, 2.5e-5])
def test_lanczos_norm_does_not_take_an_unresolved_other_end_as_smaller(tol: float) -> None:
    """Trap: spectrum ``{1, -1.1, bulk in +-0.5}`` with start weight ``1e-5`` on ``-1.1``. Early on the low Ritz
    value is below 1 in magnitude but far from converged (its residual is large): it is not *resolved* as the
    smaller magnitude until ``|theta_o| + r_o < |theta_d|``. Kills a test that compares ``|theta_o|`` alone, and
    one that accepts the other end whatever its residual; both report the norm 1.0 as converged."""
    ev, v0 = _negative_outlier_beyond_bulk(100, 1.1, 0.5, 1e-5)
    truth = _truth(ev)
    norm = float(truth.abs().max())
    r = _diag_lanczos(ev, v0, tol)
    assert r.converged
    assert abs(abs(r.eigenvalue) - norm) <= tol * norm, (r.eigenvalue, norm, r.matvecs)
    assert abs(r.lambda_min - float(truth[0])) <= tol * norm


def _assert_both_ends(r: EigenResult, truth: Tensor, tol: float) -> None:
    bound = tol * float(truth.abs().max())
    assert r.converged
    assert abs(r.lambda_max - float(truth[-1])) <= bound, (r.lambda_max, float(truth[-1]), r.matvecs)
    assert abs(r.lambda_min - float(truth[0])) <= bound, (r.lambda_min, float(truth[0]), r.matvecs)


def test_lanczos_both_waits_for_the_low_end_to_settle() -> None:
    """Trap (``which="both"``): dominant top 1 (start weight 0.05), a cluster in ``+-5e-4`` and an outlier at
    ``-0.3`` with start weight ``1e-6``. The top settles in two steps; the low Ritz value sits in the cluster with
    a residual below ``tol`` but then moves to ``-0.3``. Kills a settled test on the smaller of the two ends'
    moves (it stops with ``lambda_min`` near 0)."""
    ev, v0 = _low_outlier_below_cluster(100, 5e-4, 0.3, 0.05, 1e-6)
    _assert_both_ends(_diag_lanczos(ev, v0, 1e-3, which="both"), _truth(ev), 1e-3)


def test_lanczos_both_needs_the_other_end_converged() -> None:
    """Trap (``which="both"``): dominant top 1 (start weight 0.03), a cluster in ``+-4e-4`` and an outlier at
    ``-0.02`` with start weight ``1e-4``. For a few steps both ends move by less than ``tol`` while the low end's
    residual is still above ``tol * |top|``; "both" must wait for that residual. Kills a test that accepts the
    other end whatever its residual (and a settled test on the smaller move)."""
    ev, v0 = _low_outlier_below_cluster(100, 4e-4, 0.02, 0.03, 1e-4)
    _assert_both_ends(_diag_lanczos(ev, v0, 3e-4, which="both"), _truth(ev), 3e-4)


def test_lanczos_bound_is_relative_to_the_dominant_end() -> None:
    """Trap: a PSD spectrum ``{1, 0, 0.1..0.5}``, whose low end tends to 0. The residual bound is ``tol`` times
    the *dominant* magnitude; a bound relative to the other end shrinks with it and Lanczos runs on (about 30
    matvecs instead of 10) for the same answer."""
    n = 100
    ev = torch.cat([torch.tensor([1.0, 0.0], dtype=F64), torch.linspace(0.1, 0.5, n - 2, dtype=F64)])
    r = _diag_lanczos(ev, torch.ones(n, dtype=F64), 1e-6, k=60)
    assert r.converged
    assert r.eigenvalue == pytest.approx(1.0, rel=1e-6)
    assert r.matvecs <= 15, r.matvecs


def test_power_method_is_not_converged_when_the_second_run_is_not() -> None:
    """Trap: Hessian with eigenvalues ``{10, 0, 0.5}``. The first power run converges to 10 at once; the shifted
    run on ``H - 10 I`` (ratio 0.95) cannot reach ``tol`` in 50 products, so ``converged`` must be ``False``
    (it is ``first.converged and other.converged``)."""
    data = (torch.zeros(1, 1), torch.zeros(1))
    r = hessian_spectral_norm(Quadratic([10.0, 0.0, 0.5]), output_loss, data, method="power", max_matvecs=50, seed=0)
    assert r.value == pytest.approx(10.0, rel=1e-6)
    assert not r.converged


def test_power_method_residual_is_that_of_the_larger_magnitude_run() -> None:
    """Trap: Hessian with eigenvalues ``{3, -2.9, 0}`` and 3 products per run: the first run ends near -1, the
    shifted one near 2.3, which gives ``value``. ``residual`` must be ``||H v - lambda v||`` of that pair (the
    second run's), recomputed here from the dense Hessian and the two documented runs, not the first run's."""
    model = Quadratic([3.0, -2.9, 0.0])
    data = (torch.zeros(1, 1), torch.zeros(1))
    r = hessian_spectral_norm(model, output_loss, data, method="power", max_matvecs=3, seed=0)
    h = dense_hessian(model, output_loss, [data])
    v0 = _start_vector(0, 3, model.w)
    first = power_iteration(h.mv, v0, max_iters=3, tol=1e-4)
    other = power_iteration(h.mv, v0, max_iters=3, tol=1e-4, shift=first.eigenvalue)
    top = max((first, other), key=lambda p: abs(p.eigenvalue))
    assert abs(other.eigenvalue) > abs(first.eigenvalue) + 0.5  # the trap: the second run gives the value
    assert r.value == pytest.approx(abs(top.eigenvalue), rel=1e-9)
    explicit = float(torch.linalg.vector_norm(h @ top.vector - top.eigenvalue * top.vector))
    assert r.residual == pytest.approx(explicit, rel=1e-6)


def test_default_graph_budget_is_half_the_free_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trap: 1000 bytes free on the host; the default graph budget is half of it, 500."""
    monkeypatch.setattr(hvp_module, "_free_host_memory", lambda: 1000)
    assert hvp_module.default_graph_budget("cpu") == 500


@pytest.mark.parametrize("scale", [1e-25, 1e20])
@pytest.mark.parametrize("solver", ["lanczos", "power"])
def test_float32_operators_of_tiny_or_huge_scale(scale: float, solver: str) -> None:
    """A float32 norm squares the entries as they are (0 below about 1e-23, inf above about 1e19): a tiny operator
    looked invariant after one product and came back converged with its first Rayleigh quotient, a huge one
    collapsed to the zero vector (eigenvalue 0, converged). The norms are now accumulated in float64."""
    a = torch.diag(torch.tensor([2.0, 1.0, -0.5, 0.3])) * scale
    run = lanczos if solver == "lanczos" else power_iteration
    result = run(a.mv, torch.ones(4), tol=1e-3)
    assert result.converged and result.eigenvalue / scale == pytest.approx(2.0, rel=1e-3)
