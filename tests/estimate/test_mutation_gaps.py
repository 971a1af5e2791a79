"""Gaps a mutation review of theorylr.estimate and theorylr.theory.adam found: each test kills a mutant that
survived the rest of the suite (the docstrings name the mutation's effect)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.estimate._reference import F64, classification_data, mlp
from theorylr.estimate import HessianOperator


def _uneven_batches(x: Tensor, y: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes)))


def test_loss_before_any_matvec_is_the_weighted_mean_loss() -> None:
    """``op.loss`` read before any product runs its own forward passes (``_total_loss``)."""
    model, loss_fn = mlp(nn.Tanh), nn.CrossEntropyLoss()
    x, y = classification_data()
    with HessianOperator(model, loss_fn, _uneven_batches(x, y, [11, 4, 9])) as op:
        assert op.loss == pytest.approx(float(loss_fn(model(x), y).detach()), rel=1e-12)
        assert op.matvecs == 0


def test_graph_bytes_leave_out_the_data_and_parameters() -> None:
    """The automatic choice measures what keeping a graph adds: the inputs (held anyway) are not counted, and a
    storage viewed by several saved tensors counts once."""
    torch.manual_seed(0)
    model = nn.Linear(400, 1).to(F64)
    x = torch.randn(600, 400, dtype=F64)
    y = torch.randn(600, 1, dtype=F64)
    with HessianOperator(model, nn.MSELoss(), _uneven_batches(x, y, [300, 300])) as op:
        op(torch.ones(op.dim, dtype=F64))
        assert op.graph_bytes is not None
        assert 0 < op.graph_bytes < x.nbytes / 20  # outputs and gradients: a few KB, not the 1.9 MB of inputs


def _symmetric(n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    ev = torch.linspace(-1.0, 1.0, n, dtype=F64) ** 3
    ev[-1] = 3.0  # an outlier on top
    return q @ torch.diag(ev) @ q.T


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_lanczos_is_scale_equivariant(scale: float) -> None:
    """``tol`` is relative: scaling the operator scales the Ritz values and leaves the iteration unchanged."""
    from theorylr.estimate import lanczos

    a = _symmetric(60)
    v0 = torch.randn(60, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref = lanczos(a.mv, v0, k=60, tol=1e-6)
    got = lanczos((scale * a).mv, v0, k=60, tol=1e-6)
    assert ref.converged and got.converged
    assert got.matvecs == ref.matvecs
    torch.testing.assert_close(got.eigenvalues, scale * ref.eigenvalues, rtol=1e-9, atol=0.0)
    assert got.residual == pytest.approx(scale * ref.residual, rel=1e-6)


def test_data_loss_of_a_model_without_parameters() -> None:
    """A parameter-free model (a fixed function) has a loss too: the data are left where they are."""
    from theorylr.estimate import data_loss

    x = torch.randn(6, 2, dtype=F64)
    y = torch.zeros(6, 2, dtype=F64)
    assert data_loss(nn.Identity(), nn.MSELoss(), [(x[:2], y[:2]), (x[2:], y[2:])]) == pytest.approx(
        float((x**2).mean()), rel=1e-12
    )


def test_derived_start_seeds_span_a_wide_range() -> None:
    """``seed=None`` derives the start vector's seed from the global RNG: different global states give different
    (and not small) seeds, so unrelated estimates do not share start vectors."""
    from theorylr.estimate import hessian_spectral_norm

    model = nn.Linear(2, 1, bias=False).to(F64)
    data = (torch.eye(2, dtype=F64), torch.zeros(2, 1, dtype=F64))
    seeds = []
    for s in range(12):
        torch.manual_seed(s)
        seeds.append(hessian_spectral_norm(model, nn.MSELoss(), data, max_matvecs=2).seed)
    assert len(set(seeds)) == len(seeds)
    assert max(seeds) > 2**32


def test_params_on_two_devices_are_refused() -> None:
    """Parameters on two devices (here the CPU and ``meta``, no accelerator needed) cannot form one flat vector."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, device="meta"))
    with pytest.raises(ValueError, match="one dtype and one device"):
        HessianOperator(model, nn.MSELoss(), (torch.randn(4, 2), torch.randn(4, 1)))


@pytest.mark.parametrize("at_current", [False, True])
def test_progress_bar_counts_every_estimate(monkeypatch: pytest.MonkeyPatch, at_current: bool) -> None:
    """``progress=True``: the bar's total is the number of spectral norms computed, and it is advanced once per norm."""
    import tqdm.auto

    from theorylr.estimate import smoothness

    bars: list[dict[str, int]] = []

    class Recorder:
        def __init__(self, *, total: int, **kwargs: object) -> None:
            self.state = {"total": total, "n": 0}
            bars.append(self.state)

        def __enter__(self) -> Recorder:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: int = 1) -> None:
            self.state["n"] += n

        def set_postfix(self, **kwargs: object) -> None:
            return None

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    model = nn.Linear(3, 2).to(F64)
    data = (torch.randn(8, 3, dtype=F64), torch.randint(0, 2, (8,)))
    smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3, at_current=at_current, progress=True)
    assert bars == [{"total": 3 + at_current, "n": 3 + at_current}]


def test_power_iteration_floor_is_relative_to_the_unshifted_product() -> None:
    """Products rounded to bfloat16 resolve ``A v`` to ``eps * |lambda|``, not to ``eps * |lambda - shift|``: with a
    shift the reported residual and the ``converged`` flag use ``max(|mu|, |mu + shift|)``."""
    from theorylr.estimate import power_iteration

    a = torch.diag(torch.tensor([10.0, 9.0, 8.0]))
    eps = torch.finfo(torch.bfloat16).eps
    r = power_iteration(lambda v: (a @ v.float()).bfloat16(), torch.tensor([1.0, 0.0, 0.0]), tol=1.5 * eps, shift=5.0)
    assert r.eigenvalue == 10.0
    assert r.residual == pytest.approx(eps * 10.0)  # not eps * |10 - 5|
    assert not r.converged  # tol * |mu| = 1.5 eps * 5 is below what the products resolve, eps * 10


def test_lanczos_settles_relative_to_the_dominant_end() -> None:
    """Near-zero Ritz values (a PSD operator with a null space) do not tighten the settling test, which is
    relative to the largest magnitude."""
    from theorylr.estimate import lanczos

    def run(zeros: int) -> int:
        d = torch.cat([torch.zeros(zeros), torch.linspace(0.1, 1.0, 150), torch.tensor([1.1])]).to(F64)
        v0 = torch.randn(len(d), generator=torch.Generator().manual_seed(0), dtype=F64)
        r = lanczos(torch.diag(d).mv, v0, k=len(d), tol=1e-4)
        assert r.converged and r.lambda_max == pytest.approx(1.1, rel=1e-4)
        return r.matvecs

    assert run(50) <= run(0) + 2


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_constant_step_refuses_a_non_finite_initial_loss(bad: float) -> None:
    from theorylr.theory import constant_step

    with pytest.raises(ValueError, match="initial_loss must be a finite"):
        constant_step(bad, 1.0, 10)


def test_estimates_do_not_write_back_a_nan_buffer() -> None:
    """``preserved`` writes back only what changed, nan equal to nan: a buffer holding nan keeps its autograd
    version (a graph built before the estimate can still be differentiated)."""
    from theorylr.estimate import data_loss, hessian_spectral_norm

    model = nn.Linear(3, 1).to(F64)
    model.register_buffer("stat", torch.tensor([float("nan"), 1.0], dtype=F64))
    data = (torch.randn(8, 3, dtype=F64), torch.randn(8, 1, dtype=F64))
    version = model.stat._version
    data_loss(model, nn.MSELoss(), data)
    hessian_spectral_norm(model, nn.MSELoss(), data, seed=0)
    assert model.stat._version == version


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_float64_operators_past_the_range_of_a_squared_norm(scale: float) -> None:
    """A float64 norm squares its entries: past about 1e154 (1e-154) it is inf (0). Lanczos returned nan and power
    iteration an eigenvalue of 0, or one Ritz value of 3.7e-201, all marked converged."""
    from theorylr.estimate import lanczos, power_iteration

    a = torch.diag(torch.tensor([2.0, -1.0, 0.1], dtype=F64)) * scale
    v0 = torch.ones(3, dtype=F64)
    found = lanczos(a.mv, v0, tol=1e-8)
    assert found.converged and found.lambda_max == pytest.approx(2 * scale, rel=1e-10, abs=0)
    assert found.lambda_min == pytest.approx(-scale, rel=1e-10, abs=0)
    power = power_iteration(a.mv, v0, tol=1e-8)
    assert power.converged and power.eigenvalue == pytest.approx(2 * scale, rel=1e-6, abs=0)
