"""The paper's closed forms (LipschitzLR §4-§5, §7.1) against hand computations on tiny matrices."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import Tensor

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import (
    ACTIVATION_NORMS,
    activation_norm,
    binary_cross_entropy,
    l2_term,
    least_squares,
    least_squares_nn,
    least_squares_nn_rigorous,
    least_squares_rigorous,
    logistic_regression,
    softmax_cross_entropy,
    softmax_regression,
    spectral_norm_bound,
    tikhonov_term,
    weight_bound_estimate,
)

F64 = torch.float64


def t(*rows: list[float]) -> Tensor:
    return torch.tensor(list(rows), dtype=F64)


@contextlib.contextmanager
def no_host_sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside, any read of a tensor's value on the host fails (as in ``tests/optim/test_generic.py``)."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        yield


# ----------------------------------------------------------------------------------------------------------------
# K_z: activation norms and the spectral-norm bound
# ----------------------------------------------------------------------------------------------------------------
def test_activation_norm_kinds_by_hand() -> None:
    a = t([3.0, 0.0], [0.0, 4.0], [0.0, 0.0])
    assert activation_norm(a).item() == pytest.approx(5.0)  # sqrt(9 + 16)
    assert activation_norm(a, "fro").item() == pytest.approx(5.0)
    assert activation_norm(a, "spectral").item() == pytest.approx(4.0)  # singular values 4, 3
    assert activation_norm(a, "max_row").item() == pytest.approx(4.0)  # rows of norm 3, 4, 0
    b = t([3.0, 4.0], [1.0, 0.0])
    assert activation_norm(b, "max_row").item() == pytest.approx(5.0)
    # A^T A = [[10, 12], [12, 16]]: largest eigenvalue (26 + sqrt(612)) / 2.
    assert activation_norm(b, "spectral").item() == pytest.approx(math.sqrt((26 + math.sqrt(612)) / 2))


def test_activation_norm_flattens_trailing_dimensions_and_is_detached() -> None:
    a = torch.arange(24, dtype=F64).reshape(2, 3, 4).requires_grad_()
    flat = a.detach().reshape(2, 12)
    for kind in ("fro", "spectral", "max_row"):
        value = activation_norm(a, kind)
        assert not value.requires_grad
        torch.testing.assert_close(value, activation_norm(flat, kind))
    assert activation_norm(a, "max_row").item() == pytest.approx(math.sqrt(sum(i * i for i in range(12, 24))))


def test_activation_norm_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind"):
        activation_norm(t([1.0]), "l1")
    with pytest.raises(ValueError, match="shape"):
        activation_norm(torch.ones(3))
    with pytest.raises(ValueError, match="m >= 1"):
        activation_norm(torch.ones(0, 3))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        activation_norm([[1.0, 2.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (40, 40), (5, 1), (1, 6)])
def test_spectral_norm_bound_brackets_the_svd(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(shape, generator=gen, dtype=F64) + 0.3
    exact = torch.linalg.matrix_norm(a, ord=2).item()
    n = min(shape)
    for squarings in (0, 1, 3, 10):
        bound = spectral_norm_bound(a, squarings=squarings).item()
        assert exact * (1 - 1e-12) <= bound <= exact * n ** (1 / 2 ** (squarings + 1)) * (1 + 1e-12)
    # No squaring: tr(G)^(1/2), the Frobenius norm.
    assert spectral_norm_bound(a, squarings=0).item() == pytest.approx(torch.linalg.vector_norm(a).item())


def test_spectral_norm_bound_special_cases() -> None:
    assert spectral_norm_bound(torch.zeros(3, 2, dtype=F64)).item() == 0.0
    # rank one: tr(G^p)^(1/p) is exact
    u, v = t([1.0], [2.0], [2.0]), t([3.0, 4.0])
    assert spectral_norm_bound(u @ v).item() == pytest.approx(15.0, rel=1e-12)
    # huge and tiny entries do not overflow or underflow in float32
    big = torch.diag(torch.tensor([3e30, 1e30]))
    assert spectral_norm_bound(big).item() == pytest.approx(3e30, rel=1e-3)
    small = torch.diag(torch.tensor([3e-30, 1e-30]))
    assert spectral_norm_bound(small).item() == pytest.approx(3e-30, rel=1e-3)
    with pytest.raises(ValueError, match="squarings"):
        spectral_norm_bound(big, squarings=-1)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_spectral_norm_bound_of_a_non_finite_matrix_is_not_finite(dtype: torch.dtype) -> None:
    # A diverged network's activations: never a finite (let alone zero) "upper bound".
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype)
    with_inf, with_nan, both = a.clone(), a.clone(), a.clone()
    with_inf[0, 0] = -math.inf
    with_nan[1, 0] = math.nan
    both[0, 0], both[1, 1] = math.inf, math.nan
    assert spectral_norm_bound(with_inf).item() == math.inf
    assert math.isnan(spectral_norm_bound(with_nan).item())
    assert math.isnan(spectral_norm_bound(both).item())


# ----------------------------------------------------------------------------------------------------------------
# Least squares (§4.1, §4.2, §7.1)
# ----------------------------------------------------------------------------------------------------------------
X2 = t([1.0, 0.0], [0.0, 2.0])  # X^T X = diag(1, 4); ||X||_2 = 2
Y2 = torch.tensor([1.0, 1.0], dtype=F64)  # X^T y = (1, 2)


def test_least_squares_paper_form_by_hand() -> None:
    # (K/m) ||X^T X||_F - (1/m) ||X^T y|| = (3 sqrt(17) - sqrt(5)) / 2
    value = least_squares(X2, Y2, weight_bound=3.0)
    assert value.item() == pytest.approx((3 * math.sqrt(17) - math.sqrt(5)) / 2)
    # multi-output targets: ||X^T Y||_F
    y = torch.stack([Y2, 2 * Y2], dim=1)
    assert least_squares(X2, y, 3.0).item() == pytest.approx((3 * math.sqrt(17) - math.sqrt(5) * math.sqrt(5)) / 2)


def test_least_squares_non_positive_value_raises_explaining_why() -> None:
    with pytest.raises(ValueError, match=r"subtracting norms is not a valid bound.*triangle inequality"):
        least_squares(X2, Y2, weight_bound=0.1)  # (0.1 sqrt(17) - sqrt(5)) / 2 < 0
    # without the host read: nan, never a negative constant
    assert math.isnan(least_squares(X2, Y2, weight_bound=0.1, check=False).item())
    assert least_squares(X2, Y2, 3.0, check=False).item() == pytest.approx(least_squares(X2, Y2, 3.0).item())


def test_least_squares_rigorous_by_hand() -> None:
    # (K/m) ||X||_2^2 + (1/m) ||X^T y|| = (3 * 4 + sqrt(5)) / 2, up to the 0.5 % of the spectral-norm bound
    exact = (3 * 4 + math.sqrt(5)) / 2
    value = least_squares_rigorous(X2, Y2, 3.0).item()
    assert exact <= value <= exact * 1.005
    assert value > least_squares(X2, Y2, 3.0).item()


def test_least_squares_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weight_bound"):
        least_squares(X2, Y2, -1.0)
    with pytest.raises(ValueError, match="weight_bound"):
        least_squares_rigorous(X2, Y2, float("nan"))
    with pytest.raises(ValueError, match=r"y must be .* m = 2"):
        least_squares(X2, torch.ones(3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="y must be"):
        least_squares_rigorous(X2, torch.ones(2, 1, 1, dtype=F64), 1.0)


def test_least_squares_nn_by_hand_and_with_the_linear_models_eq_11_12_inputs() -> None:
    assert least_squares_nn(5.0, 1.0, 2.0, 4) == pytest.approx((5 - 1) * 2 / 4)
    assert least_squares_nn_rigorous(5.0, 1.0, 2.0, 4) == pytest.approx((5 + 1) * 2 / 4)
    # §4.3, eq. 11-12: a linear model has K_z = ||X||, K_a = K ||X||.
    k, kz, ynorm = 3.0, activation_norm(X2).item(), torch.linalg.vector_norm(Y2).item()
    # (1/2) (3 sqrt(5) - sqrt(2)) sqrt(5), with ||X||_F = sqrt(5), ||y|| = sqrt(2)
    assert least_squares_nn(k * kz, ynorm, kz, 2) == pytest.approx((15 - math.sqrt(10)) / 2)


def test_least_squares_nn_non_positive_value_raises_for_numbers_and_is_nan_for_tensors() -> None:
    with pytest.raises(ValueError, match=r"least_squares_nn_rigorous"):
        least_squares_nn(1.0, 2.0, 1.0, 1)
    with pytest.raises(ValueError, match=r"subtracting norms"):
        least_squares_nn(2.0, 2.0, 1.0, 1)  # exactly 0
    value = least_squares_nn(torch.tensor(1.0), 2.0, 1.0, 1)
    assert isinstance(value, Tensor) and math.isnan(value.item())


def test_weight_bound_estimate_by_hand() -> None:
    x = t([1.0, 2.0], [3.0, 6.0])
    # a = sum of column means = 2 + 4; b = mean of column maxima = (3 + 6) / 2
    assert weight_bound_estimate(x).item() == pytest.approx((6 + 4.5) / 2)
    x = t([-1.0, 0.0, 4.0], [1.0, -2.0, 0.0], [3.0, -1.0, 2.0])
    a = (1.0 - 1.0 + 2.0) / 1  # column means 1, -1, 2
    b = (3.0 + 0.0 + 4.0) / 3
    assert weight_bound_estimate(x).item() == pytest.approx((a + b) / 2)


# ----------------------------------------------------------------------------------------------------------------
# Classification (§5.1, §5.2)
# ----------------------------------------------------------------------------------------------------------------
def test_binary_cross_entropy_and_logistic_regression_by_hand() -> None:
    assert binary_cross_entropy(3.0, 10) == pytest.approx(0.15)
    assert binary_cross_entropy(0.0, 10) == 0.0
    x = t([3.0, 4.0], [0.0, 0.0], [1.0, 2.0], [2.0, 0.0])  # ||X||_F^2 = 25 + 5 + 4
    assert logistic_regression(x).item() == pytest.approx(math.sqrt(34) / 8)
    assert logistic_regression(x, kind="max_row").item() == pytest.approx(5 / 8)


def test_softmax_cross_entropy_and_softmax_regression_by_hand() -> None:
    assert softmax_cross_entropy(3.0, 10, 3) == pytest.approx(2 * 3 / 30)
    assert softmax_cross_entropy(7.0, 5, 10) == pytest.approx(9 * 7 / 50)
    # k = 2 is the binary formula
    assert softmax_cross_entropy(3.0, 10, 2) == pytest.approx(binary_cross_entropy(3.0, 10))
    x = t([3.0, 4.0], [0.0, 0.0])
    assert softmax_regression(x, 5).item() == pytest.approx(4 * 5 / (5 * 2))
    assert softmax_regression(x, 2, kind="spectral").item() == pytest.approx(5 / 4)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: binary_cross_entropy(-1.0, 10), "k_z"),
        (lambda: binary_cross_entropy(1.0, 0), "m"),
        (lambda: binary_cross_entropy(float("inf"), 10), "k_z"),
        (lambda: softmax_cross_entropy(1.0, 10, 1), "k"),
        (lambda: softmax_cross_entropy(1.0, 10, 2.5), "k"),  # type: ignore[call-overload]
        (lambda: softmax_cross_entropy(1.0, -3, 3), "m"),
        (lambda: softmax_regression(t([1.0]), 1), "k"),
        (lambda: least_squares_nn(-1.0, 0.0, 1.0, 1), "k_a"),
        (lambda: least_squares_nn(1.0, -1.0, 1.0, 1), "y_norm"),
        (lambda: least_squares_nn_rigorous(1.0, 0.0, True, 1), "k_z"),
        (lambda: least_squares_nn_rigorous(1.0, 0.0, 1.0, 0), "m"),
        (lambda: l2_term(-0.1, 1.0), "lam"),
        (lambda: l2_term(0.1, -1.0), "weight_bound"),
        (lambda: tikhonov_term("a", 1.0), "gamma"),  # type: ignore[call-overload]
        (lambda: tikhonov_term(0.1, -1.0), "weight_bound"),
        (lambda: tikhonov_term(torch.ones(2, 2, 2), 1.0), "gamma"),
    ],
)
def test_invalid_numbers_raise_value_error_naming_the_argument(call: Callable[[], Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()


# ----------------------------------------------------------------------------------------------------------------
# Regularisers (§5.3)
# ----------------------------------------------------------------------------------------------------------------
def test_l2_and_tikhonov_by_hand() -> None:
    assert l2_term(0.5, 4.0) == 2.0
    assert isinstance(l2_term(1, 2), float)
    assert tikhonov_term(0.5, 4.0) == pytest.approx(2 * 4 * 0.25)
    assert tikhonov_term(torch.tensor(0.5, dtype=F64), 4.0).item() == pytest.approx(2.0)
    assert tikhonov_term(torch.tensor([0.5, -2.0, 1.0], dtype=F64), 4.0).item() == pytest.approx(2 * 4 * 4)
    # Gamma = [[1, 1], [0, 1]]: Gamma^T Gamma = [[1, 1], [1, 2]], largest eigenvalue (3 + sqrt(5)) / 2
    gamma = t([1.0, 1.0], [0.0, 1.0])
    assert tikhonov_term(gamma, 1.0).item() == pytest.approx(3 + math.sqrt(5))
    # L2 (lam / 2) ||w||^2 is Gamma = sqrt(lam / 2) I
    assert tikhonov_term(math.sqrt(0.3 / 2), 2.0) == pytest.approx(l2_term(0.3, 2.0))


def test_tikhonov_term_bounds_the_penalty_slope_in_the_ball() -> None:
    """Brute force: |f(w1) - f(w2)| <= L ||w1 - w2|| for f = ||Gamma w||^2 over many pairs with ||w|| <= K."""
    gen = torch.Generator().manual_seed(1)
    gamma = torch.randn(4, 4, generator=gen, dtype=F64)
    k = 1.5
    lipschitz = tikhonov_term(gamma, k).item()
    w = torch.randn(2, 4000, 4, generator=gen, dtype=F64)
    w = k * w / torch.linalg.vector_norm(w, dim=-1, keepdim=True) * torch.rand(2, 4000, 1, generator=gen, dtype=F64)
    f = torch.linalg.vector_norm(w @ gamma.T, dim=-1) ** 2
    slopes = (f[0] - f[1]).abs() / torch.linalg.vector_norm(w[0] - w[1], dim=-1)
    assert slopes.max().item() <= lipschitz
    # the bound is approached by w1, w2 -> K v (v the top right singular vector of Gamma)
    v = torch.linalg.svd(gamma).Vh[0]
    w1, w2 = k * v, (k - 1e-6) * v
    slope = abs((gamma @ w1).square().sum() - (gamma @ w2).square().sum()) / (w1 - w2).norm()
    assert slope.item() == pytest.approx(lipschitz, rel=1e-5)


def test_tikhonov_term_uses_gamma_t_gamma_where_the_papers_gamma_squared_is_no_bound() -> None:
    """§5.3 writes ``w^T Gamma^2 w`` for ``||Gamma w||^2``; for a non-symmetric Gamma the literal ``2K ||Gamma^2||``
    is smaller than a slope of the penalty inside the ball, and the function's ``2K ||Gamma^T Gamma||`` is not."""
    gamma = t([1.0, 1.0], [0.0, 1.0])
    paper_literal = 2 * torch.linalg.matrix_norm(gamma @ gamma, ord=2).item()  # 2 + 2 sqrt(2) = 4.83
    v = torch.linalg.svd(gamma).Vh[0]
    w1, w2 = v, (1 - 1e-6) * v
    slope = abs((gamma @ w1).square().sum() - (gamma @ w2).square().sum()) / (w1 - w2).norm()
    assert paper_literal == pytest.approx(2 + 2 * math.sqrt(2))
    assert slope.item() > paper_literal + 0.4
    assert slope.item() <= tikhonov_term(gamma, 1.0).item() * (1 + 1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Numbers in, float out; tensors in, tensor out, never read on the host
# ----------------------------------------------------------------------------------------------------------------
SCALAR_CASES: list[tuple[Callable[..., Any], tuple[float, ...]]] = [
    (least_squares_nn, (5.0, 1.0, 2.0, 4.0)),
    (least_squares_nn_rigorous, (5.0, 1.0, 2.0, 4.0)),
    (binary_cross_entropy, (3.0, 10.0)),
    (softmax_cross_entropy, (3.0, 10.0, 3)),
    (l2_term, (0.5, 4.0)),
    (tikhonov_term, (0.5, 4.0)),
]


@pytest.mark.parametrize(("fn", "args"), SCALAR_CASES, ids=[fn.__name__ for fn, _ in SCALAR_CASES])
def test_numbers_give_floats_and_tensors_give_tensors_without_host_sync(
    fn: Callable[..., Any], args: tuple[float, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = fn(*args)
    assert type(expected) is float
    for dtype in (torch.float32, F64):
        with no_host_sync(monkeypatch):
            all_tensors = fn(*(torch.tensor(v, dtype=dtype) for v in args))
            first_tensor = fn(torch.tensor(args[0], dtype=dtype), *args[1:])
        for value in (all_tensors, first_tensor):
            assert isinstance(value, Tensor)
            assert value.dtype == dtype and value.shape == ()
            torch.testing.assert_close(value, torch.tensor(expected, dtype=dtype))


def test_matrix_functions_make_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([1.0, -1.0, 0.5])
    k = torch.tensor(2.0)
    calls: list[Callable[[], Tensor]] = [
        lambda: activation_norm(x),
        lambda: activation_norm(x, "max_row"),
        lambda: spectral_norm_bound(x),
        lambda: least_squares(x, y, k, check=False),
        lambda: least_squares_rigorous(x, y, k),
        lambda: weight_bound_estimate(x),
        lambda: logistic_regression(x),
        lambda: softmax_regression(x, 3),
        lambda: tikhonov_term(torch.tensor([1.0, 2.0]), k),
        lambda: least_squares_nn(3 * k, k, k, 3),
    ]
    with no_host_sync(monkeypatch):
        outputs = [call() for call in calls]
    for call, value in zip(calls, outputs):
        assert isinstance(value, Tensor) and value.shape == () and value.dtype == torch.float32
        torch.testing.assert_close(value, call())  # the same value as computed normally


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_matrices_are_computed_in_float32(dtype: torch.dtype) -> None:
    """16-bit rounding would put the rigorous forms below what they bound (bf16 rounds to 8 bits), float16's
    ``X^T y`` overflows, and torch's matrix norms refuse 16-bit input: they are computed in float32."""
    gen = torch.Generator().manual_seed(4)
    a16 = (torch.randn(64, 30, generator=gen) * 3).to(dtype)
    a = a16.double()  # the same values, exactly
    for kind in ACTIVATION_NORMS:
        value = activation_norm(a16, kind)
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(activation_norm(a, kind).item(), rel=1e-5)
    bound = spectral_norm_bound(a16)
    assert bound.dtype == torch.float32 and bound.item() >= torch.linalg.matrix_norm(a, ord=2).item() * (1 - 1e-5)
    x16 = torch.full((64, 30), 20.0, dtype=dtype)  # X^T y = 64 * 20 * 20 per entry: past float16's 65504
    y16 = torch.full((64,), 20.0, dtype=dtype)
    rigorous = least_squares_rigorous(x16, y16, 1.0)
    assert rigorous.dtype == torch.float32 and torch.isfinite(rigorous)
    exact = least_squares_rigorous(x16.double(), y16.double(), 1.0).item()
    assert rigorous.item() == pytest.approx(exact, rel=1e-5)
    assert rigorous.item() == pytest.approx(
        gradient_norm_bound(x16, "least_squares", targets=y16, weight_bound=1.0).item(), rel=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scalar_forms_of_16_bit_tensors_are_computed_in_float32(dtype: torch.dtype) -> None:
    """The scalar closed forms multiply before they divide: in float16, ``(k - 1) K_z`` overflowed (inf) for a
    ``K_z`` whose ``L`` fits. 16-bit tensors are computed in float32, equal to the Python-number forms to float32
    rounding of the inputs."""
    from theorylr.lipschitz.closed_form import (
        binary_cross_entropy,
        l2_term,
        least_squares_nn,
        least_squares_nn_rigorous,
        tikhonov_term,
    )

    def t(x: float) -> torch.Tensor:
        return torch.tensor(x, dtype=dtype)

    def f(x: float) -> float:
        return float(t(x))  # the value the 16-bit tensor holds

    cases = [
        (softmax_cross_entropy(t(6e4), 64, 10), softmax_cross_entropy(f(6e4), 64, 10)),
        (binary_cross_entropy(t(6e4), 3), binary_cross_entropy(f(6e4), 3)),
        (least_squares_nn(t(1000.0), t(1.0), t(100.0), 64), least_squares_nn(f(1000.0), f(1.0), f(100.0), 64)),
        (
            least_squares_nn_rigorous(t(1000.0), t(1.0), t(100.0), 64),
            least_squares_nn_rigorous(f(1000.0), f(1.0), f(100.0), 64),
        ),
        (l2_term(t(300.0), t(300.0)), l2_term(f(300.0), f(300.0))),
        (tikhonov_term(t(300.0), t(2.0)), tikhonov_term(f(300.0), f(2.0))),
    ]
    for got, want in cases:
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(want, rel=1e-6)
