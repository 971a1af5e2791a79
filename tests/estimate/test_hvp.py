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
from theorylr.estimate.hvp import default_graph_budget

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


def _batches(x: Tensor, y: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes)))


@pytest.mark.parametrize("name", ["tanh", "relu", "mse-tanh", "cnn", "logistic"])
def test_kept_and_rebuilt_graphs_agree_with_dense(name: str) -> None:
    model, loss_fn, (x, y) = _problem(name)
    n = x.shape[0]
    sizes = [n // 4, n // 2, n - n // 4 - n // 2]  # uneven
    batches = _batches(x, y, sizes)
    h = dense_hessian(model, loss_fn, batches)
    ops = {c: HessianOperator(model, loss_fn, batches, cache_graph=c) for c in (True, False, None)}
    for seed in range(3):
        v = _random_vector(h.shape[0], seed)
        got = {c: op(v) for c, op in ops.items()}
        for c in ops:
            torch.testing.assert_close(got[c], h @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[True], got[False], rtol=1e-12, atol=1e-14)
    assert ops[None].cache_graph is True  # a few KB: well within the default budget
    loss = float(loss_fn(model(x), y).detach())
    for op in ops.values():
        assert op.loss == pytest.approx(loss, rel=1e-12)
        assert op.matvecs == 3
        op.close()


def _count_forwards(model: nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_automatic_choice_follows_the_graph_budget() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    batches = _batches(x, y, [8, 8, 8])
    h = dense_hessian(model, loss_fn, batches)
    v = _random_vector(h.shape[0])
    forwards = _count_forwards(model)

    with HessianOperator(model, loss_fn, (x, y)) as op:  # one batch: kept, decided at construction
        assert op.cache_graph is True and op.graph_bytes is None
    with HessianOperator(model, loss_fn, batches, cache_graph=True) as op:  # explicit: nothing measured
        op(v)
        assert op.cache_graph is True and op.graph_bytes is None

    with HessianOperator(model, loss_fn, batches) as op:
        assert op.cache_graph is None and op.graph_bytes is None  # chosen at the first matvec
        forwards.clear()
        for _ in range(3):
            torch.testing.assert_close(op(v), h @ v, rtol=1e-10, atol=1e-12)
        assert op.cache_graph is True
        assert len(forwards) == 3  # one forward per batch in all: the graphs were kept
        measured = op.graph_bytes
    assert measured is not None
    # Saved at least: the two tanh outputs (8 wide) of all 24 samples, in float64.
    assert measured >= 2 * 24 * 8 * 8

    with HessianOperator(model, loss_fn, batches, graph_budget=measured) as op:  # fits exactly: kept
        op(v)
        assert op.cache_graph is True and op.graph_bytes == measured

    with HessianOperator(model, loss_fn, batches, graph_budget=measured - 1) as op:  # does not fit: rebuilt
        forwards.clear()
        results = [op(v) for _ in range(3)]
        assert op.cache_graph is False and op.graph_bytes == measured
        assert len(forwards) == 9  # every matvec runs every batch's forward, the first one included
        assert op._grads is None
        assert op.loss == pytest.approx(float(loss_fn(model(x), y).detach()), rel=1e-12)
    for r in results:
        torch.testing.assert_close(r, h @ v, rtol=1e-10, atol=1e-12)

    # The estimate scales with the data: twice the samples, about twice the bytes.
    doubled = _batches(torch.cat([x, x]), torch.cat([y, y]), [16, 16, 16])
    with HessianOperator(model, loss_fn, doubled) as op:
        op(v)
        assert op.graph_bytes is not None
        assert 1.5 * measured <= op.graph_bytes <= 2.5 * measured


def test_default_graph_budget() -> None:
    assert default_graph_budget("cpu") > 0
    assert default_graph_budget(torch.device("meta")) == 2**30  # free memory unknown: 1 GiB


def test_close_frees_the_kept_graphs_of_every_batch() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    batches = _batches(x, y, [8, 8, 8])
    refs: list[weakref.ref[Tensor]] = []
    model[1].register_forward_hook(lambda _m, _i, out: refs.append(weakref.ref(out)))  # tanh saves its output
    v = _random_vector(sum(p.numel() for p in model.parameters()))
    op = HessianOperator(model, loss_fn, batches)
    first = op(v)
    op(v)
    gc.collect()
    assert len(refs) == 3 and all(r() is not None for r in refs)  # the three batches' graphs are held
    op.close()
    gc.collect()
    assert all(r() is None for r in refs)
    again = op(v)  # still usable: the graphs are rebuilt
    assert len(refs) == 6
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    with op:
        pass
    gc.collect()
    assert all(r() is None for r in refs)


def _dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).to(F64)


@pytest.mark.parametrize("make", [_dropout_model, lambda: _bn_dropout_model()], ids=["dropout", "batchnorm"])
def test_train_mode_several_batches_same_function_on_every_path(make: Callable[[], nn.Module]) -> None:
    model = make()
    x, y = classification_data()
    batches = _batches(x, y, [10, 6, 8])
    before = state_snapshot(model)
    loss_fn = nn.CrossEntropyLoss()
    n = sum(p.numel() for p in model.parameters())
    v, u = _random_vector(n, 1), _random_vector(n, 2)
    results: dict[Any, tuple[Tensor, Tensor, Tensor]] = {}
    losses: dict[Any, float] = {}
    for cache in (True, False, None):
        with HessianOperator(model, loss_fn, batches, mode="train", seed=4, cache_graph=cache) as op:
            results[cache] = (op(v), op(u), op(v))
            losses[cache] = op.loss
    if not any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        with HessianOperator(model, loss_fn, batches, mode="train", seed=4, backend="forward_over_reverse") as op:
            results["fwd"] = (op(v), op(u), op(v))
            losses["fwd"] = op.loss
    assert_same_state(model, before)
    for key, (hv, hu, hv_again) in results.items():
        torch.testing.assert_close(hv_again, hv, rtol=0 if key is True else 1e-12, atol=0 if key is True else 1e-14)
        torch.testing.assert_close(hv, results[False][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(hu, results[False][1], rtol=1e-10, atol=1e-12)
        assert losses[key] == pytest.approx(losses[False], rel=1e-12)
    # Reference: batch i's forward with the global RNG seeded with 4 + i first (per-batch masks), batch statistics.
    model.train()
    forwards = iter(range(len(batches)))
    handle = model.register_forward_pre_hook(lambda *_: torch.manual_seed(4 + next(forwards)) and None)
    try:
        h = dense_hessian(model, loss_fn, batches)
    finally:
        handle.remove()
        model.eval()
    torch.testing.assert_close(results[None][0], h @ v, rtol=1e-10, atol=1e-12)


def test_reduce_hook_with_kept_graphs_of_several_batches() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    batches = _batches(x, y, [8, 8, 8])
    calls: list[tuple[int, ...]] = []

    def double(t: Tensor) -> Tensor:
        calls.append(tuple(t.shape))
        return 2 * t

    v = _random_vector(sum(p.numel() for p in model.parameters()))
    plain = hvp(model, loss_fn, batches, v)
    with HessianOperator(model, loss_fn, batches, reduce=double) as op:
        got = [op(v) for _ in range(3)]
        assert op.cache_graph is True
    assert isinstance(plain, Tensor)
    for g in got:
        torch.testing.assert_close(g, 2 * plain, rtol=1e-12, atol=1e-14)
    assert calls.count((op.dim,)) == 3 and calls.count(()) == 1


def test_hvp_function_keeps_no_graph() -> None:
    model, loss_fn, (x, y) = _problem("tanh")
    batches = _batches(x, y, [8, 8, 8])
    alive: list[int] = []
    refs: list[weakref.ref[Tensor]] = []

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        alive.append(sum(r() is not None for r in refs))  # earlier batches' activations still held
        refs.append(weakref.ref(out))

    model[1].register_forward_hook(hook)  # tanh saves its output for backward
    gc.disable()
    try:
        hvp(model, loss_fn, batches, _random_vector(sum(p.numel() for p in model.parameters())))
    finally:
        gc.enable()
    assert alive == [0, 0, 0]


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
        ({"graph_budget": -1}, "graph_budget"),
        ({"graph_budget": 1.5}, "graph_budget"),
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
