"""theorylr.distributed at the edges: a nan in one shard under linf, a rank without samples, mean_ratio with a
sharded norm_fn, batch counts past float32's integers.

Two gloo CPU ranks with a file rendezvous (one spawn for the module), plus world-of-one checks.
"""

from __future__ import annotations

import copy
import math
import traceback
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tests.distributed._ranks import checked, join_world, save_and_exit, spawn_ranks
from theorylr.distributed import DistributedActivationTracker, mean_reduce, sharded_norm_fn
from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim.lars import LARS, local_norms

pytestmark = pytest.mark.distributed

WORLD = 2
W = torch.tensor([1.0, -2.0, 3.0, 0.5])
G_NAN = torch.tensor([0.1, 0.2, float("nan"), 0.3])  # the NaN lies in rank 1's half
MR_W = torch.linspace(-1.0, 2.0, 20, dtype=torch.float64).reshape(5, 4)
MR_G = torch.linspace(0.5, -0.7, 20, dtype=torch.float64).reshape(5, 4)
MR_SPLIT = 9  # elements of the flat tensor on rank 0 (uneven shards)


def _half(t: Tensor, rank: int, split: int) -> Tensor:
    flat = t.reshape(-1)
    return flat[:split].clone() if rank == 0 else flat[split:].clone()


def _mean_ratio_step(w: Tensor, g: Tensor, norm_fn: Any) -> Tensor:
    p = nn.Parameter(w.clone())
    p.grad = g.clone()
    LARS([p], lr=0.1, norm="mean_ratio", norm_fn=norm_fn).step()
    return p.detach().clone()


def _scenarios(rank: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # linf of sharded tensors when one shard holds a NaN (rank 1's: gloo's MAX keeps the first operand)
    out["linf_nan"] = torch.stack(sharded_norm_fn()([_half(G_NAN, rank, 2)], "linf"))
    p = nn.Parameter(_half(W, rank, 2))
    p.grad = _half(G_NAN, rank, 2)
    opt = LARS([p], lr=0.1, norm="linf", norm_fn=sharded_norm_fn())
    opt.step()
    out["linf_nan_ratio"] = opt.state[p]["trust_ratio"].clone()

    # unequal shares: the caller's tensor is left as it was (weights 5/8 and 3/8, not 1 as on one rank)
    weighted = torch.tensor([2.0, 4.0]) * (rank + 1)
    kept = weighted.clone()
    out["weighted"] = mean_reduce(num_samples=5 if rank == 0 else 3)(weighted)
    out["weighted_input_unchanged"] = torch.equal(weighted, kept)

    # a rank with no samples: its (mean over nothing = NaN) value must contribute nothing
    reduce = mean_reduce(num_samples=5 if rank == 0 else 0)
    out["zero_samples"] = reduce(torch.tensor([2.0]) if rank == 0 else torch.tensor([float("nan")]))

    # LARS(norm="mean_ratio") with sharded parameters: refused, or the unsharded result
    try:
        w, g = _half(MR_W, rank, MR_SPLIT), _half(MR_G, rank, MR_SPLIT)
        out["mean_ratio"] = _mean_ratio_step(w, g, sharded_norm_fn())
    except ValueError as exc:
        out["mean_ratio"] = f"ValueError: {exc}"

    # A parameter with no gradient on rank 1 (FSDP's use_orig_params leaves out-of-shard ones at None): LARS passes
    # 4 tensors on rank 0 and 2 on rank 1. A clear error on both ranks, not a hang or garbage norms on one.
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    a.grad = torch.ones(3)
    b.grad = torch.ones(2) if rank == 0 else None
    try:
        LARS([a, b], lr=0.1, norm_fn=sharded_norm_fn()).step()
        out["grad_none"] = "stepped"
    except RuntimeError as exc:
        out["grad_none"] = str(exc)
    # A group with no gradient at all on rank 1: the hook is still called there (with no tensors), so the check's
    # collective is paired and both ranks get the error.
    c = nn.Parameter(torch.ones(2))
    c.grad = torch.ones(2) if rank == 0 else None
    try:
        LARS([c], lr=0.1, norm_fn=sharded_norm_fn()).step()
        out["group_empty"] = "stepped"
    except RuntimeError as exc:
        out["group_empty"] = str(exc)
    out.update(_ddp_scenarios(rank))
    return out


HVP_SPLIT = {0: (6, 4), 1: (7,)}  # rank 0 holds two local batches, rank 1 one
EMPTY_SHARES = ((4, 4), (0, 4), (4, 4))  # the global batches' rows per rank: rank 0's share of batch 1 is empty


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()


def _hvp_batches(rank: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(17, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (17,), generator=g)
    start = sum(sum(HVP_SPLIT[r]) for r in range(rank))
    batches = []
    for m in HVP_SPLIT[rank]:
        batches.append((x[start : start + m], y[start : start + m]))
        start += m
    return batches


def _ddp_scenarios(rank: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel

    from theorylr.estimate import hessian_spectral_norm
    from theorylr.lipschitz.scheduler import LipschitzLR
    from theorylr.optim.adaptive import AdaMo

    out: dict[str, Any] = {}
    # The DDP wrapper given to an estimator, with BatchNorm and unequal batch counts: DDP's forward broadcasts the
    # buffers at every pass, so the ranks' collectives did not pair (a deadlock until the group's timeout).
    ddp = DistributedDataParallel(_bn_net())
    reduce = mean_reduce(num_samples=sum(HVP_SPLIT[rank]))
    kwargs: dict[str, Any] = {"seed": 0, "tol": 1e-8, "reduce": reduce}
    out["hvp_ddp"] = hessian_spectral_norm(ddp, nn.CrossEntropyLoss(), _hvp_batches(rank), **kwargs).value
    out["hvp_module"] = hessian_spectral_norm(ddp.module, nn.CrossEntropyLoss(), _hvp_batches(rank), **kwargs).value

    # A single-process tracker on a replicated model: every rank would get its own lr (the replicas drift apart).
    net = DistributedDataParallel(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double())
    try:
        LipschitzLR(torch.optim.SGD(net.parameters(), lr=1.0), net, "softmax", rigorous=True)
        out["local_tracker"] = "built"
    except ValueError as exc:
        out["local_tracker"] = str(exc)

    # AdaMo reading the global batch when this rank's share is empty: it warned of a stale L, yet used a fresh one.
    tracker = DistributedActivationTracker(net, "softmax")
    opt = AdaMo(net.parameters(), lr=0.5, tracker=tracker)
    messages = []
    for b, shares in enumerate(EMPTY_SHARES):
        n = shares[rank]
        x = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(10 * b + rank))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), torch.zeros(n, dtype=torch.long), reduction="sum")
        (loss * WORLD / sum(shares)).backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.step()
        messages += [str(w.message) for w in caught]
    out["adamo_warnings"] = messages
    opt.close()

    # The adaptive optimizers under ZeroRedundancyOptimizer: each rank holds a shard of the tensors, so its
    # "observed" L_t was the shard's largest gradient norm (AdaptiveRMSprop ended 47 away from one process).
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from theorylr.distributed import max_reduce

    for name, cls in ZERO_RULES.items():
        zero_net = DistributedDataParallel(_zero_net())
        zero = ZeroRedundancyOptimizer(zero_net.parameters(), optimizer_class=cls, max_fn=max_reduce(), **ZERO_KWARGS)
        for x, y in _zero_batches():
            half = slice(rank * len(y) // WORLD, (rank + 1) * len(y) // WORLD)
            zero.zero_grad()
            nn.functional.cross_entropy(zero_net(x[half]), y[half]).backward()
            zero.step()
        out[f"zero_{name}"] = [p.detach().clone() for p in zero_net.parameters()]
    return out


ZERO_KWARGS: dict[str, Any] = {"lr": 0.3, "weight_decay": 1e-2}


def _zero_rules() -> dict[str, type]:
    from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam

    return {"AdaMo": AdaMo, "AutoAdam": AutoAdam, "AdaptiveRMSprop": AdaptiveRMSprop}


ZERO_RULES = _zero_rules()


def _zero_net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(5, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _zero_batches() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [
        (torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)
    ]


def _worker(rank: int, out_dir: str) -> None:
    join_world(rank, out_dir, WORLD)
    try:
        result: dict[str, Any] = _scenarios(rank)
    except Exception:
        result = {"error": traceback.format_exc()}
    save_and_exit(result, out_dir, rank)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return checked(spawn_ranks(_worker, tmp_path_factory.mktemp("ddp_edges"), WORLD))


def test_sharded_linf_keeps_a_nan_of_any_shard(ranks: list[dict[str, Any]]) -> None:
    assert torch.isnan(local_norms([G_NAN], "linf")[0])  # the unsharded norm
    for res in ranks:
        assert torch.isnan(res["linf_nan"]).all(), res["linf_nan"]
        assert torch.isnan(res["linf_nan_ratio"]), res["linf_nan_ratio"]  # as LARS on the whole tensor


def test_mean_reduce_ignores_the_values_of_a_rank_with_no_samples(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        torch.testing.assert_close(res["zero_samples"], torch.tensor([2.0]))


def test_lars_mean_ratio_with_sharded_norm_fn_is_refused_or_exact(ranks: list[dict[str, Any]]) -> None:
    first, second = ranks[0]["mean_ratio"], ranks[1]["mean_ratio"]
    if isinstance(first, str) or isinstance(second, str):
        assert isinstance(first, str) and isinstance(second, str), (first, second)  # refused on every rank
        assert "mean_ratio" in first and "mean_ratio" in second
        return
    expected = _mean_ratio_step(MR_W, MR_G, None).reshape(-1)
    torch.testing.assert_close(torch.cat([first, second]), expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# World of one
# ----------------------------------------------------------------------------------------------------------------
def test_batch_and_example_counts_past_float32_integers(world_of_one: None) -> None:
    """m and the epoch's example count are integers: a float32 row table rounds them above 2**24."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 2))  # float32, the default
    tracker = DistributedActivationTracker(model, "softmax", num_classes=2)
    single = ActivationTracker(model, "softmax", num_classes=2)
    rows = 2**20 + 1
    x = torch.ones(rows, 1)
    for _ in range(17):
        model(x)
    stats, reference = tracker.epoch_stats(), single.epoch_stats()
    assert stats is not None and reference is not None
    assert reference.examples == 17 * rows
    assert stats.examples == 17 * rows
    tracker.reset_epoch()
    model(torch.ones(2**24 + 1, 1))
    assert tracker.batch_size == 2**24 + 1
    values = tracker.epoch_values()
    assert values is not None and values["batch_size"] == 2**24 + 1
    assert math.isfinite(values["lipschitz"])
    tracker.close()
    single.close()


def test_ranks_passing_different_tensor_counts_get_a_clear_error_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for key, (fewest, most) in (("grad_none", (2, 4)), ("group_empty", (0, 2))):
        for r, result in enumerate(ranks):
            assert result[key].startswith(
                f"sharded_norm_fn: the ranks passed different numbers of tensors ({fewest} to {most}; this rank "
            ), (key, r, result[key])
            assert "give it a zero gradient" in result[key]


def test_a_mid_epoch_tracker_state_loads_only_on_the_rank_that_saved_it(world_of_one: None) -> None:
    """Saving on rank 0 and loading everywhere (the DDP habit) counted rank 0's batches twice in each global K_z."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    tracker = DistributedActivationTracker(model, "softmax")
    model(torch.randn(5, 3))
    state = tracker.state_dict()
    assert (state["rank"], state["world_size"]) == (0, 1) and state["local_rows"] is not None
    DistributedActivationTracker(model, "softmax").load_state_dict(state)  # its own rank: fine
    other = dict(state, rank=1, world_size=2)
    with pytest.raises(ValueError, match="saved by rank 1 of 2, and is loaded on rank 0 of 1"):
        DistributedActivationTracker(model, "softmax").load_state_dict(other)
    boundary = dict(other, local_rows=None)  # at an epoch's end there are no rows: any rank may load it
    DistributedActivationTracker(model, "softmax").load_state_dict(boundary)


def test_mean_reduce_weights_unequal_shares_and_leaves_its_input_alone(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        torch.testing.assert_close(res["weighted"], (5 * torch.tensor([2.0, 4.0]) + 3 * torch.tensor([4.0, 8.0])) / 8)
        assert res["weighted_input_unchanged"]


def test_an_estimator_given_the_ddp_wrapper_runs_on_its_module(ranks: list[dict[str, Any]]) -> None:
    """With BatchNorm and unequal batch counts, DDP's per-forward buffer broadcast deadlocked the ranks."""
    values = [(res["hvp_ddp"], res["hvp_module"]) for res in ranks]
    assert values[0] == values[1] and values[0][0] == pytest.approx(values[0][1], rel=1e-12)


def test_a_single_process_tracker_refuses_a_model_replicated_on_several_ranks(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        assert res["local_tracker"].startswith("model is a DistributedDataParallel replicated on 2 ranks")
        assert "distributed_lipschitz_lr" in res["local_tracker"]


def test_adamo_does_not_warn_of_a_stale_l_when_this_ranks_share_is_empty(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        assert res["adamo_warnings"] == []


@pytest.mark.parametrize("name", sorted(ZERO_RULES))
def test_adaptive_optimizers_under_zero_with_max_reduce_equal_one_process(
    ranks: list[dict[str, Any]], name: str
) -> None:
    net = _zero_net()
    opt = ZERO_RULES[name](net.parameters(), **ZERO_KWARGS)
    for x, y in _zero_batches():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for res in ranks:
        for got, want in zip(res[f"zero_{name}"], net.parameters()):
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)


def test_max_fn_is_called_once_per_step_even_without_gradients() -> None:
    """A rank whose shard holds no gradient must still take part in the collective, or the others wait forever."""
    from theorylr.optim.adaptive import AdaMo

    calls: list[Tensor] = []

    def record(t: Tensor) -> Tensor:
        calls.append(t.clone())
        return t * 2  # what the other ranks held: the step must use what the hook returns

    w = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    opt = AdaMo([w], max_fn=record, weight_decay=0.5)
    opt.step()  # no gradient at all
    assert len(calls) == 1 and calls[0].tolist() == [0.0, 0.0]
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    opt.step()
    assert len(calls) == 2 and calls[1].tolist() == pytest.approx([1.0, 5.0])
    reference = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    reference.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    AdaMo([reference], weight_decay=0.5).step()
    assert not torch.equal(w.detach(), reference.detach())  # the doubled maxima were used
    assert copy.deepcopy(opt).max_fn is record  # kept on the optimizer, as LARS keeps its norm_fn
    with pytest.raises(ValueError, match="max_fn must be a callable"):
        AdaMo([w], max_fn=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(ZERO_RULES))
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_an_identity_max_fn_changes_nothing_with_observed_and_closed_form_groups(
    name: str, weight_decay: float
) -> None:
    """With the hook, L_t came from the observed groups' gradients only, where the step without it takes every
    group's: one rank, an identity hook, and the steps differed by up to 0.6."""
    results = []
    for hook in (None, lambda t: t.clone()):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
        groups = [
            {"params": net[0].parameters(), "lipschitz": "observed", "weight_decay": weight_decay},
            {"params": net[2].parameters(), "lipschitz": "closed_form"},
        ]
        opt = ZERO_RULES[name](groups, lr=0.2, model=net, max_fn=hook)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            x, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        opt.close()
        results.append([p.detach().clone() for p in net.parameters()])
    for with_hook, without in zip(results[1], results[0]):
        assert torch.equal(with_hook, without)


def test_max_fn_sends_no_weight_norm_that_no_group_needs() -> None:
    from theorylr.optim.adaptive import AdaMo

    sent: list[list[float]] = []
    w = nn.Parameter(torch.tensor([3.0, -4.0]))
    opt = AdaMo([w], max_fn=lambda t: sent.append(t.tolist()) or t)  # type: ignore[func-returns-value]
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    assert sent == [[pytest.approx(1.0), 0.0]]  # no weight decay: ||w|| is not computed
