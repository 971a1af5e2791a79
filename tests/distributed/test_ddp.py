"""The three rules under torch.distributed: two gloo ranks on loopback against one process on the union of the data.

One ``torch.multiprocessing.spawn`` (a module-scoped fixture) runs every scenario on 2 CPU ranks and saves what each
rank ended with; the tests below compare those files with single-process runs made here, in float64. Scenarios:

- LARS and PercentDelta under DDP (each rank half of every batch) == one process on the concatenated batches;
- :func:`theorylr.distributed.sharded_norm_fn` on tensors split across the ranks (uneven and empty shards) == the
  unsharded norms, in one all_reduce; LARS on the shards == LARS on the whole tensors;
- LipschitzLR under DDP (:func:`theorylr.distributed.distributed_lipschitz_lr`): the same lr on every rank, equal to
  the single-process lr with ``m`` = the global batch (softmax/fro with weight decay; least squares/max_row);
- AdaMo in closed-form mode with a :class:`~theorylr.distributed.DistributedActivationTracker` == one process;
- smoothness with unequal shards through :func:`theorylr.distributed.mean_reduce` (equal shards with a plain
  average are covered by ``tests/estimate/test_distributed.py``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tests.distributed._ranks import checked, join_world, save_and_exit, spawn_ranks
from theorylr.distributed import (
    DistributedActivationTracker,
    distributed_lipschitz_lr,
    mean_reduce,
    sharded_norm_fn,
)
from theorylr.estimate import hessian_spectral_norm
from theorylr.lipschitz.scheduler import LipschitzLR
from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim.adaptive import AdaMo
from theorylr.optim.lars import LARS, local_norms

pytestmark = pytest.mark.distributed

WORLD = 2
DT = torch.float64
BATCHES = (16, 16, 8)  # global batch sizes of an epoch (each rank gets half); the small last one sets L (fro)
EPOCHS = 2
LARS_CONFIGS: dict[str, dict[str, Any]] = {
    "lars": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
    "percentdelta": {"lr": 0.02, "momentum": 0.9, "norm": "l1", "nesterov": True},
}
SHARD_SHAPES = ((5, 4), (7,), (3, 3), (6,))
SHARD_SPLITS = (9, 0, 9, 2)  # elements on rank 0 (the rest on rank 1): uneven, an empty shard, a whole tensor


# ----------------------------------------------------------------------------------------------------------------
# Problems shared by the ranks and the single-process references
# ----------------------------------------------------------------------------------------------------------------
def _mlp(seed: int = 0, out: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, out)).to(DT)


def _data() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(sum(BATCHES), 6, generator=gen, dtype=DT)
    labels = torch.randint(0, 3, (sum(BATCHES),), generator=gen)
    targets = 0.1 * torch.randn(sum(BATCHES), 3, generator=gen, dtype=DT)
    return x, labels, targets


def _batches(rank: int | None) -> list[slice]:
    """The rows of each batch: the global batch (``rank=None``) or this rank's half of it."""
    out, start = [], 0
    for size in BATCHES:
        if rank is None:
            out.append(slice(start, start + size))
        else:
            half = size // WORLD
            out.append(slice(start + rank * half, start + (rank + 1) * half))
        start += size
    return out


def _uneven_batches(rank: int) -> list[slice]:
    """This rank's rows when the first batch is all rank 0's (rank 1's share of it is empty)."""
    rows = _batches(rank)
    return [slice(0, BATCHES[0]) if rank == 0 else slice(0, 0), *rows[1:]]


def _track_epoch(tracker: Any, rows: list[slice], loss: str) -> dict[str, Any]:
    """One epoch of forward passes through the tracked model; the tracker's epoch values."""
    x, _, targets = _data()
    for r in rows:
        tracker.model(x[r])
        if loss == "least_squares":
            tracker.observe_targets(targets[r])
    values = tracker.epoch_values()
    tracker.close()
    return dict(values)


def _shard_problem() -> tuple[list[Tensor], list[Tensor]]:
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(s, generator=gen, dtype=DT) for s in SHARD_SHAPES]
    targets = [torch.randn(s, generator=gen, dtype=DT) for s in SHARD_SHAPES]
    return weights, targets


def _shard(t: Tensor, i: int, rank: int) -> Tensor:
    flat = t.reshape(-1)
    return flat[: SHARD_SPLITS[i]].clone() if rank == 0 else flat[SHARD_SPLITS[i] :].clone()


def _train_lars(model: nn.Module, params: Any, cfg: dict[str, Any], x: Tensor, y: Tensor, rows: list[slice]) -> None:
    opt = LARS(params, **cfg)
    for _ in range(EPOCHS):
        for r in rows:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[r]), y[r]).backward()
            opt.step()


def _train_lipschitz(
    model: nn.Module, make_sched: Callable[[torch.optim.Optimizer], LipschitzLR], kind: str, rows: list[slice]
) -> tuple[list[dict[str, Any]], list[float]]:
    x, labels, targets = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    sched = make_sched(opt)
    lrs = []
    for _ in range(EPOCHS):
        for r in rows:
            opt.zero_grad()
            out = model(x[r])
            if kind == "least_squares":
                sched.observe_targets(targets[r])
                loss = nn.functional.mse_loss(out, targets[r])
            else:
                loss = nn.functional.cross_entropy(out, labels[r])
            loss.backward()
            opt.step()
            lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    sched.close()
    return sched.history, lrs


LIPSCHITZ_CASES: dict[str, dict[str, Any]] = {
    "softmax_fro": {"loss": "softmax", "weight_decay": 1e-3},
    "least_squares_max_row": {"loss": "least_squares", "activation_norm": "max_row", "initial_lr": 0.01},
}


def _train_adamo(model: nn.Module, opt: AdaMo, rows: list[slice]) -> None:
    x, labels, _ = _data()
    for _ in range(EPOCHS):
        for r in rows:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[r]), labels[r]).backward()
            opt.step()


def _hessian_data(rank: int | None) -> tuple[Tensor, Tensor]:
    x, labels, _ = _data()
    rows = slice(0, 24) if rank is None else (slice(0, 10) if rank == 0 else slice(10, 24))  # unequal: 10 and 14
    return x[rows], labels[rows]


# ----------------------------------------------------------------------------------------------------------------
# The worker: every scenario on one rank
# ----------------------------------------------------------------------------------------------------------------
def _scenarios(rank: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    x, labels, _ = _data()

    # LARS / PercentDelta under DDP
    for name, cfg in LARS_CONFIGS.items():
        model = _mlp()
        ddp = DistributedDataParallel(model)
        _train_lars(ddp, ddp.parameters(), cfg, x, labels, _batches(rank))
        out[f"ddp_{name}"] = [p.detach().clone() for p in model.parameters()]

    # sharded_norm_fn: the norms of the whole tensors, in one collective
    weights, targets = _shard_problem()
    calls = [0]
    original = dist.all_reduce

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    shards = [_shard(w, i, rank) for i, w in enumerate(weights)]
    dist.all_reduce = counting  # type: ignore[assignment]
    try:
        for check_counts in (False, None):  # None on the CPU: the two-number count check first
            calls[0] = 0
            norm_fn = sharded_norm_fn(check_counts=check_counts)
            for norm in ("l1", "l2", "linf"):
                out[f"norms_{norm}"] = torch.stack(norm_fn(shards, norm))
            out[f"norm_calls_{check_counts}"] = calls[0]
    finally:
        dist.all_reduce = original

    # LARS on the shards, gradient of 0.5 ||w - t||^2 computed shard by shard
    for norm in ("l2", "l1", "linf"):
        for foreach in (True, False):
            params = [nn.Parameter(_shard(w, i, rank)) for i, w in enumerate(weights)]
            shard_targets = [_shard(t, i, rank) for i, t in enumerate(targets)]
            opt = LARS(params, lr=0.1, momentum=0.9, weight_decay=1e-2, norm=norm, foreach=foreach, norm_fn=norm_fn)
            for _ in range(3):
                for p, t in zip(params, shard_targets):
                    p.grad = p.detach() - t
                opt.step()
            out[f"sharded_lars_{norm}_{foreach}"] = [p.detach().clone() for p in params]

    # LipschitzLR under DDP
    for name, case in LIPSCHITZ_CASES.items():
        model = _mlp(seed=3)
        ddp = DistributedDataParallel(model)
        kwargs = {k: v for k, v in case.items() if k != "loss"}
        history, lrs = _train_lipschitz(
            ddp,
            lambda opt, d=ddp, c=case, k=kwargs: distributed_lipschitz_lr(opt, d, c["loss"], **k),
            case["loss"],
            _batches(rank),
        )
        out[f"lipschitz_{name}"] = {
            "history": history,
            "lrs": lrs,
            "params": [p.detach().clone() for p in model.parameters()],
        }

    # AdaMo, closed-form Lipschitz estimate of every global batch
    model = _mlp(seed=4)
    ddp = DistributedDataParallel(model)
    opt = AdaMo(ddp.parameters(), lr=0.5, tracker=DistributedActivationTracker(ddp, "softmax"))
    _train_adamo(ddp, opt, _batches(rank))
    out["adamo"] = [p.detach().clone() for p in model.parameters()]

    # A batch whose share is empty on rank 1: a row of zeros keeps the ranks' batches paired
    for loss in ("softmax", "least_squares"):
        tracker = DistributedActivationTracker(_mlp(seed=6), loss)
        out[f"uneven_{loss}"] = _track_epoch(tracker, _uneven_batches(rank), loss)

    # Smoothness with unequal shards (10 and 14 samples), sample-weighted average of the HVPs
    model = _mlp(seed=5)
    xs, ys = _hessian_data(rank)
    reduce = mean_reduce(num_samples=xs.shape[0])
    counted = [0]

    def counted_reduce(t: Tensor) -> Tensor:
        counted[0] += 1
        return reduce(t)

    r = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (xs, ys), seed=0, tol=1e-9, reduce=counted_reduce)
    out["hessian"] = {"value": r.value, "loss": r.loss, "matvecs": r.matvecs, "calls": counted[0]}

    # A group that holds rank 0 only: on rank 1 torch's collectives would do nothing (and get_world_size is -1)
    only_first = dist.new_group([0])
    errors = []
    for call in (
        lambda: mean_reduce(only_first),
        lambda: sharded_norm_fn(only_first)([torch.ones(3)], "l2"),
    ):
        try:
            errors.append(repr(call()))
        except ValueError as exc:
            errors.append(f"ValueError: {exc}")
    out["outside_the_group"] = errors
    return out


def _worker(rank: int, out_dir: str) -> None:
    join_world(rank, out_dir, WORLD)
    try:
        result: dict[str, Any] = _scenarios(rank)
    except Exception:
        result = {"error": traceback.format_exc()}
    save_and_exit(result, out_dir, rank)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return checked(spawn_ranks(_worker, tmp_path_factory.mktemp("ddp"), WORLD))


def _close(a: list[Tensor], b: list[Tensor], rtol: float = 1e-10, atol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------------------------
# LARS
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LARS_CONFIGS))
def test_lars_under_ddp_equals_one_process_on_the_concatenated_batch(ranks: list[dict[str, Any]], name: str) -> None:
    x, labels, _ = _data()
    model = _mlp()
    initial = [p.detach().clone() for p in model.parameters()]
    _train_lars(model, model.parameters(), LARS_CONFIGS[name], x, labels, _batches(None))
    reference = [p.detach() for p in model.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(initial, reference))  # the steps moved the weights
    for res in ranks:
        _close(res[f"ddp_{name}"], reference)


def test_sharded_norm_fn_gives_the_unsharded_norms_in_one_collective(ranks: list[dict[str, Any]]) -> None:
    weights, _ = _shard_problem()
    for norm in ("l1", "l2", "linf"):
        expected = torch.stack(local_norms(weights, norm))
        for res in ranks:
            torch.testing.assert_close(res[f"norms_{norm}"], expected, rtol=1e-13, atol=0.0)
    assert [res["norm_calls_False"] for res in ranks] == [3, 3]  # one all_reduce per call, whatever the count
    assert [res["norm_calls_None"] for res in ranks] == [6, 6]  # and the count check's, by default on the CPU


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("norm", ["l2", "l1", "linf"])
def test_lars_on_shards_equals_lars_on_the_whole_tensors(ranks: list[dict[str, Any]], norm: str, foreach: bool) -> None:
    weights, targets = _shard_problem()
    params = [nn.Parameter(w.clone()) for w in weights]
    opt = LARS(params, lr=0.1, momentum=0.9, weight_decay=1e-2, norm=norm, foreach=foreach)
    for _ in range(3):
        for p, t in zip(params, targets):
            p.grad = p.detach() - t
        opt.step()
    got = [
        torch.cat([ranks[0][f"sharded_lars_{norm}_{foreach}"][i], ranks[1][f"sharded_lars_{norm}_{foreach}"][i]])
        for i in range(len(weights))
    ]
    _close(got, [p.detach().reshape(-1) for p in params])
    # Control: rank 0's shards stepped with their local norms end elsewhere (the reduction is what is tested).
    local = [nn.Parameter(_shard(w, i, 0)) for i, w in enumerate(weights)]
    local_targets = [_shard(t, i, 0) for i, t in enumerate(targets)]
    control = LARS(local, lr=0.1, momentum=0.9, weight_decay=1e-2, norm=norm, foreach=foreach)
    for _ in range(3):
        for p, t in zip(local, local_targets):
            p.grad = p.detach() - t
        control.step()
    assert not torch.allclose(local[0].detach(), ranks[0][f"sharded_lars_{norm}_{foreach}"][0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# LipschitzLR and AdaMo
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LIPSCHITZ_CASES))
def test_lipschitz_lr_under_ddp_equals_one_process_with_the_global_batch(
    ranks: list[dict[str, Any]], name: str
) -> None:
    case = LIPSCHITZ_CASES[name]
    model = _mlp(seed=3)
    kwargs = {k: v for k, v in case.items() if k != "loss"}
    history, lrs = _train_lipschitz(
        model, lambda opt: LipschitzLR(opt, model, case["loss"], **kwargs), case["loss"], _batches(None)
    )
    first, second = (ranks[r][f"lipschitz_{name}"] for r in range(WORLD))
    assert first["lrs"] == second["lrs"]  # bit-identical on every rank
    assert first["lrs"] == pytest.approx(lrs, rel=1e-12)
    assert len(history) == EPOCHS + 1 and len({tuple(h["lr"]) for h in history}) == EPOCHS + 1  # lr set each epoch
    assert [h["source"] for h in first["history"]] == [h["source"] for h in history]
    for got, want in zip(first["history"], history):
        for key in ("lipschitz", "data_lipschitz", "k_z", "max_k_z", "weight_bound"):
            assert got[key] == (None if want[key] is None else pytest.approx(want[key], rel=1e-12)), key
        assert got["batch_size"] == want["batch_size"]  # the global batch, not a rank's half
    if history[0]["source"] == "first_batch":
        assert first["history"][0]["batch_size"] == BATCHES[0]
    _close(first["params"], [p.detach() for p in model.parameters()])


def test_adamo_closed_form_under_ddp_equals_one_process(ranks: list[dict[str, Any]]) -> None:
    model = _mlp(seed=4)
    opt = AdaMo(model.parameters(), lr=0.5, model=model, loss="softmax")
    _train_adamo(model, opt, _batches(None))
    opt.close()
    reference = [p.detach() for p in model.parameters()]
    for res in ranks:
        _close(res["adamo"], reference)


@pytest.mark.parametrize("loss", ["softmax", "least_squares"])
def test_a_rank_with_an_empty_share_of_a_batch_still_gives_the_global_statistics(
    ranks: list[dict[str, Any]], loss: str
) -> None:
    """An empty local batch (a rank's share of an uneven last batch) is skipped by the hook; the distributed
    tracker records it as a zero row, so the collective pairs the ranks' batches and the epoch's values are those of
    one process on the global batches."""
    reference = _track_epoch(ActivationTracker(_mlp(seed=6), loss), _batches(None), loss)
    first, second = ranks[0][f"uneven_{loss}"], ranks[1][f"uneven_{loss}"]
    assert first == second
    assert first["batches"] == reference["batches"] == len(BATCHES)
    for key in ("lipschitz", "k_z", "max_k_z", "batch_size", "weight_bound"):
        assert first[key] == pytest.approx(reference[key], rel=1e-12), key


# ----------------------------------------------------------------------------------------------------------------
# Smoothness
# ----------------------------------------------------------------------------------------------------------------
def test_spectral_norm_with_unequal_shards_equals_the_full_data_estimate(ranks: list[dict[str, Any]]) -> None:
    full = hessian_spectral_norm(_mlp(seed=5), nn.CrossEntropyLoss(), _hessian_data(None), seed=0, tol=1e-9)
    first, second = ranks[0]["hessian"], ranks[1]["hessian"]
    assert first == second  # the iteration is identical on every rank
    assert first["value"] == pytest.approx(full.value, rel=1e-9)
    assert first["loss"] == pytest.approx(full.loss, rel=1e-12)
    assert first["calls"] == first["matvecs"] + 2  # one all_reduce per matvec, the loss's, the start vector's
    # An unweighted average of the 10- and 14-sample shards is a different operator: the weights matter.
    shards = [_hessian_data(r) for r in range(WORLD)]
    loss_fn = nn.CrossEntropyLoss()
    model = _mlp(seed=5)
    with torch.no_grad():
        plain = sum(float(loss_fn(model(xs), ys)) for xs, ys in shards) / WORLD
    assert plain != pytest.approx(full.loss, rel=1e-6)


def test_a_rank_outside_the_process_group_is_refused(ranks: list[dict[str, Any]]) -> None:
    first, second = ranks[0]["outside_the_group"], ranks[1]["outside_the_group"]
    assert not any(e.startswith("ValueError") for e in first)  # rank 0 is the group: a world of one
    assert all("global rank 1) is not a member of" in e for e in second), second
