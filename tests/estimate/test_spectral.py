"""hessian_spectral_norm against eigvalsh of the dense Hessian (float64), and its side-effect-free contract."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from tests.estimate._reference import (
    F64,
    Quadratic,
    SmallCNN,
    assert_same_state,
    classification_data,
    dense_hessian,
    image_data,
    logistic_hessian,
    logistic_problem,
    mlp,
    negative_dominant_problem,
    output_loss,
    state_snapshot,
)
from theorylr.estimate import METHODS, data_loss, hessian_spectral_norm

RTOL = 1e-4


def _check_against_dense(r: Any, h: torch.Tensor) -> None:
    ev = torch.linalg.eigvalsh(h)
    norm = float(ev.abs().max())
    assert r.converged
    assert r.value == pytest.approx(norm, rel=RTOL)
    assert r.value == max(abs(r.lambda_max), abs(r.lambda_min))
    # The end that gives the norm is accurate; the other is at least inside the spectrum's hull up to tol.
    top, other = (
        (r.lambda_max, r.lambda_min) if abs(r.lambda_max) >= abs(r.lambda_min) else (r.lambda_min, r.lambda_max)
    )
    assert top == pytest.approx(float(ev[-1] if top > 0 else ev[0]), rel=RTOL)
    assert float(ev[0]) - RTOL * norm <= other <= float(ev[-1]) + RTOL * norm


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("activation", [nn.Tanh, nn.Softplus, nn.ReLU])
def test_mlp_matches_eigvalsh(activation: type[nn.Module], method: str) -> None:
    model, data = mlp(activation), classification_data()
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, method=method, seed=0, max_matvecs=2000)
    _check_against_dense(r, dense_hessian(model, nn.CrossEntropyLoss(), [data]))
    assert r.method == method and r.seed == 0


def test_cnn_matches_eigvalsh() -> None:
    torch.manual_seed(0)
    model, data = SmallCNN().to(F64), image_data()
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0)
    _check_against_dense(r, dense_hessian(model, nn.CrossEntropyLoss(), [data]))


@pytest.mark.parametrize("method", METHODS)
def test_dominant_negative_eigenvalue_is_reported_by_magnitude(method: str) -> None:
    model, x, y = negative_dominant_problem()
    h = dense_hessian(model, nn.MSELoss(), [(x, y)])
    ev = torch.linalg.eigvalsh(h)
    assert -ev[0] > 1.5 * ev[-1] > 0  # the case under test: |lambda_min| > lambda_max
    r = hessian_spectral_norm(model, nn.MSELoss(), (x, y), method=method, seed=0, max_matvecs=2000)
    _check_against_dense(r, h)
    assert r.value == pytest.approx(float(-ev[0]), rel=RTOL)
    assert r.lambda_min == pytest.approx(float(ev[0]), rel=RTOL)
    assert r.lambda_max == pytest.approx(float(ev[-1]), rel=RTOL)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spectrum", [[4.0, 2.0, 1.0, -0.5], [1.0, 0.2, -3.0, -2.9], [2.0, -2.0, 0.5]])
def test_quadratic_with_known_eigenvalues(spectrum: list[float], method: str) -> None:
    model = Quadratic(spectrum)
    data = (torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    r = hessian_spectral_norm(model, output_loss, data, method=method, seed=0, max_matvecs=400)
    assert r.value == pytest.approx(max(abs(e) for e in spectrum), rel=RTOL)
    if len(set(map(abs, spectrum))) == len(spectrum) or method == "lanczos":  # +-2: power cannot split a tie
        assert r.converged
        assert r.lambda_max == pytest.approx(max(spectrum), rel=RTOL)
        assert r.lambda_min == pytest.approx(min(spectrum), rel=RTOL)


def test_logistic_regression_closed_form() -> None:
    model, x, y = logistic_problem()
    h = logistic_hessian(model, x)  # PSD: X^T diag(p(1-p)) X / n
    r = hessian_spectral_norm(model, nn.BCEWithLogitsLoss(), (x, y), seed=0)
    assert r.value == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=RTOL)
    assert r.lambda_min == pytest.approx(float(torch.linalg.eigvalsh(h)[0]), rel=1e-2, abs=1e-3)
    assert r.loss == pytest.approx(float(nn.BCEWithLogitsLoss()(model(x), y).detach()), rel=1e-12)


def test_mini_batches_give_the_full_batch_value() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    full = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), seed=0, tol=1e-8)
    batches = list(zip(x.split([5, 13, 6]), y.split([5, 13, 6])))
    split = hessian_spectral_norm(model, nn.CrossEntropyLoss(), batches, seed=0, tol=1e-8)
    assert split.value == pytest.approx(full.value, rel=1e-8)
    assert split.loss == pytest.approx(full.loss, rel=1e-12)


def test_restores_weights_modes_buffers_grads_and_rng() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)).to(F64)
    x, y = classification_data()
    nn.CrossEntropyLoss()(model(x), y).backward()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    torch.manual_seed(123)
    before = state_snapshot(model)
    for mode in ("eval", "train", "current"):
        for method in METHODS:
            hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), mode=mode, method=method, max_matvecs=20)
    assert_same_state(model, before)


def test_restores_state_on_error() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    model.train()
    before = state_snapshot(model)

    def failing(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        torch.rand(3)  # consume RNG, then fail
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        hessian_spectral_norm(model, failing, (x, y))
    assert_same_state(model, before)


def test_seed_reproducibility() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    a = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=7, tol=1e-2)
    b = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=7, tol=1e-2)
    c = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=8, tol=1e-2)
    assert a == b
    assert (c.value, c.matvecs) != (a.value, a.matvecs)


def test_seed_none_follows_the_global_rng_without_advancing_it() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    torch.manual_seed(11)
    state = torch.get_rng_state()
    a = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, tol=1e-2)
    assert torch.equal(torch.get_rng_state(), state)
    b = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, tol=1e-2)
    assert a == b
    again = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, tol=1e-2, seed=a.seed)
    assert again == a
    torch.manual_seed(12)
    assert hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, tol=1e-2).seed != a.seed


def test_matvec_cap() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0, tol=1e-12, max_matvecs=4)
    assert r.matvecs == 4 and not r.converged
    p = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0, tol=1e-12, max_matvecs=4, method="power")
    assert p.matvecs == 8 and not p.converged  # the cap holds for each of the two power runs


def test_float32_model_on_float32_data() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    ref = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), seed=0)
    r = hessian_spectral_norm(model.float(), nn.CrossEntropyLoss(), (x.float(), y), seed=0)
    assert r.value == pytest.approx(ref.value, rel=1e-4)


def test_result_to_dict_is_json() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["value"] == r.value and d["matvecs"] == r.matvecs and d["converged"] is True


def test_data_loss_weights_batches_by_size() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    model.train()
    before = state_snapshot(model)
    batches = list(zip(x.split([3, 21]), y.split([3, 21])))
    expected = float(nn.CrossEntropyLoss()(model.eval()(x), y).detach())
    model.train()
    assert data_loss(model, nn.CrossEntropyLoss(), batches) == pytest.approx(expected, rel=1e-12)
    assert data_loss(model, nn.CrossEntropyLoss(), batches, reduce=lambda t: 2 * t) == pytest.approx(2 * expected)
    assert_same_state(model, before)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "arnoldi"}, "method"),
        ({"tol": -1e-3}, "tol"),
        ({"max_matvecs": 0}, "max_matvecs"),
        ({"mode": "test"}, "mode"),
        ({"seed": -3}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], name: str) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    with pytest.raises(ValueError, match=name):
        hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, **kwargs)


def test_works_inside_no_grad() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    ref = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0)
    with torch.no_grad():
        assert hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0) == ref


def test_a_graph_built_before_the_estimate_can_still_be_differentiated() -> None:
    # The estimate writes back only what it changed: an untouched parameter keeps its autograd version, so the
    # caller's pending backward (a sharpness measured inside a training step) still runs.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    x, y = classification_data()
    loss = nn.CrossEntropyLoss()(model(x), y)
    versions = [t._version for t in [*model.parameters(), *model.buffers()]]
    for mode in ("eval", "train"):  # train mode updates the running statistics on copies only
        hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), mode=mode, max_matvecs=10)
        data_loss(model, nn.CrossEntropyLoss(), (x, y), mode=mode)
    assert [t._version for t in [*model.parameters(), *model.buffers()]] == versions
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_data_loss_in_train_mode_is_the_estimated_loss() -> None:
    # Dropout over several batches: data_loss seeds batch b with seed + b, as the Hessian operator does.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3)).to(F64)
    x, y = classification_data()
    batches = list(zip(x.split(8), y.split(8)))
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), batches, mode="train", max_matvecs=5)
    assert data_loss(model, nn.CrossEntropyLoss(), batches, mode="train") == pytest.approx(r.loss, rel=1e-12)
    other = data_loss(model, nn.CrossEntropyLoss(), batches, mode="train", seed=1)
    assert other != pytest.approx(r.loss, rel=1e-6)  # the seed does select the masks


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_a_criterion_that_is_not_mean_reduced_is_refused(reduction: str) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    with pytest.raises(ValueError, match=f"loss_fn.*reduction='{reduction}'"):
        hessian_spectral_norm(model, loss_fn, data)
    with pytest.raises(ValueError, match="loss_fn"):
        data_loss(model, loss_fn, data)


def test_parameters_of_another_module_are_refused() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    other = nn.Linear(8, 3).to(F64)  # e.g. a copy of the head: it takes no part in the model's loss
    for backend in ("double_backward", "forward_over_reverse"):
        with pytest.raises(ValueError, match=r"params must be parameters of model \(params\[0\]"):
            hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, params=other.parameters(), backend=backend)
