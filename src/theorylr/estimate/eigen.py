"""Extreme eigenvalues of a symmetric linear operator given only as a matvec: power iteration and Lanczos.

Both solvers take ``matvec(v) -> A v`` on flat vectors (a :class:`~theorylr.estimate.HessianOperator`, a dense
matrix's ``mv``, anything linear and symmetric) and a starting vector, and stop on the residual: a pair
``(lambda, v)`` with ``||v|| = 1`` is accepted when ``||A v - lambda v|| <= tol * |lambda|``. A residual ``r``
guarantees an eigenvalue of ``A`` within ``r`` of ``lambda`` (Weyl / Bauer-Fike for symmetric matrices): ``tol``
bounds the relative distance to **an** eigenvalue, usually far less for Lanczos (about ``r**2 / gap``).

That this eigenvalue is the extreme one is not certified, by these or any Krylov method: they see the spectrum
only through the start vector, and a start vector with little weight on the top eigenvector can give a small
residual near a cluster below it. Lanczos therefore also waits for its extreme Ritz values to settle (see
:func:`lanczos`), which catches the common case (an outlying eigenvalue just above a large cluster, as in ridge
regression with few samples); a random start vector (the estimators' default) makes a miss unlikely, and a
second start vector (another ``seed``) checks it.

Precision: the vectors, their orthogonalisation, the tridiagonal eigenproblem and the tests are computed in the
starting vector's dtype promoted to at least float32; ``matvec`` gets its input in the starting vector's own
dtype (a bfloat16 model's, say) and its products are cast up. A product is then only as accurate as its dtype,
about its eps relative to the eigenvalue (``2**-7`` for bfloat16, ``2**-10`` for float16), and no residual can
certify less: when the products are coarser than the working dtype, residuals are reported no smaller than that
floor, and ``converged`` is ``False`` when ``tol`` asks for less than it. The stopping test still holds the
computed residuals to ``tol`` (or runs to the matvec cap): iterating past the floor keeps improving the estimate
(on a bfloat16 MLP, stopping at the floor left ``K`` 5-9 % low where going on reached the float32 value to 0.3 %),
so the result is the best the products allow, only not certified to ``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from theorylr._validation import check_choice, check_int, check_number

__all__ = ["EigenResult", "MatVec", "lanczos", "power_iteration"]

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EigenResult:
    """What an eigensolver found.

    Attributes:
        eigenvalues: the eigenvalue estimates in ascending order, float64 on the CPU: every Ritz value of the last
            Lanczos step (the first and last are the estimates of ``lambda_min`` and ``lambda_max``), or the single
            estimate of power iteration.
        residuals: ``||A y_i - theta_i y_i||`` for each estimate, same order.
        eigenvalue: the estimate of largest magnitude, with its sign.
        vector: its unit eigenvector estimate (dtype and device of the starting vector).
        residual: ``||A vector - eigenvalue * vector||``, no smaller than the products' rounding resolves (see the
            module docstring).
        matvecs: products with ``A`` spent.
        converged: the stopping test held (for Lanczos, at both ends of the spectrum) at the requested ``tol``;
            ``False`` when ``tol`` is below what the products' dtype resolves.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([3.0, 1.0, -4.0], dtype=torch.float64))
        >>> r = lanczos(A.mv, torch.ones(3, dtype=torch.float64))
        >>> [round(e, 6) for e in r.eigenvalues.tolist()], round(r.eigenvalue, 6), r.matvecs, r.converged
        ([-4.0, 1.0, 3.0], -4.0, 3, True)
    """

    eigenvalues: Tensor
    residuals: Tensor
    eigenvalue: float
    vector: Tensor
    residual: float
    matvecs: int
    converged: bool

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue estimate (for power iteration: its single, largest-magnitude estimate)."""
        return float(self.eigenvalues[-1])

    @property
    def lambda_min(self) -> float:
        """The smallest eigenvalue estimate (for power iteration: its single, largest-magnitude estimate)."""
        return float(self.eigenvalues[0])


def _norm(t: Tensor) -> float:
    """``||t||``, accumulated in float64. A float32 norm squares the entries as they are: 0 for entries of about
    1e-23 and below, inf from about 1e19, so that a tiny operator looked invariant after one product (converged,
    50x low on a large-margin float32 network) and a huge one collapsed to the zero vector (eigenvalue 0). Float64
    has the same limits at about 1e-154 and 1e154: a norm that comes out 0 or inf from finite, non-zero entries is
    taken again of ``t / max|t|`` (one more pass, only then)."""
    norm = float(torch.linalg.vector_norm(t, dtype=torch.float64))
    if norm != 0.0 and not math.isinf(norm):
        return norm
    big = float(t.abs().max()) if t.numel() else 0.0
    if big == 0.0 or not math.isfinite(big):
        return norm
    return big * float(torch.linalg.vector_norm(t.to(torch.float64) / big, dtype=torch.float64))


def _unit(v0: Tensor, matvec: MatVec) -> Tensor:
    """``v0`` normalised, in the solvers' working dtype (:func:`_working_dtype`), after checking both arguments."""
    if not callable(matvec):
        raise ValueError(f"matvec must be a callable Tensor -> Tensor (got {matvec!r})")
    if not isinstance(v0, Tensor) or v0.dim() != 1 or v0.numel() == 0:
        raise ValueError(
            f"v0 must be a non-empty 1-D tensor (got {type(v0) if not isinstance(v0, Tensor) else v0.shape})"
        )
    if not v0.is_floating_point():
        raise ValueError(f"v0 must be a floating-point tensor (got {v0.dtype})")
    v = v0.to(_working_dtype(v0.dtype))
    norm = _norm(v)
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"v0 must be finite and non-zero (got norm {norm})")
    return v / norm


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers' vectors and tests are kept in: ``dtype``, promoted to at least float32 (16-bit
    eps, 2**-7 for bfloat16, would blur the orthogonalisation and the stopping tests)."""
    return torch.promote_types(dtype, torch.float32)


def _apply(matvec: MatVec, v: Tensor, dtype: torch.dtype) -> tuple[Tensor, float]:
    """``matvec(v)`` with ``v`` cast to ``dtype`` (the starting vector's: the operator's own, e.g. a bfloat16
    model's), checked to be a vector of ``v``'s length and cast back to ``v``'s dtype and device (an operator may
    compute in its own dtype, e.g. a float32 model's HVP with a float64 starting vector); with the relative
    residual the product resolves (:func:`_floor`)."""
    w = matvec(v.to(dtype))
    if not isinstance(w, Tensor) or w.shape != v.shape:
        got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
        raise ValueError(f"matvec must return a vector shaped like its input, {tuple(v.shape)} (got {got})")
    return w.to(dtype=v.dtype, device=v.device), _floor(v.dtype, dtype, w.dtype)


def _floor(working: torch.dtype, *operator: torch.dtype) -> float:
    """The smallest relative residual a test may trust: 0 when the operator's products are in the working dtype or
    finer (a residual is then as good as the solver's own arithmetic), else the eps of the coarsest dtype they pass
    through (their rounding error is of that order, relative to the eigenvalue, and no residual can resolve less).
    """
    eps = max(torch.finfo(d).eps for d in operator if d.is_floating_point)
    return eps if eps > torch.finfo(working).eps else 0.0


def power_iteration(
    matvec: MatVec, v0: Tensor, max_iters: int = 1000, tol: float = 1e-4, *, shift: float = 0.0
) -> EigenResult:
    r"""The eigenvalue of largest magnitude of a symmetric operator ``A``, by power iteration.

    Iterates :math:`v_{k+1} = (A - sI) v_k / \|(A - sI) v_k\|` and reports the Rayleigh quotient
    :math:`\lambda = v_k^\top A v_k` (signed: a dominant negative eigenvalue comes back negative), stopping when
    :math:`\|(A - sI) v_k - \mu v_k\| \le \mathrm{tol}\,|\mu|` with :math:`\mu = \lambda - s` or after
    ``max_iters`` matvecs. One matvec per iteration. The shift ``s`` turns the method to the other end of the
    spectrum: after a first run gives the dominant :math:`\lambda_1`, a run with ``shift=lambda_1`` converges to
    the eigenvalue farthest from :math:`\lambda_1`, i.e. the opposite end. Products in a 16-bit dtype resolve
    the residual only down to about their eps times :math:`\max(|\mu|, |\lambda|)` (their rounding is
    relative to :math:`A v`, not to the shifted product): see the module docstring.

    Convergence is linear with ratio :math:`|\mu_2 / \mu_1|` (second over first largest magnitude of
    :math:`A - sI`): slow when the two ends have similar magnitudes, in which case ``converged`` stays ``False``
    (prefer :func:`lanczos`, which gives both ends at once and converges much faster).

    Args:
        matvec: ``v -> A v`` on flat vectors; ``A`` symmetric.
        v0: starting vector (not all zero). ``matvec`` gets vectors of its dtype and device; the iteration runs
            in that dtype promoted to at least float32 (see the module docstring), and the eigenvector comes back
            in ``v0``'s dtype.
        max_iters: matvec cap (default 1000).
        tol: relative residual tolerance (default ``1e-4``).
        shift: ``s`` above (default 0).

    Returns:
        :class:`EigenResult` with one eigenvalue (of ``A``, shift added back).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([1.0, 2.0, -5.0], dtype=torch.float64))
        >>> r = power_iteration(A.mv, torch.ones(3, dtype=torch.float64), tol=1e-8)
        >>> round(r.eigenvalue, 6), r.converged
        (-5.0, True)
        >>> round(power_iteration(A.mv, torch.ones(3, dtype=torch.float64), tol=1e-8, shift=-5.0).eigenvalue, 6)
        2.0

    Reference:
        The power method of Algorithm 2, step 5, in the exact-step Adam paper (Müntz, 1913).
    """
    check_int("max_iters", max_iters, min_value=1)
    check_number("tol", tol, min_value=0.0)
    check_number("shift", shift)
    v = _unit(v0, matvec)
    mu = 0.0
    residual = math.inf
    converged = False
    matvecs = 0
    floor = 0.0  # the relative error of the products (0 unless they are coarser than v)
    resolved = 0.0  # the residual they resolve
    while matvecs < max_iters:
        w, product_floor = _apply(matvec, v, v0.dtype)
        floor = max(floor, product_floor)
        if shift != 0.0:
            w = w - shift * v
        matvecs += 1
        mu = float(torch.dot(v, w))
        # The products' rounding is relative to A v, not to the shifted (A - sI) v: |mu + s|, not |mu|.
        resolved = floor * max(abs(mu), abs(mu + shift))
        raw = _norm(w - mu * v)
        residual = max(raw, resolved)  # reported: no smaller than the products resolve
        if raw <= tol * abs(mu):  # the test keeps the requested tol (stopping at the floor stopped short)
            converged = True
            break
        if matvecs < max_iters:  # w != 0 here: w = 0 means mu = 0 and residual 0, accepted above
            v = w / _norm(w)
    if resolved > tol * abs(mu):  # stopped where the products' rounding hides the rest: not converged to tol
        converged = False
    value = mu + shift
    return EigenResult(
        eigenvalues=torch.tensor([value], dtype=torch.float64),
        residuals=torch.tensor([residual], dtype=torch.float64),
        eigenvalue=value,
        vector=v.to(v0.dtype),
        residual=residual,
        matvecs=matvecs,
        converged=converged,
    )


def lanczos(matvec: MatVec, v0: Tensor, k: int = 100, tol: float = 1e-4, *, which: str = "norm") -> EigenResult:
    r"""Both extreme eigenvalues of a symmetric operator ``A``, by Lanczos with full re-orthogonalisation.

    Builds an orthonormal basis :math:`Q_j = [q_1, \dots, q_j]` of the Krylov space
    :math:`\mathcal{K}_j(A, v_0)` with :math:`A Q_j = Q_j T_j + \beta_j q_{j+1} e_j^\top`, :math:`T_j` tridiagonal
    (diagonal :math:`\alpha`, off-diagonal :math:`\beta`). Each new vector is orthogonalised against all previous
    ones twice (classical Gram-Schmidt, twice), so the basis stays orthonormal to working precision and no spurious
    copies of converged eigenvalues appear. The Ritz pairs :math:`(\theta_i, y_i = Q_j s_i)` from
    :math:`T_j = S \Theta S^\top` have residuals :math:`\|A y_i - \theta_i y_i\| = \beta_j |s_{j,i}|` for free.

    Let :math:`\theta_d` be the end (smallest or largest Ritz value) of largest magnitude, :math:`\theta_o` the
    other end, :math:`r_d, r_o` their residuals. The stopping test is

    * ``which="norm"`` (default, for the spectral norm :math:`\max_i |\lambda_i|`):
      :math:`r_d \le \mathrm{tol}\,|\theta_d|`, and the other end is either converged in the same sense
      (:math:`r_o \le \mathrm{tol}\,|\theta_d|`) or resolved as the smaller magnitude
      (:math:`|\theta_o| + r_o < |\theta_d|`);
    * ``which="both"``: :math:`r_d \le \mathrm{tol}\,|\theta_d|` and :math:`r_o \le \mathrm{tol}\,|\theta_d|`;

    and the ends the test needs (:math:`\theta_d` for ``"norm"``, both for ``"both"``) moved by at most
    :math:`\mathrm{tol}\,|\theta_d|` since the previous step (so at least two steps). A small residual alone
    only places :math:`\theta_d` near *an* eigenvalue: on a Hessian with a few eigenvalues just above a large
    cluster, the first step's Ritz value can sit on the cluster with a residual below ``tol``, and the second step
    jump to the top. Ritz values at the ends only move outwards (Cauchy interlacing), so a settled end is one that
    the last step did not push. (Nothing certifies the extreme: with several close outliers a start vector nearly
    orthogonal to the top one can still stop short of it, by about the outliers' spread.)

    It also stops when the Krylov space is invariant (:math:`\beta_j` within ``10 * eps`` of the working dtype
    times the scale of :math:`T_j`, or ``j == len(v0)``: the Ritz values are then exact, up to the products'
    rounding), or after ``k`` matvecs. One matvec per step; memory is ``k`` vectors the size of ``v0``.

    Args:
        matvec: ``v -> A v`` on flat vectors; ``A`` symmetric.
        v0: starting vector (not all zero). ``matvec`` gets vectors of its dtype and device; the basis, its
            orthogonalisation and the tests are in that dtype promoted to at least float32 (see the module
            docstring), and the eigenvector comes back in ``v0``'s dtype.
        k: largest Krylov dimension, i.e. matvec cap (default 100).
        tol: relative residual tolerance (default ``1e-4``).
        which: ``"norm"`` or ``"both"``, the stopping test above.

    Returns:
        :class:`EigenResult` with every Ritz value; ``eigenvalue``/``vector``/``residual`` describe the end of
        largest magnitude.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.arange(-10.0, 6.0, dtype=torch.float64))  # eigenvalues -10, ..., 5
        >>> r = lanczos(A.mv, torch.ones(16, dtype=torch.float64), k=30, tol=1e-10)
        >>> round(r.lambda_min, 8), round(r.lambda_max, 8), round(r.eigenvalue, 8), r.matvecs
        (-10.0, 5.0, -10.0, 16)

    Reference:
        Lanczos (1950); Golub & Van Loan, *Matrix Computations*, Section 10.1. The exact-step Adam paper uses the power
        method (Algorithm 2, step 5); Lanczos gives the same spectral norm with far fewer matvecs
        (``benchmarks/curvature``).
    """
    check_int("k", k, min_value=1)
    check_number("tol", tol, min_value=0.0)
    check_choice("which", which, ("norm", "both"))
    q = _unit(v0, matvec)
    n = q.numel()
    k = min(k, n)
    basis = torch.empty((k, n), dtype=q.dtype, device=q.device)
    basis[0] = q
    alphas: list[float] = []
    betas: list[float] = []
    eps = torch.finfo(q.dtype).eps
    floor = 0.0  # the relative residual the products resolve (0 unless they are coarser than the basis)
    converged = False
    theta = torch.zeros(1, dtype=torch.float64)
    previous: Tensor | None = None  # the previous step's Ritz values
    s = torch.ones(1, 1, dtype=torch.float64)
    residuals = torch.full((1,), math.inf, dtype=torch.float64)
    matvecs = 0
    for j in range(k):
        w, product_floor = _apply(matvec, basis[j], v0.dtype)
        floor = max(floor, product_floor)
        matvecs += 1
        alphas.append(float(torch.dot(basis[j], w)))
        for _ in range(2):  # full re-orthogonalisation, twice
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = _norm(w)
        if not (math.isfinite(alphas[-1]) and math.isfinite(beta)):  # a non-finite operator has no spectrum to report
            nan = torch.full((1,), math.nan, dtype=torch.float64)
            return EigenResult(
                eigenvalues=nan,
                residuals=nan.clone(),
                eigenvalue=math.nan,
                vector=torch.full_like(basis[0], math.nan, dtype=v0.dtype),
                residual=math.nan,
                matvecs=matvecs,
                converged=False,
            )
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j > 0:
            off = torch.tensor(betas, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        theta, s = torch.linalg.eigh(t)
        computed = beta * s[-1].abs()
        scale = float(theta.abs().max())
        if j + 1 == n or beta <= 10 * eps * max(scale, float(t.abs().max())):  # invariant Krylov space
            residuals = torch.full_like(computed, floor * scale)  # exact Ritz values, of the rounded products
            converged = True
            break
        # Reported residuals are floored (see the module docstring); the test keeps the requested tol on the
        # computed ones: stopping at the products' floor stopped 16-bit runs after a few matvecs, up to 9 % low,
        # where going on reached the float32 answer. converged is False below the floor (after the loop).
        residuals = computed.clamp(min=floor * scale)
        if (
            previous is not None
            and _ends_converged(theta, computed, tol, which)
            and _ends_settled(theta, previous, tol, which)
        ):
            converged = True
            break
        previous = theta
        if j + 1 < k:
            betas.append(beta)
            basis[j + 1] = w / beta
    if tol < floor:  # stopped where the products' rounding hides the rest: not converged to tol
        converged = False
    end = 0 if abs(float(theta[0])) > abs(float(theta[-1])) else -1
    vector = s[:, end].to(dtype=basis.dtype, device=basis.device) @ basis[: len(alphas)]
    return EigenResult(
        eigenvalues=theta,
        residuals=residuals,
        eigenvalue=float(theta[end]),
        vector=(vector / _norm(vector)).to(v0.dtype),
        residual=float(residuals[end]),
        matvecs=matvecs,
        converged=converged,
    )


def _ends_converged(theta: Tensor, residuals: Tensor, tol: float, which: str) -> bool:
    lo, hi = float(theta[0]), float(theta[-1])
    r_lo, r_hi = float(residuals[0]), float(residuals[-1])
    (top, r_top), (other, r_other) = ((lo, r_lo), (hi, r_hi)) if abs(lo) > abs(hi) else ((hi, r_hi), (lo, r_lo))
    bound = tol * abs(top)
    if r_top > bound:
        return False
    return r_other <= bound or (which == "norm" and abs(other) + r_other < abs(top))


def _ends_settled(theta: Tensor, previous: Tensor, tol: float, which: str) -> bool:
    """Whether the dominant end (``which="norm"``) or both ends (``"both"``) of the Ritz values moved by at most
    ``tol`` times the dominant magnitude since the previous step."""
    bound = tol * float(theta.abs().max())
    moved_lo, moved_hi = abs(float(theta[0] - previous[0])), abs(float(theta[-1] - previous[-1]))
    if which == "both":
        return max(moved_lo, moved_hi) <= bound
    return (moved_lo if abs(float(theta[0])) > abs(float(theta[-1])) else moved_hi) <= bound
