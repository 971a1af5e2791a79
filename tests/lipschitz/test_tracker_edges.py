"""ActivationTracker and DistributedActivationTracker at the edges: passes that should not count (activation
checkpointing's recomputation inside backward, torch.func transforms), a compiled model, and ranks with unequal
numbers of passes."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tests.distributed._ranks import join_world, save_and_exit, spawn_ranks
from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.tracker import ActivationTracker


class _Checkpointed(nn.Module):
    """body -> head, the whole forward under torch.utils.checkpoint (use_reentrant=False, torch's recommendation)."""

    def __init__(self, checkpointed: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)
        self.checkpointed = checkpointed

    def forward(self, x: Tensor) -> Tensor:
        if not self.checkpointed:
            return self.head(self.body(x))
        return checkpoint(lambda h: self.head(self.body(h)), x, use_reentrant=False)


def _data(n: int = 3) -> tuple[list[Tensor], list[Tensor]]:
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(6, 4, generator=gen, dtype=torch.float64) * (i + 1) for i in range(n)]
    ys = [torch.randint(0, 3, (6,), generator=gen) for _ in range(n)]
    return xs, ys


def test_checkpoint_recomputation_in_backward_is_not_a_second_batch() -> None:
    """Non-reentrant checkpointing re-runs the head's forward inside backward (training mode, grad enabled): that
    is not a new training batch. Got: every batch counted twice (batches 6, examples 36)."""
    model = _Checkpointed().double()
    xs, ys = _data()
    with ActivationTracker(model, "softmax") as tracker:
        for x, y in zip(xs, ys):
            nn.functional.cross_entropy(model(x), y).backward()
        stats = tracker.epoch_stats()
        assert stats is not None
        assert (stats.batches, stats.examples) == (3, 18)


def test_checkpoint_recomputation_keeps_least_squares_targets() -> None:
    """forward, observe_targets, backward (checkpoint recomputes) must work for least squares. Got: RuntimeError
    'needs the targets of every batch' (the recomputation replaced the batch that had its targets)."""
    model = _Checkpointed().double()
    xs, _ = _data()
    gen = torch.Generator().manual_seed(2)
    with ActivationTracker(model, "least_squares", rigorous=True) as tracker:
        for x in xs:
            y = 0.1 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
            out = model(x)
            tracker.observe_targets(y)
            (0.5 * (out - y).square().sum(1).mean()).backward()
        stats = tracker.epoch_stats()
        assert stats is not None and stats.batches == 3


def test_rigorous_bound_under_checkpointing_equals_the_plain_model() -> None:
    """Same model, same batches, same targets: checkpointing must not change L. Got: a larger L (the recomputed
    copy of each batch, without its targets, gets the looser target-free bound)."""
    xs, ys = _data()
    values = []
    for checkpointed in (False, True):
        model = _Checkpointed(checkpointed).double()
        with ActivationTracker(model, "softmax", rigorous=True) as tracker:
            for x, y in zip(xs, ys):
                out = model(x)
                tracker.observe_targets(y)
                nn.functional.cross_entropy(out, y).backward()
            got = tracker.epoch_values()
            assert got is not None
            values.append(got["data_lipschitz"])
    plain = _Checkpointed(False).double()
    with torch.no_grad():
        want = max(
            float(gradient_norm_bound(plain.body(x), "softmax", num_classes=3, targets=y, bias=True))
            for x, y in zip(xs, ys)
        )
    assert values[0] == pytest.approx(want, rel=1e-12)
    assert values[1] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("warm_up", [False, True])
def test_a_model_compiled_without_its_tracked_head_records_every_batch_in_one_graph(warm_up: bool) -> None:
    """The documented way to compile a tracked model: compile the body, keep the head (and its hook) eager. Every
    batch is recorded, with the eager values, and the body compiles once (traced into the graph, the hook's
    bookkeeping made the model recompile at every batch); a compiled warm-up before the tracker exists does not
    hide the hook either."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    try:
        torch.manual_seed(0)
        full = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        model = nn.Sequential(torch.compile(full[:-1], backend="eager"), full[-1])
        xs = [torch.randn(5, 4) for _ in range(12)]
        if warm_up:
            model(xs[0]).sum().backward()
        with ActivationTracker(model, "softmax") as tracker:
            for x in xs:
                model(x).sum().backward()
            values = tracker.epoch_values()
        assert values is not None and values["batches"] == 12
        want = max(float(full[1](full[0](x)).detach().norm()) for x in xs)
        assert values["max_k_z"] == pytest.approx(want, rel=1e-6)
        assert counters["stats"]["unique_graphs"] == 1
    finally:
        torch._dynamo.reset()
        counters.clear()


def test_per_sample_gradients_with_torch_func_do_not_break_the_epoch() -> None:
    """vmap(grad(functional_call(model, ...))) in training mode (per-sample gradients): the hook stores a
    functorch-wrapped K_z that outlives the transform; the epoch read then dies with a PyTorch INTERNAL ASSERT
    ("maybe_level.has_value()"). Expected: such passes ignored (or a clear error at the pass)."""
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with ActivationTracker(model, "softmax") as tracker:
        model(x)  # one real training batch
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

        vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
        values = tracker.epoch_values()
        assert values is not None
        want = float(model[1](model[0](x)).detach().norm())
        assert values["max_k_z"] == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Distributed: ranks with different numbers of training passes
# ----------------------------------------------------------------------------------------------------------------
def _uneven_worker(rank: int, out_dir: str) -> None:
    from theorylr.distributed import DistributedActivationTracker

    join_world(rank, out_dir, 2, timeout_s=20)
    result: dict[str, Any]
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
        tracker = DistributedActivationTracker(model, "softmax")
        for _ in range(3 if rank == 0 else 2):
            model(torch.randn(4, 4, dtype=torch.float64))
        try:
            tracker.epoch_values()
            result = {"outcome": "no error"}
        except (RuntimeError, ValueError) as exc:
            result = {"outcome": type(exc).__name__, "message": str(exc)}
    except Exception:
        result = {"outcome": "crash", "message": traceback.format_exc()}
    save_and_exit(result, out_dir, rank)


def test_ranks_with_different_numbers_of_batches_fail_clearly(tmp_path: Path) -> None:
    """Rank 0 makes 3 training passes, rank 1 makes 2: epoch_values must raise a clear error on every rank.
    Got: the all_reduce of tables of different lengths aborts a rank (gloo EnforceNotMet, SIGABRT) and the other
    gets 'Connection reset by peer'."""
    try:
        results = spawn_ranks(_uneven_worker, tmp_path, 2)
    except mp.ProcessExitedException as exc:  # type: ignore[attr-defined]
        pytest.fail(f"a rank died instead of raising a clear error: {exc}")
    for res in results:
        assert res["outcome"] in ("RuntimeError", "ValueError"), res
        assert "number" in res["message"] or "batches" in res["message"], res["message"]


@pytest.mark.parametrize("backend", ["double_backward", "forward_over_reverse"])
def test_the_estimators_training_mode_passes_are_not_batches(backend: str) -> None:
    """``hessian_spectral_norm(..., mode="train")`` on a model LipschitzLR tracks ran its passes through the hook:
    its probe batch set the epoch's L. The estimators' passes run in ``untracked()``."""
    from theorylr.estimate import hessian_spectral_norm
    from theorylr.lipschitz.tracker import untracked

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with ActivationTracker(model, "softmax") as tracker:
        model(x)  # the one training batch
        before = tracker.epoch_values()
        hessian_spectral_norm(model, nn.CrossEntropyLoss(), (100 * x, y), mode="train", backend=backend, seed=0)
        after = tracker.epoch_values()
        with untracked():
            model(x)
        assert tracker.epoch_values() == after
    assert before == after and after is not None and after["batches"] == 1


def test_rigorous_least_squares_through_penultimate_covers_the_heads_bias() -> None:
    """With ``penultimate=`` the tracker left the head's bias out of the least-squares bound (and of ``K``): the
    "true bound" was 5.7x below the gradient's norm. It now equals the bound of the default hook on the head."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        model[0].weight.fill_(0.05)
        model[0].bias.fill_(0.05)
        model[2].weight.fill_(0.01)
        model[2].bias.fill_(2.0)  # a head bias that dominates the residual
    x, y = torch.rand(8, 2, dtype=torch.float64), torch.zeros(8, 1, dtype=torch.float64)
    bounds = []
    for penultimate in (None, "1"):
        with ActivationTracker(model, "least_squares", rigorous=True, penultimate=penultimate) as tracker:
            out = model(x)
            tracker.observe_targets(y)
            bounds.append(float(tracker.batch_lipschitz()))
    loss = 0.5 * ((out - y) ** 2).sum() / 8  # the bound's 1/(2m) convention
    grads = torch.autograd.grad(loss, [model[2].weight, model[2].bias])
    assert bounds[1] == pytest.approx(bounds[0], rel=1e-12)
    assert float(torch.cat([g.flatten() for g in grads]).norm()) <= bounds[1]


def test_a_constant_weight_bound_keeps_a_float64_models_precision() -> None:
    """``weight_bound=0.1`` was held in float32 (the default dtype): K * weight decay off by 8e-9 relative."""
    model = nn.Sequential(nn.Linear(3, 2)).double()
    tracker = ActivationTracker(model, "softmax", weight_bound=0.1)
    assert tracker.weight_bound().dtype == torch.float64 and float(tracker.weight_bound()) == 0.1
    tracker.close()


def test_spectral_activation_norm_of_a_diverged_batch_is_not_finite() -> None:
    """The SVD raised a linalg error from inside the forward hook; now inf or nan, as the other norms give, so
    that LipschitzLR reports a divergence."""
    from theorylr.lipschitz.closed_form import activation_norm

    a = torch.tensor([[1.0, float("inf")], [0.0, 1.0]])
    assert activation_norm(a, "spectral") == float("inf")
    assert torch.isnan(activation_norm(torch.tensor([[float("nan"), 1.0]]), "spectral"))
    assert activation_norm(torch.tensor([[3.0, 4.0]]), "spectral") == 5.0
