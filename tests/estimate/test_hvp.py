"""Hessian-vector products against the dense Hessian (float64), for both backends."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

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
    output_loss,
    state_snapshot,
)
from theorylr.estimate import BACKENDS, HessianOperator, default_backend, hessian_spectral_norm, hvp

Problem = tuple[nn.Module, Callable[[Any, Any], Tensor], tuple[Tensor, Tensor]]


def _problem(name: str) -> Problem:
    if name in ("tanh", "softplus", "relu"):
        act = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}[name]
        return mlp(act), nn.CrossEntropyLoss(), classification_data()
    if name == "mse-tanh":
        x, _ = classification_data()
        return mlp(nn.Tanh), nn.MSELoss(), (x, torch.sin(x[:, :3]))
    if name == "cnn":
        torch.manual_seed(0)
        return SmallCNN().to(F64), nn.CrossEntropyLoss(), image_data()
    if name == "logistic":
        model, x, y = logistic_problem()
        return model, nn.BCEWithLogitsLoss(), (x, y)
    raise AssertionError(name)


PROBLEMS = ["tanh", "softplus", "relu", "mse-tanh", "cnn", "logistic"]


def _random_vector(n: int, seed: int = 1) -> Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_hvp_matches_dense_hessian(name: str, backend: str) -> None:
    model, loss_fn, data = _problem(name)
    h = dense_hessian(model.eval(), loss_fn, [data])
    assert float(h.abs().max()) > 1e-3  # a non-trivial Hessian
    v = _random_vector(h.shape[0])
    got = hvp(model, loss_fn, data, v, backend=backend)
    assert isinstance(got, Tensor)
    torch.testing.assert_close(got, h @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", PROBLEMS)
def test_backends_agree(name: str) -> None:
    model, loss_fn, data = _problem(name)
    n = sum(p.numel() for p in model.parameters())
    for seed in range(3):
        v = _random_vector(n, seed)
        a = hvp(model, loss_fn, data, v, backend="double_backward")
        b = hvp(model, loss_fn, data, v, backend="forward_over_reverse")
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_logistic_regression_closed_form() -> None:
    model, x, y = logistic_problem()
    h = logistic_hessian(model, x)  # parameter order: weight (1 x d), then bias
    with HessianOperator(model, nn.BCEWithLogitsLoss(), (x, y)) as op:
        dense = torch.stack([op(e) for e in torch.eye(op.dim, dtype=F64)])
    torch.testing.assert_close(dense, h, rtol=1e-10, atol=1e-13)


def test_list_vector_returns_tensors_shaped_like_params() -> None:
    model, loss_fn, data = _problem("tanh")
    v = [torch.randn_like(p) for p in model.parameters()]
    got = hvp(model, loss_fn, data, v)
    assert isinstance(got, tuple)
    assert [t.shape for t in got] == [p.shape for p in model.parameters()]
    flat = hvp(model, loss_fn, data, torch.cat([t.reshape(-1) for t in v]))
    assert isinstance(flat, Tensor)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in got]), flat)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cache_graph", [True, False])
def test_mini_batches_weighted_by_size(backend: str, cache_graph: bool) -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    sizes = [11, 4, 9]  # uneven: equal weights per batch would be wrong
    batches = list(zip(x.split(sizes), y.split(sizes)))
    h = dense_hessian(model, loss_fn, [(x, y)])
    v = _random_vector(h.shape[0])
    with HessianOperator(model, loss_fn, batches, backend=backend, cache_graph=cache_graph) as op:
        torch.testing.assert_close(op(v), h @ v, rtol=1e-10, atol=1e-12)
        assert op.loss == pytest.approx(float(loss_fn(model(x), y).detach()), rel=1e-12)
        assert op.cache_graph == (cache_graph and backend == "double_backward")


def test_generator_data_is_read_once() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    batches = ((xb, yb) for xb, yb in zip(x.split(8), y.split(8)))
    h = dense_hessian(model, loss_fn, [(x, y)])
    v = _random_vector(h.shape[0])
    with HessianOperator(model, loss_fn, batches) as op:
        first, second = op(v), op(v)
    torch.testing.assert_close(first, h @ v)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


def test_params_subset_is_a_block_of_the_hessian() -> None:
    model, loss_fn, data = _problem("tanh")
    last = [model[-1].weight, model[-1].bias]
    h = dense_hessian(model, loss_fn, [data], params=last)
    v = _random_vector(h.shape[0])
    torch.testing.assert_close(hvp(model, loss_fn, data, v, params=last), h @ v, rtol=1e-10, atol=1e-12)
    full = dense_hessian(model, loss_fn, [data])
    torch.testing.assert_close(h, full[-h.shape[0] :, -h.shape[0] :])


def test_frozen_parameters_are_constants() -> None:
    model, loss_fn, data = _problem("tanh")
    model[0].weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    h = dense_hessian(model, loss_fn, [data])
    v = _random_vector(h.shape[0])
    with HessianOperator(model, loss_fn, data) as op:
        assert op.dim == sum(p.numel() for p in trainable)
        torch.testing.assert_close(op(v), h @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quadratic_hessian_is_its_matrix(backend: str) -> None:
    model = Quadratic([3.0, -1.0, 0.5, 2.0])
    data = (torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    v = _random_vector(4)
    torch.testing.assert_close(hvp(model, output_loss, data, v, backend=backend), model.a @ v)


def test_loss_linear_in_parameters_has_zero_hessian() -> None:
    model = nn.Linear(3, 2).to(F64)
    x = torch.randn(5, 3, dtype=F64)
    got = hvp(model, lambda out, _: out.mean(), (x, torch.zeros(5)), torch.ones(8, dtype=F64))
    assert isinstance(got, Tensor)
    assert torch.equal(got, torch.zeros(8, dtype=F64))


def test_dtype_follows_parameters() -> None:
    model = mlp(nn.Tanh).float()
    x, y = classification_data()
    n = sum(p.numel() for p in model.parameters())
    got = hvp(model, nn.CrossEntropyLoss(), (x.float(), y), torch.ones(n, dtype=F64))
    assert isinstance(got, Tensor)
    assert got.dtype == torch.float32 and got.device == model[0].weight.device
    ref = hvp(model.double(), nn.CrossEntropyLoss(), (x, y), torch.ones(n, dtype=F64))
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)


def test_operator_counts_matvecs_and_reuses_one_first_backward() -> None:
    model, loss_fn, data = _problem("tanh")
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    with HessianOperator(model, loss_fn, data) as op:
        for _ in range(5):
            op(_random_vector(op.dim))
        assert op.matvecs == 5
    assert len(forwards) == 1  # one forward pass for five products: the graph was reused
    forwards.clear()
    with HessianOperator(model, loss_fn, data, cache_graph=False) as op:
        for _ in range(3):
            op(_random_vector(op.dim))
    assert len(forwards) == 3


def test_no_graph_kept_alive_after_an_estimate() -> None:
    model, loss_fn, data = _problem("tanh")
    refs: list[weakref.ref[Tensor]] = []
    model[0].register_forward_hook(lambda _m, _i, out: refs.append(weakref.ref(out)))
    hessian_spectral_norm(model, loss_fn, data, seed=0)
    with HessianOperator(model, loss_fn, data) as op:
        op(_random_vector(op.dim))
    gc.collect()
    assert len(refs) == 2
    assert all(r() is None for r in refs)


def test_model_state_untouched_including_grads() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    loss_fn(model(x), y).backward()  # the user's own gradients must survive
    model[1].train()
    model[0].eval()
    before = state_snapshot(model)
    for backend in BACKENDS:
        hvp(model, loss_fn, (x, y), _random_vector(sum(p.numel() for p in model.parameters())), backend=backend)
    assert_same_state(model, before)


def _bn_dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3)).to(F64)
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batchnorm_dropout_modes(mode: str) -> None:
    model = _bn_dropout_model()
    x, y = classification_data()
    before = state_snapshot(model)
    n = sum(p.numel() for p in model.parameters())
    v = _random_vector(n)
    # Train mode has batch statistics and dropout; the masks are fixed by `seed`, so products agree across
    # operators, cached or not, and the result is linear in v.
    with HessianOperator(model, nn.CrossEntropyLoss(), (x, y), mode=mode, seed=3) as op:
        a = op(v)
        b = op(2 * v)
    with HessianOperator(model, nn.CrossEntropyLoss(), (x, y), mode=mode, seed=3, cache_graph=False) as op:
        c = op(v)
    torch.testing.assert_close(b, 2 * a)
    torch.testing.assert_close(c, a)
    assert_same_state(model, before)
    if mode == "eval":
        torch.testing.assert_close(a, dense_hessian(model.eval(), nn.CrossEntropyLoss(), [(x, y)]) @ v)
        model.train()
    else:  # reference: the same masks (global RNG seeded with 3 before the forward), batch statistics

        def seeded_loss(out: Tensor, target: Tensor) -> Tensor:
            return nn.functional.cross_entropy(out, target)

        model.train()
        torch.manual_seed(3)
        h = dense_hessian(model, seeded_loss, [(x, y)])
        model.eval()
        torch.testing.assert_close(a, h @ v)


def test_reduce_hook_applied_once_per_matvec_and_to_the_loss() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    calls: list[tuple[int, ...]] = []

    def triple(t: Tensor) -> Tensor:
        calls.append(tuple(t.shape))
        return 3 * t

    v = _random_vector(sum(p.numel() for p in model.parameters()))
    plain = hvp(model, loss_fn, (x, y), v)
    with HessianOperator(model, loss_fn, (x, y), reduce=triple) as op:
        got = [op(v) for _ in range(4)]
        loss = op.loss
    assert isinstance(plain, Tensor)
    for g in got:
        torch.testing.assert_close(g, 3 * plain)
    assert loss == pytest.approx(3 * float(loss_fn(model(x), y).detach()), rel=1e-12)
    assert calls.count((op.dim,)) == 4 and calls.count(()) == 1


def test_default_backend_is_double_backward() -> None:
    assert default_backend("cpu") == "double_backward"
    model, loss_fn, data = _problem("tanh")
    assert HessianOperator(model, loss_fn, data).backend == "double_backward"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"backend": "jvp"}, "backend"),
        ({"mode": "training"}, "mode"),
        ({"cache_graph": 1}, "cache_graph"),
        ({"seed": -1}, "seed"),
        ({"reduce": 3}, "reduce"),
        ({"params": [torch.zeros(2)]}, "params"),
        ({"data": []}, "data"),
        ({"data": torch.zeros(3)}, "data"),
        ({"data": [(torch.zeros(2, 5), torch.zeros(2)), "oops"]}, "data"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], name: str) -> None:
    model, loss_fn, data = _problem("tanh")
    args = {"data": data, **kwargs}
    data = args.pop("data")
    with pytest.raises(ValueError, match=name):
        HessianOperator(model, loss_fn, data, **args)


def test_wrong_vector_size_is_rejected() -> None:
    model, loss_fn, data = _problem("tanh")
    with pytest.raises(ValueError, match="vector"):
        hvp(model, loss_fn, data, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="vector"):
        hvp(model, loss_fn, data, [torch.ones(3, dtype=F64)])


def test_forward_over_reverse_needs_model_parameters() -> None:
    model, loss_fn, data = _problem("tanh")
    stray = torch.zeros(2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="params"):
        HessianOperator(model, loss_fn, data, params=[stray], backend="forward_over_reverse")


def test_dropout_train_mode_same_masks_for_both_backends() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).to(F64)
    x, y = classification_data()
    v = _random_vector(sum(p.numel() for p in model.parameters()))
    a = hvp(model, nn.CrossEntropyLoss(), (x, y), v, mode="train", seed=5)
    b = hvp(model, nn.CrossEntropyLoss(), (x, y), v, mode="train", seed=5, backend="forward_over_reverse")
    c = hvp(model, nn.CrossEntropyLoss(), (x, y), v, mode="train", seed=6)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(a, c)  # another seed, other masks: the seed is what fixes them


def test_forward_over_reverse_rejects_training_batchnorm() -> None:
    model = _bn_dropout_model()
    x, y = classification_data()
    with pytest.raises(ValueError, match="BatchNorm"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend="forward_over_reverse", mode="train")
    model.train()
    with pytest.raises(ValueError, match="BatchNorm"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend="forward_over_reverse", mode="current")
    HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend="forward_over_reverse", mode="eval")
