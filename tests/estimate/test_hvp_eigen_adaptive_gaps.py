"""Gaps a mutation review of theorylr.estimate (hvp, eigen, spectral, _state) and theorylr.optim.adaptive found:
each test kills a mutant that survived the rest of the suite (the docstrings name the mutation's effect).

References are independent of the code under test: dense Hessians from ``torch.autograd.functional.hessian`` in
float64 (``tests/estimate/_reference.py``), and LipschitzLR's Algorithms 1 and 3 written out by hand
(``tests/optim/test_adaptive.py``'s ``reference_run``).
"""

from __future__ import annotations

import copy
import importlib
from typing import NamedTuple

import pytest
import torch
from torch import nn

from tests.estimate._reference import F64, classification_data, dense_hessian, mlp, spectral_norm
from tests.optim.test_adaptive import _quadratic, reference_run
from theorylr.estimate import data_loss, hessian_spectral_norm, lanczos, power_iteration
from theorylr.estimate.eigen import _norm

BF16_EPS = torch.finfo(torch.bfloat16).eps
HVP_MODULE = importlib.import_module("theorylr.estimate.hvp")  # the package's ``hvp`` is the function


def _orthogonal(n: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return q


# ----------------------------------------------------------------------------------------------------------------
# eigen: power iteration and Lanczos
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_norm_of_a_vector_holding_a_non_finite_entry_is_not_rescaled(bad: float) -> None:
    """The rescaled second pass is for finite entries whose squares leave the range; an infinite entry keeps the
    norm infinite (dividing by an infinite maximum made it nan), and a nan entry keeps it nan."""
    norm = _norm(torch.tensor([bad, 1.0, 0.0], dtype=F64))
    if bad != bad:
        assert norm != norm
    else:
        assert norm == float("inf")


@pytest.mark.parametrize("solver", [lanczos, power_iteration])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_starting_vector_with_a_non_finite_entry_is_refused(solver: object, bad: float) -> None:
    """A non-finite ``v0`` is refused by name, not normalised into a vector of nans that the solver would iterate
    on (and report a nan eigenvalue from)."""
    v0 = torch.tensor([1.0, bad, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="v0 must be finite and non-zero"):
        solver(torch.eye(3, dtype=F64).mv, v0)  # type: ignore[operator]


@pytest.mark.parametrize("solver", ["lanczos", "power"])
def test_products_of_a_bfloat16_input_resolve_no_more_than_bfloat16(solver: str) -> None:
    """``matvec`` receives ``v0``'s dtype (bfloat16) even when it returns float32: the product is that of a vector
    rounded to bfloat16, so the reported residual is floored at bfloat16's eps and ``tol`` below it is not certified.
    Judging the floor from the output dtype alone (float32) called it converged with a float32 residual."""
    a = torch.diag(torch.tensor([10.0, 9.0, 8.0, 1.0]))
    seen: list[torch.dtype] = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        seen.append(v.dtype)
        return a @ v.float()  # float32 products of the bfloat16 input

    v0 = torch.tensor([1.0, 0.5, 0.25, 0.125]).bfloat16()
    r = lanczos(matvec, v0, tol=1e-6) if solver == "lanczos" else power_iteration(matvec, v0, tol=1e-6, max_iters=300)
    assert set(seen) == {torch.bfloat16}
    assert not r.converged
    assert r.residual >= BF16_EPS * 9.9  # eps times the largest Ritz value
    assert r.eigenvalue == pytest.approx(10.0, rel=1e-2)


def test_power_iteration_stops_when_the_computed_residual_meets_tol_below_the_floor() -> None:
    """The stopping test holds the computed residual to ``tol``; only the reported residual is floored. Exact
    bfloat16 products of an eigenvector give a zero residual at once: one matvec, not converged (``tol`` is below
    the floor). Testing the floored residual instead ran on to the matvec cap."""
    a = torch.diag(torch.tensor([10.0, 9.0, 8.0]))
    r = power_iteration(lambda v: (a @ v.float()).bfloat16(), torch.tensor([1.0, 0.0, 0.0]), tol=1e-6, max_iters=50)
    assert r.matvecs == 1
    assert r.eigenvalue == 10.0
    assert not r.converged
    assert r.residual == pytest.approx(BF16_EPS * 10.0, rel=1e-12, abs=0)


def test_lanczos_from_an_eigenvector_of_a_dense_operator_stops_after_one_product() -> None:
    """An eigenvector spans an invariant Krylov space: after the product the orthogonalised remainder is rounding,
    here 1.5-2 times ``eps`` times the eigenvalue, within the ``10 * eps`` of the invariance test (a test at
    ``1 * eps`` went on to a second product). The Ritz value is then exact and its residual is reported as 0
    (the floor of float64 products), not the rounding remainder."""
    n = 400
    q = _orthogonal(n)
    eigenvalues = torch.linspace(-1.0, 1.0, n, dtype=F64)
    eigenvalues[0] = 3.0
    a = q @ torch.diag(eigenvalues) @ q.T
    r = lanczos(a.mv, q[:, 0].clone(), tol=1e-12)
    assert r.matvecs == 1
    assert r.converged
    assert r.eigenvalue == pytest.approx(3.0, rel=1e-13)
    assert r.residual == 0.0
    assert r.residuals.tolist() == [0.0]


def test_power_iteration_reports_float64_eigenvalues_and_an_eigenvector_in_v0s_dtype() -> None:
    """As :class:`EigenResult` documents: ``eigenvalues`` and ``residuals`` in float64 on the CPU whatever the
    operator's dtype, and ``vector`` in the starting vector's dtype (not the float32 the iteration runs in)."""
    a = torch.diag(torch.tensor([4.0, 1.0, 0.5]))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        r = power_iteration(lambda v, d=dtype: (a @ v.float()).to(d), torch.ones(3, dtype=dtype), tol=1e-2)
        assert r.eigenvalues.dtype == F64 and r.residuals.dtype == F64
        assert r.vector.dtype == dtype
        assert r.eigenvalue == pytest.approx(4.0, rel=2e-2)


def test_lanczos_on_a_non_finite_operator_is_not_converged() -> None:
    """A product with a nan ends the run with nan estimates, flagged as not converged."""
    r = lanczos(lambda v: v * float("nan"), torch.ones(4, dtype=F64))
    assert r.matvecs == 1
    assert not r.converged
    assert r.eigenvalue != r.eigenvalue and r.residual != r.residual


# ----------------------------------------------------------------------------------------------------------------
# spectral: hessian_spectral_norm and data_loss
# ----------------------------------------------------------------------------------------------------------------
def test_lanczos_estimate_is_held_to_the_given_tol() -> None:
    """``tol`` reaches the Lanczos run: a tight one costs more products than a loose one and leaves a residual
    within it (the run used the solver's default 1e-4 whatever was asked)."""
    model, data = mlp(nn.Tanh), classification_data()
    exact = spectral_norm(dense_hessian(model, nn.CrossEntropyLoss(), [data]))
    loose = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0, tol=1e-1)
    tight = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0, tol=1e-9, max_matvecs=150)
    assert loose.converged and tight.converged
    assert loose.matvecs < tight.matvecs
    assert tight.residual <= 1e-9 * tight.value
    assert tight.value == pytest.approx(exact, rel=1e-12)


def test_the_start_vector_of_a_seed_is_the_same_in_float32_and_float64() -> None:
    """The start vector is drawn in float64 and then cast, so a float32 copy of a model starts from the same
    direction: one power step each (the Rayleigh quotients of the start vector) agrees to float32 rounding.
    Drawing it in the model's dtype gave the float32 run another vector."""
    model = mlp(nn.Tanh)
    x, y = classification_data()
    wide = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), method="power", max_matvecs=1, seed=5)
    narrow = hessian_spectral_norm(
        copy.deepcopy(model).float(), nn.CrossEntropyLoss(), (x.float(), y), method="power", max_matvecs=1, seed=5
    )
    assert narrow.matvecs == wide.matvecs == 2
    assert narrow.lambda_max == pytest.approx(wide.lambda_max, rel=1e-4)
    assert narrow.lambda_min == pytest.approx(wide.lambda_min, rel=1e-4)


def test_data_loss_adds_float32_batch_losses_in_float64() -> None:
    """Each batch's loss is weighted and summed in float64: the result is the float64 weighted sum of the float32
    batch losses, not a float32 sum rounded on the way."""
    torch.manual_seed(3)
    model = nn.Linear(4, 3)
    x, y = torch.randn(21, 4), torch.randint(0, 3, (21,))
    sizes = [7, 7, 7]
    batches = list(zip(x.split(sizes), y.split(sizes)))
    with torch.no_grad():
        losses = [float(nn.functional.cross_entropy(model(xb), yb)) for xb, yb in batches]
    expected = sum(n / 21 * loss for n, loss in zip(sizes, losses))
    assert data_loss(model, nn.CrossEntropyLoss(), batches) == pytest.approx(expected, rel=1e-15, abs=0)


@pytest.mark.parametrize("seed", [-1, 2**70, 1.5])
def test_data_loss_refuses_a_bad_seed(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        data_loss(nn.Linear(2, 1), nn.MSELoss(), (torch.ones(3, 2), torch.ones(3, 1)), seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("cache_graph", [False, True])
def test_spectral_norm_passes_cache_graph_to_the_operator(monkeypatch: pytest.MonkeyPatch, cache_graph: bool) -> None:
    """``cache_graph`` reaches the operator (the automatic choice kept the graphs of these small batches even when
    asked to rebuild them), and both choices give the same estimate."""
    from theorylr.estimate.hvp import HessianOperator

    seen: list[bool | None] = []
    call = HessianOperator.__call__

    def spy(self: HessianOperator, vector: torch.Tensor) -> torch.Tensor:
        out = call(self, vector)
        seen.append(self.cache_graph)
        return out

    monkeypatch.setattr(HessianOperator, "__call__", spy)
    model, (x, y) = mlp(nn.Tanh), classification_data()
    batches = list(zip(x.split([10, 14]), y.split([10, 14])))
    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), batches, seed=0, cache_graph=cache_graph)
    assert seen and set(seen) == {cache_graph}
    exact = spectral_norm(dense_hessian(model, nn.CrossEntropyLoss(), batches))
    assert r.converged and r.value == pytest.approx(exact, rel=1e-6)


class _NoisyCounter(nn.Module):
    """A linear layer whose forward, in any mode, adds a random draw times zero and counts its calls in a buffer:
    a model that touches the global RNG and its own buffers outside training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1).to(F64)
        self.register_buffer("calls", torch.zeros((), dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) + 0.0 * torch.randn(x.shape[0], 1, dtype=F64)


def test_data_loss_restores_the_rng_and_buffers_of_an_eval_mode_pass() -> None:
    """``data_loss`` leaves the global RNG and the buffers as they were also where no training pass forks or copies
    them (eval mode): the estimators' ``preserved`` wraps it."""
    model = _NoisyCounter()
    data = [(torch.randn(4, 3, dtype=F64), torch.randn(4, 1, dtype=F64)) for _ in range(2)]
    state = torch.get_rng_state()
    loss = data_loss(model, nn.MSELoss(), data)
    assert torch.equal(torch.get_rng_state(), state)
    assert float(model.calls) == 0.0
    with torch.no_grad():
        expected = sum(float(nn.functional.mse_loss(model.fc(xb), yb)) for xb, yb in data) / 2
    assert loss == pytest.approx(expected, rel=1e-14)


# ----------------------------------------------------------------------------------------------------------------
# hvp
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "meta", "xpu"])
def test_devices_without_a_measurement_default_to_double_backward(device: str) -> None:
    """Only the CPU has been measured; every other device type uses double backward too (module docstring)."""
    from theorylr.estimate.hvp import default_backend

    assert default_backend(device) == "double_backward"


def _fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    """``open`` inside theorylr.estimate.hvp reads ``files`` (path -> text); any other path is missing."""
    import io

    def fake_open(path: str, *args: object, **kwargs: object) -> io.StringIO:
        if path not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[path])

    monkeypatch.setattr(HVP_MODULE, "open", fake_open, raising=False)


MEMINFO = "MemTotal:       8000 kB\nMemAvailable:   1000 kB\nMemAvailable:   5 kB\n"


@pytest.mark.parametrize(
    ("limit", "used", "expected"),
    [
        (None, None, 1000 * 1024),  # no cgroup: MemAvailable, in KiB
        ("max", "123", 1000 * 1024),  # cgroup without a limit
        ("600000", "100000", 500000),  # the cgroup's headroom is below MemAvailable
        ("900000000", "100000", 1000 * 1024),  # MemAvailable is below the headroom
        ("100000", "250000", 0),  # over the limit: nothing free, never negative
    ],
)
def test_free_host_memory_reads_memavailable_capped_by_the_cgroup(
    monkeypatch: pytest.MonkeyPatch, limit: str | None, used: str | None, expected: int
) -> None:
    files = {"/proc/meminfo": MEMINFO}
    if limit is not None and used is not None:
        files |= {"/sys/fs/cgroup/memory.max": f"{limit}\n", "/sys/fs/cgroup/memory.current": f"{used}\n"}
    _fake_files(monkeypatch, files)
    assert HVP_MODULE._free_host_memory() == expected
    assert HVP_MODULE.default_graph_budget("cpu") == expected // 2


class _SavesExp(torch.autograd.Function):
    """``2 x``, keeping ``exp(x)`` (a new storage) for a backward that ignores it but for its size."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.exp())
        return 2 * x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
        (kept,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return 2 * g + 0 * kept


def test_graph_bytes_count_what_a_custom_function_saves() -> None:
    """A custom autograd Function's ``save_for_backward`` (its node's ``saved_tensors``, a tuple) is counted:
    exactly the one storage it keeps, the input being held anyway."""
    x = torch.randn(1000, dtype=F64, requires_grad=True)
    y = _SavesExp.apply(x)
    assert HVP_MODULE._graph_bytes([y], [x]) == 1000 * 8


def test_graph_bytes_count_a_saved_tensor_without_a_storage() -> None:
    """A sparse tensor saved for backward has no storage to key: it is still counted (by its size), not left out."""
    s = torch.eye(50, dtype=F64).to_sparse()
    w = torch.randn(50, 3, dtype=F64, requires_grad=True)
    y = torch.sparse.mm(s, w)
    assert HVP_MODULE._graph_bytes([y], [w]) >= s._values().nbytes > 0


def test_graph_bytes_count_a_storage_saved_by_several_nodes_once() -> None:
    """``tanh`` saves its output and ``h * h`` saves it twice more: one storage, counted once."""
    x = torch.randn(300, dtype=F64, requires_grad=True)
    h = torch.tanh(x)
    assert HVP_MODULE._graph_bytes([h * h], [x]) == h.nbytes == 300 * 8


@pytest.mark.parametrize("message", ["derivative for aten::foo is not implemented: no double backward", "boom"])
def test_only_a_missing_double_backward_gets_the_compile_hint(message: str) -> None:
    """A RuntimeError that names a missing double backward is re-raised with the hint for compiled models; any
    other error passes through as it is."""
    from theorylr.estimate import HessianOperator

    def failing(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(message)

    model = nn.Linear(2, 1).to(F64)
    op = HessianOperator(model, failing, (torch.ones(3, 2, dtype=F64), torch.ones(3, 1, dtype=F64)))
    with pytest.raises(RuntimeError) as info:
        op(torch.ones(op.dim, dtype=F64))
    hinted = "torch.compile'd model has no double backward" in str(info.value)
    assert hinted == ("double backward" in message)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("backend", "cache_graph"), [("double_backward", False), ("double_backward", True), ("forward_over_reverse", None)]
)
def test_the_loss_is_reduced_once_whatever_the_path(backend: str, cache_graph: bool | None) -> None:
    """Every path computes the loss on each matvec that runs the forward passes; it is recorded (and passed through
    ``reduce``, a collective in data-parallel use) once, at the first. Re-recording it at every rebuilt matvec
    called ``reduce`` once more per product, a collective the ranks would have to match."""
    from theorylr.estimate import HessianOperator

    model, (x, y) = mlp(nn.Tanh), classification_data()
    calls: list[tuple[int, ...]] = []

    def triple(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return 3 * t

    batches = list(zip(x.split([10, 14]), y.split([10, 14])))
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches, backend=backend, cache_graph=cache_graph, reduce=triple)
    with op:
        for _ in range(3):
            op(torch.ones(op.dim, dtype=F64))
        loss = op.loss
    assert calls.count(()) == 1 and calls.count((op.dim,)) == 3
    assert loss == pytest.approx(3 * float(nn.CrossEntropyLoss()(model(x), y).detach()), rel=1e-12)


class _ScaledByBuffer(nn.Module):
    """``sum_j x_j * w_j * b_j`` with ``b`` a large buffer that the product with ``w`` saves for backward."""

    def __init__(self, n: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(n, generator=g, dtype=F64))
        self.register_buffer("b", torch.rand(n, generator=g, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (self.w * self.b)).sum(1, keepdim=True)


def test_graph_bytes_leave_out_the_buffers() -> None:
    """Buffers live anyway, like parameters and data: a graph that saves one does not count it (it counted the
    160 KB buffer twice over, once per half of the data, against a graph of a few bytes)."""
    from theorylr.estimate import HessianOperator

    model = _ScaledByBuffer(20000)
    x = torch.randn(4, 20000, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.ones(4, 1, dtype=F64)
    with HessianOperator(model, nn.MSELoss(), [(x[:2], y[:2]), (x[2:], y[2:])]) as op:
        op(torch.ones(op.dim, dtype=F64))
        assert op.graph_bytes is not None
        assert op.graph_bytes < model.b.nbytes / 100


def test_graph_bytes_extrapolate_the_first_batch_by_its_share_of_the_samples() -> None:
    """The automatic choice measures the first batch's graph and scales it by ``N / n_1``: with activations per
    sample, the estimate for all the data is the same whatever the first batch's size (it was the first batch's
    own bytes, 7 times smaller for a first batch of 4 of 32 samples than for 28)."""
    from theorylr.estimate import HessianOperator

    model, (x, y) = mlp(nn.Tanh, sizes=(5, 64, 64, 3)), classification_data(n=32)
    estimates = []
    for sizes in ([4, 28], [16, 16], [28, 4]):
        with HessianOperator(model, nn.CrossEntropyLoss(), list(zip(x.split(sizes), y.split(sizes)))) as op:
            op(torch.ones(op.dim, dtype=F64))
            estimates.append(op.graph_bytes)
    assert estimates[0] is not None and estimates[0] > 0
    assert max(estimates) <= 1.05 * min(estimates)  # type: ignore[type-var]


def test_hvp_refuses_a_sequence_of_tensors_of_the_right_sizes_but_other_shapes() -> None:
    """A per-parameter vector must match each parameter's shape, not only its number of elements (a transposed
    weight would be read in the wrong order)."""
    from theorylr.estimate import hvp

    model = nn.Linear(3, 2).to(F64)
    data = (torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64))
    with pytest.raises(ValueError, match="shaped like the parameters"):
        hvp(model, nn.MSELoss(), data, [torch.ones(3, 2, dtype=F64), torch.ones(2, dtype=F64)])


# ----------------------------------------------------------------------------------------------------------------
# _state: batches
# ----------------------------------------------------------------------------------------------------------------
def test_a_triple_inside_a_list_of_batches_is_refused_with_the_way_out() -> None:
    """A loader yielding ``(x, y, extra)`` is refused with a message that says how to pass the pairs, also when the
    triples come inside an iterable (it was taken as a pair and failed to unpack)."""
    from theorylr.estimate import HessianOperator

    x, y = torch.randn(4, 3, dtype=F64), torch.randn(4, 1, dtype=F64)
    for data in ([(x, y, torch.zeros(4))], iter([(x, y), (x, y, torch.zeros(4))])):
        with pytest.raises(ValueError, match=r"of 3 items \(e\.g\. \(x, y, extra\)\)"):
            HessianOperator(nn.Linear(3, 1).to(F64), nn.MSELoss(), data)


def test_batches_are_weighted_by_the_targets_first_dimension() -> None:
    """A batch's size is its targets' first dimension: sequence-first inputs ``(T, n, d)`` (an LSTM without
    ``batch_first``) are weighted by their ``n`` samples, not by their length ``T``."""
    from theorylr.estimate import HessianOperator

    data = [(torch.randn(5, n, 2, dtype=F64), torch.randn(n, dtype=F64)) for n in (1, 3)]
    op = HessianOperator(nn.Linear(2, 1).to(F64), nn.MSELoss(), data)
    assert op.weights == [0.25, 0.75]


def test_a_batch_with_a_scalar_target_is_weighted_by_its_inputs() -> None:
    """A 0-dim target has no batch dimension: the inputs' first dimension gives the batch's size."""
    from theorylr.estimate import HessianOperator

    data = [
        (torch.randn(3, 2, dtype=F64), torch.tensor(0.5, dtype=F64)),
        (torch.randn(1, 2, dtype=F64), torch.tensor(1.0, dtype=F64)),
    ]
    op = HessianOperator(nn.Linear(2, 1).to(F64), lambda out, t: ((out - t) ** 2).mean(), data)
    assert op.weights == [0.75, 0.25]


def test_a_batchmean_criterion_is_accepted() -> None:
    """``reduction="batchmean"`` (KL divergence) is a mean over the batch, as the weighting needs: accepted, and
    the Hessian is that of the data's mean loss."""
    from theorylr.estimate import HessianOperator

    model = nn.Sequential(nn.Linear(3, 4), nn.LogSoftmax(dim=1)).to(F64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    target = torch.softmax(torch.randn(6, 4, generator=g, dtype=F64), dim=1)
    loss_fn = nn.KLDivLoss(reduction="batchmean")
    batches = [(x[:2], target[:2]), (x[2:], target[2:])]
    expected = dense_hessian(model, loss_fn, batches)
    with HessianOperator(model, loss_fn, batches) as op:
        v = torch.randn(op.dim, generator=g, dtype=F64)
        torch.testing.assert_close(op(v), expected @ v, rtol=1e-10, atol=1e-12)
    assert data_loss(model, loss_fn, batches) == pytest.approx(float(loss_fn(model(x), target).detach()), rel=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_a_partial_criterion_is_judged_by_its_reduction_keyword(reduction: str) -> None:
    """``functools.partial(F.mse_loss, reduction="sum")`` declares a summed loss through its keyword: refused like
    ``nn.MSELoss(reduction="sum")``."""
    import functools

    from theorylr.estimate import HessianOperator

    loss_fn = functools.partial(nn.functional.mse_loss, reduction=reduction)
    data = (torch.randn(4, 2, dtype=F64), torch.randn(4, 1, dtype=F64))
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        HessianOperator(nn.Linear(2, 1).to(F64), loss_fn, data)
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        data_loss(nn.Linear(2, 1).to(F64), loss_fn, data)


def test_parameters_of_two_dtypes_are_refused() -> None:
    """The flat vectors have one dtype: parameters mixing float32 and float64 are refused by name."""
    from theorylr.estimate import HessianOperator

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1).to(F64))
    with pytest.raises(ValueError, match="params must share one dtype and one device"):
        HessianOperator(model, nn.MSELoss(), (torch.randn(4, 2), torch.randn(4, 1)))


class _Pair(NamedTuple):
    features: torch.Tensor
    offset: torch.Tensor


class _NamedInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1).to(F64)

    def forward(self, inputs: _Pair) -> torch.Tensor:
        return torch.tanh(self.fc(inputs.features)) + inputs.offset


def test_a_named_tuple_input_reaches_the_model_as_it_is() -> None:
    """Structured inputs are walked for tensors to move, but a named tuple is left whole (rebuilding it from a
    generator fails: its fields are positional arguments)."""
    from theorylr.estimate import HessianOperator

    model = _NamedInput()
    g = torch.Generator().manual_seed(0)
    inputs = _Pair(torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 1, generator=g, dtype=F64))
    y = torch.randn(6, 1, generator=g, dtype=F64)
    w0, b0 = model.fc.weight.detach(), model.fc.bias.detach()

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(inputs.features @ flat[:3].view(1, 3).T + flat[3]) + inputs.offset
        return nn.functional.mse_loss(out, y)

    expected = torch.autograd.functional.hessian(loss_of, torch.cat([w0.reshape(-1), b0]))
    with HessianOperator(model, nn.MSELoss(), (inputs, y)) as op:
        v = torch.randn(op.dim, generator=g, dtype=F64)
        torch.testing.assert_close(op(v), expected @ v, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# optim.adaptive: AdaMo, AutoAdam, AdaptiveRMSprop
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("foreach", [False, True])
def test_a_group_mixing_float32_and_float64_casts_the_estimate_per_dtype(foreach: bool) -> None:
    """``L_t`` is cast to each state's dtype once per (device, dtype): a float64 parameter listed after a float32
    one gets the float64 ``L_t``, not the float32 copy made for the first (a step off by float32 rounding).

    AdaMo's first step (Algorithm 1, ``V = K = 0`` before): ``V = (1 - b) g``, ``K = (1 - b) L`` with ``L`` the
    largest gradient norm, so ``W -= V / K = g / L``."""
    from theorylr.optim.adaptive import AdaMo

    narrow = nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float32))
    wide = nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    g_wide = torch.tensor([1 / 3, -2 / 7, 5 / 11], dtype=F64)  # the largest norm, not a float32 number
    narrow.grad = torch.tensor([0.125, 0.0625], dtype=torch.float32)
    wide.grad = g_wide.clone()
    AdaMo([narrow, wide], beta=0.9, foreach=foreach).step()
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=F64) - g_wide / torch.linalg.vector_norm(g_wide)
    torch.testing.assert_close(wide.detach(), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("kind", "cls"), [("autoadam", "AutoAdam"), ("rmsprop", "AdaptiveRMSprop")])
def test_float16_parameters_with_bias_correction_follow_the_algorithm(foreach: bool, kind: str, cls: str) -> None:
    """Float16 parameters take the second moment's step in float32, bias correction of ``S`` included: three steps
    agree with the float64 reference of Algorithm 3 to float16 rounding, on the loop as on the multi-tensor path
    (the loop's float16 branch left ``S`` uncorrected: a step ``sqrt(1 - b2^t)`` times too large or small)."""
    from theorylr.optim import adaptive

    w0, grad_fn = _quadratic()
    params = [nn.Parameter(w.to(torch.float16)) for w in w0]
    kwargs: dict[str, object] = {"lr": 0.05, "eps": 1e-3, "bias_correction": True, "foreach": foreach}
    if kind == "rmsprop":
        kwargs["beta"] = 0.5
        ref_betas = {"beta2": 0.5}
    else:
        kwargs["betas"] = (0.8, 0.9)
        ref_betas = {"beta1": 0.8, "beta2": 0.9}
    opt = getattr(adaptive, cls)(params, **kwargs)
    for _ in range(3):
        for p, g in zip(params, grad_fn([p.detach().double() for p in params])):
            p.grad = g.to(torch.float16)
        opt.step()
    expected = reference_run(kind, w0, grad_fn, 3, lr=0.05, eps=1e-3, bias_correction=True, **ref_betas)
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.detach().double(), want, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("foreach", [False, True])
def test_the_observed_estimate_is_the_largest_gradient_norm_over_every_group(foreach: bool) -> None:
    """``L_t`` is one maximum over all layers (the paper's ``max ||grad_W L||``), shared by every group: a first
    group with small gradients steps by ``g / L`` with ``L`` the second group's larger norm (Algorithm 1's first
    step, ``V / K = g / L``)."""
    from theorylr.optim.adaptive import AdaMo

    small = nn.Parameter(torch.tensor([1.0, -1.0], dtype=F64))
    large = nn.Parameter(torch.tensor([0.5], dtype=F64))
    opt = AdaMo([{"params": [small]}, {"params": [large], "lr": 0.5}], foreach=foreach)
    small.grad = torch.tensor([0.3, 0.4], dtype=F64)  # norm 0.5
    large.grad = torch.tensor([-2.0], dtype=F64)  # norm 2: L
    opt.step()
    torch.testing.assert_close(small.detach(), torch.tensor([1.0 - 0.15, -1.0 - 0.2], dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(large.detach(), torch.tensor([0.5 + 0.5], dtype=F64), rtol=1e-15, atol=0)


def test_a_max_fn_hook_exchanges_float64_norms_without_rounding() -> None:
    """The sharded-maxima hook gets the norms in float64 (exact for any norm dtype): with an identity hook a float64
    model takes exactly the steps it takes without one (a float32 exchange rounded ``L_t``)."""
    from theorylr.optim.adaptive import AutoAdam

    w0, grad_fn = _quadratic()
    runs = []
    for max_fn in (None, lambda t: t.clone()):
        params = [nn.Parameter(w.clone()) for w in w0]
        opt = AutoAdam(params, lr=0.1, weight_decay=0.01, max_fn=max_fn)
        for _ in range(3):
            for p, g in zip(params, grad_fn([p.detach() for p in params])):
                p.grad = g
            opt.step()
        runs.append([p.detach() for p in params])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
