"""Power iteration and Lanczos on matrices with known spectra (float64)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from theorylr.estimate import EigenResult, lanczos, power_iteration

F64 = torch.float64


def _matrix(eigenvalues: Sequence[float], seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T


def _counting(a: Tensor) -> tuple[Callable[[Tensor], Tensor], list[int]]:
    calls = [0]

    def matvec(v: Tensor) -> Tensor:
        calls[0] += 1
        return a @ v

    return matvec, calls


def _v0(n: int, seed: int = 1) -> Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _explicit_residual(a: Tensor, r: EigenResult) -> float:
    return float(torch.linalg.vector_norm(a @ r.vector - r.eigenvalue * r.vector))


# Spectra: dominant positive; dominant negative (|lambda_min| > lambda_max); a bulk near zero with outliers.
SPECTRA = {
    "positive": [5.0, 3.0, 1.0, 0.5, -0.2, -1.0],
    "negative": [2.0, 1.0, 0.3, -0.5, -2.5, -6.0],
    "bulk": [40.0, 12.0, *[0.01 * i for i in range(-20, 30)], -7.0],
}


@pytest.mark.parametrize("name", list(SPECTRA))
def test_power_iteration_finds_the_largest_magnitude_with_its_sign(name: str) -> None:
    spectrum = SPECTRA[name]
    a = _matrix(spectrum)
    matvec, calls = _counting(a)
    r = power_iteration(matvec, _v0(a.shape[0]), max_iters=5000, tol=1e-9)
    dominant = max(spectrum, key=abs)
    assert r.converged
    assert r.eigenvalue == pytest.approx(dominant, rel=1e-8)
    assert r.matvecs == calls[0]
    assert r.residual == pytest.approx(_explicit_residual(a, r), rel=1e-6, abs=1e-12)
    assert r.residual <= 1e-9 * abs(r.eigenvalue)
    assert float(torch.linalg.vector_norm(r.vector)) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(SPECTRA))
def test_power_iteration_shift_finds_the_other_end(name: str) -> None:
    spectrum = SPECTRA[name]
    a = _matrix(spectrum)
    first = power_iteration(a.mv, _v0(a.shape[0]), max_iters=5000, tol=1e-10)
    other = power_iteration(a.mv, _v0(a.shape[0]), max_iters=5000, tol=1e-10, shift=first.eigenvalue)
    dominant = max(spectrum, key=abs)
    opposite = min(spectrum) if dominant > 0 else max(spectrum)
    assert other.converged
    assert other.eigenvalue == pytest.approx(opposite, rel=1e-6)
    assert other.residual == pytest.approx(_explicit_residual(a, other), rel=1e-5, abs=1e-12)


def test_power_iteration_stops_at_the_cap_unconverged() -> None:
    a = _matrix([1.0, 0.99, 0.5])  # ratio 0.99: slow
    matvec, calls = _counting(a)
    r = power_iteration(matvec, _v0(3), max_iters=7, tol=1e-12)
    assert not r.converged
    assert r.matvecs == calls[0] == 7
    assert r.residual == pytest.approx(_explicit_residual(a, r), rel=1e-8)


def test_power_iteration_on_a_null_vector() -> None:
    a = torch.diag(torch.tensor([0.0, 2.0], dtype=F64))
    r = power_iteration(a.mv, torch.tensor([1.0, 0.0], dtype=F64))
    assert r.converged and r.eigenvalue == 0.0 and r.residual == 0.0 and r.matvecs == 1


@pytest.mark.parametrize("name", list(SPECTRA))
def test_lanczos_finds_both_ends(name: str) -> None:
    spectrum = SPECTRA[name]
    a = _matrix(spectrum)
    matvec, calls = _counting(a)
    r = lanczos(matvec, _v0(a.shape[0]), k=60, tol=1e-10, which="both")
    assert r.converged
    assert r.lambda_max == pytest.approx(max(spectrum), rel=1e-9)
    assert r.lambda_min == pytest.approx(min(spectrum), rel=1e-9)
    assert r.eigenvalue == pytest.approx(max(spectrum, key=abs), rel=1e-9)
    assert r.matvecs == calls[0]
    assert r.residual <= 1e-10 * abs(r.eigenvalue)


def test_lanczos_residuals_are_the_true_residuals() -> None:
    spectrum = [i / 50 for i in range(-60, 50)]  # evenly spaced: the ends converge slowly
    a = _matrix(spectrum)
    r = lanczos(a.mv, _v0(a.shape[0]), k=12, tol=0.0)  # stopped early: residuals far from zero
    assert not r.converged and r.matvecs == 12
    assert r.residual > 1e-3
    assert r.residual == pytest.approx(_explicit_residual(a, r), rel=1e-6)
    assert float(torch.linalg.vector_norm(r.vector)) == pytest.approx(1.0)
    assert r.eigenvalues.shape == r.residuals.shape == (12,)
    # Ritz values lie inside the spectrum (Cauchy interlacing).
    assert min(spectrum) <= r.lambda_min and r.lambda_max <= max(spectrum)


def test_lanczos_full_space_gives_every_eigenvalue_without_spurious_copies() -> None:
    spectrum = [10.0, 9.999, 3.0, 1.0, 1e-3, 0.0, -2.0, -9.0]
    a = _matrix(spectrum)
    r = lanczos(a.mv, _v0(8), k=50, tol=0.0)
    assert r.converged and r.matvecs == 8
    torch.testing.assert_close(r.eigenvalues, torch.tensor(sorted(spectrum), dtype=F64), rtol=0, atol=1e-10)


def test_lanczos_invariant_start_stops_at_once() -> None:
    a = torch.diag(torch.tensor([4.0, -1.0, 2.0], dtype=F64))
    r = lanczos(a.mv, torch.tensor([0.0, 3.0, 0.0], dtype=F64), k=10)
    assert r.converged and r.matvecs == 1 and r.eigenvalue == pytest.approx(-1.0)


def test_lanczos_norm_test_stops_earlier_than_both() -> None:
    # The opposite end (lambda_min ~ -0.02 in a bulk) converges slowly in relative terms of its own, but the
    # "norm" test only needs it resolved as smaller in magnitude than the dominant end.
    a = _matrix([50.0, 49.0, *[0.001 * i for i in range(-20, 80)]], seed=3)
    norm = lanczos(a.mv, _v0(a.shape[0]), k=100, tol=1e-8, which="norm")
    both = lanczos(a.mv, _v0(a.shape[0]), k=100, tol=1e-8, which="both")
    assert norm.converged and both.converged
    assert norm.matvecs * 4 < both.matvecs
    assert norm.eigenvalue == pytest.approx(50.0, rel=1e-8)
    assert norm.residual <= 1e-8 * 50.0


def test_lanczos_beats_power_iteration_on_a_clustered_top() -> None:
    spectrum = [1.0, 0.97, 0.95, *[0.5 * i / 100 for i in range(-100, 100)]]
    a = _matrix(spectrum, seed=2)
    lz = lanczos(a.mv, _v0(a.shape[0]), k=200, tol=1e-6)
    pw = power_iteration(a.mv, _v0(a.shape[0]), max_iters=5000, tol=1e-6)
    assert lz.converged and pw.converged
    assert lz.eigenvalue == pytest.approx(1.0, rel=1e-6)
    assert lz.matvecs * 3 < pw.matvecs


def test_float32_operator() -> None:
    a = _matrix(SPECTRA["negative"]).float()
    r = lanczos(a.mv, _v0(6).float(), tol=1e-5)
    assert r.vector.dtype == torch.float32
    assert r.converged and r.eigenvalue == pytest.approx(-6.0, rel=1e-5)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.zeros(2, dtype=F64)), "v0"),
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.ones(2, 2, dtype=F64)), "v0"),
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=torch.long)), "v0"),
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), k=0), "k"),
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), tol=-1.0), "tol"),
        (lambda: lanczos(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), which="top"), "which"),
        (lambda: power_iteration(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), max_iters=0), "max_iters"),
        (lambda: power_iteration(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), tol=float("nan")), "tol"),
        (lambda: power_iteration(torch.eye(2, dtype=F64).mv, torch.ones(2, dtype=F64), shift=float("inf")), "shift"),
    ],
)
def test_invalid_arguments(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_lanczos_does_not_stop_on_a_cluster_below_an_outlier() -> None:
    """A start vector with little weight on the top eigenvector: the first Ritz value sits on the cluster below it
    with a residual under ``tol`` (it is near *an* eigenvalue). Lanczos waits for the end to settle: the second
    step spans both eigenspaces and finds the top exactly."""
    a = torch.diag(torch.tensor([1.0] * 199 + [1.004], dtype=F64))
    v0 = torch.ones(200, dtype=F64)
    v0[-1] = 0.3  # weight 4.5e-4 on the top eigenvector: residual 8.5e-5 at the first step
    first = lanczos(a.mv, v0, k=1, tol=1e-4)
    assert first.residual <= 1e-4 * first.eigenvalue and first.eigenvalue < 1.00001  # the trap
    r = lanczos(a.mv, v0, k=50, tol=1e-4)
    assert r.converged and r.matvecs == 2
    assert r.eigenvalue == pytest.approx(1.004, rel=1e-12)
