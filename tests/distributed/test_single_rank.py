"""theorylr.distributed in one process (a world of one, gloo over an in-memory store): arguments, bookkeeping,
checkpoints, and agreement with the single-process classes it extends. Two ranks: ``test_ddp.py``."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from theorylr.distributed import DistributedActivationTracker, distributed_lipschitz_lr, mean_reduce, sharded_norm_fn
from theorylr.lipschitz.scheduler import LipschitzLR
from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim.lars import local_norms

pytestmark = pytest.mark.distributed


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_collectives_need_a_process_group() -> None:
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        sharded_norm_fn()([torch.ones(2)], "l2")
    with pytest.raises(RuntimeError, match="init_process_group"):
        mean_reduce()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"activation_norm": "spectral"}, "activation_norm"),
        ({"activation_norm": "nuc"}, "activation_norm"),
        ({"rigorous": True}, "rigorous"),
    ],
)
def test_tracker_rejects_what_does_not_decompose(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DistributedActivationTracker(_model(), "softmax", **kwargs)  # type: ignore[arg-type]


def test_argument_checks(world_of_one: None) -> None:
    with pytest.raises(ValueError, match="foreach"):
        sharded_norm_fn(foreach="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm"):
        sharded_norm_fn()([torch.ones(2)], "mean_ratio")
    with pytest.raises(ValueError, match="num_samples"):
        mean_reduce(num_samples=-1)
    with pytest.raises(ValueError, match="num_samples"):
        mean_reduce(num_samples=0)
    for bad in ("foo", 3):
        with pytest.raises(ValueError, match=r"process_group must be a torch\.distributed ProcessGroup"):
            mean_reduce(bad)
        with pytest.raises(ValueError, match="process_group"):
            sharded_norm_fn(bad)
        with pytest.raises(ValueError, match="process_group"):
            DistributedActivationTracker(_model(), "softmax", process_group=bad)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(ValueError, match="tracker"):
        LipschitzLR(opt, model, "bce", tracker=DistributedActivationTracker(model, "softmax"))
    with pytest.raises(ValueError, match="tracker"):
        LipschitzLR(opt, model, "softmax", tracker=DistributedActivationTracker(_model(), "softmax"))


def test_sharded_norm_fn_of_one_rank_is_local_norms(world_of_one: None) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 3, generator=gen), torch.zeros(0), torch.randn(7, generator=gen, dtype=torch.float64)]
    for norm in ("l1", "l2", "linf"):
        got = sharded_norm_fn()(tensors, norm)
        want = local_norms(tensors, norm)
        assert all(g.dtype == torch.float64 and g.dim() == 0 for g in got)  # reduced in float64
        torch.testing.assert_close(torch.stack(got), torch.stack([w.double() for w in want]), rtol=1e-6, atol=0.0)
    assert sharded_norm_fn()([], "l2") == []


def test_mean_reduce_does_not_modify_its_input(world_of_one: None) -> None:
    t = torch.tensor([1.0, 2.0])
    out = mean_reduce(num_samples=5)(t)
    assert torch.equal(t, torch.tensor([1.0, 2.0])) and torch.equal(out, t) and out is not t


@pytest.mark.parametrize(
    ("loss", "norm"), [("softmax", "fro"), ("bce", "max_row"), ("least_squares", "fro"), ("least_squares", "max_row")]
)
def test_world_of_one_equals_the_plain_tracker_over_many_batches(world_of_one: None, loss: str, norm: str) -> None:
    """One rank's global batch is its own: every statistic equals ActivationTracker's, across the packing of rows
    (every 256 batches) and a state_dict round trip in the middle of the epoch."""
    out = 1 if loss == "bce" else 3
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, out)).double()
    plain = ActivationTracker(model, loss, activation_norm=norm)
    ours = DistributedActivationTracker(model, loss, activation_norm=norm)
    gen = torch.Generator().manual_seed(1)
    sizes = [8] * 150 + [5] + [8] * 149  # 300 batches, one small one in the middle
    for i, m in enumerate(sizes):
        if i == 200:  # checkpoint mid-epoch: a fresh tracker restored from it continues identically
            state = ours.state_dict()
            ours.close()
            ours = DistributedActivationTracker(model, loss, activation_norm=norm)
            ours.load_state_dict(state)
        x = torch.randn(m, 4, generator=gen, dtype=torch.float64)
        model(x)
        if loss == "least_squares":
            y = 0.01 * torch.randn(m, out, generator=gen, dtype=torch.float64)
            plain.observe_targets(y)
            ours.observe_targets(y)
    a, b = plain.epoch_stats(weight_decay=1e-2), ours.epoch_stats(weight_decay=1e-2)
    assert a is not None and b is not None
    for field in ("lipschitz", "data_lipschitz", "k_z", "batch_size", "max_k_z", "weight_bound"):
        torch.testing.assert_close(getattr(b, field), getattr(a, field), rtol=1e-12, atol=0.0, msg=field)
    assert b.batches == a.batches == len(sizes) and b.examples == a.examples == sum(sizes)
    torch.testing.assert_close(ours.batch_lipschitz(weight_decay=0.1), plain.batch_lipschitz(weight_decay=0.1))
    torch.testing.assert_close(ours.batch_k_z(), plain.batch_k_z())
    assert ours.batch_size == plain.batch_size == 8
    ours.reset_epoch()
    assert ours.epoch_stats() is None and ours.batch_size == 8  # the latest batch stays readable
    plain.close()
    ours.close()


def test_least_squares_needs_targets(world_of_one: None) -> None:
    model = _model()
    tracker = DistributedActivationTracker(model, "least_squares")
    model(torch.randn(4, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="observe_targets"):
        tracker.batch_lipschitz()
    tracker.observe_targets(torch.zeros(4, 3, dtype=torch.float64))
    tracker.batch_lipschitz()
    with pytest.raises(RuntimeError, match="already used"):
        tracker.observe_targets(torch.zeros(4, 3, dtype=torch.float64))
    tracker.close()


def test_distributed_lipschitz_lr_of_one_rank_equals_lipschitz_lr(world_of_one: None) -> None:
    histories = []
    for make in (
        lambda o, m: LipschitzLR(o, m, "softmax", weight_decay=1e-3),
        lambda o, m: distributed_lipschitz_lr(o, m, "softmax", weight_decay=1e-3),
    ):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = make(opt, model)
        gen = torch.Generator().manual_seed(2)
        for _ in range(2):
            for _ in range(3):
                opt.zero_grad()
                x, y = torch.randn(10, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (10,), generator=gen)
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            sched.step()
        sched.close()
        assert sched.tracker.closed
        histories.append(sched.history)
    plain, ours = histories
    assert [h["source"] for h in ours] == ["first_batch", "epoch", "epoch"]
    for a, b in zip(plain, ours):
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        assert b["lipschitz"] == pytest.approx(a["lipschitz"], rel=1e-12)


@pytest.mark.parametrize("loss", ["softmax", "least_squares"])
def test_a_batch_empty_on_every_rank_is_no_batch(world_of_one: None, loss: str) -> None:
    """A global batch with no rows (empty on every rank) is skipped, as the single-process tracker skips an empty
    batch: its 0/0 constant made the whole epoch's L nan."""
    x, y = torch.randn(16, 4, dtype=torch.float64), 0.01 * torch.randn(16, 3, dtype=torch.float64)
    values = []
    for tracker in (DistributedActivationTracker(_model(), loss), ActivationTracker(_model(), loss)):
        for rows in (slice(0, 16), slice(0, 0)):
            tracker.model(x[rows])
            if loss == "least_squares":
                tracker.observe_targets(y[rows])
        values.append(tracker.epoch_values())
        tracker.close()
    distributed, single = values
    assert distributed is not None and single is not None
    assert distributed["batches"] == single["batches"] == 1
    for key in ("lipschitz", "k_z", "batch_size", "max_k_z"):
        assert distributed[key] == pytest.approx(single[key], rel=1e-12), key
    tracker = DistributedActivationTracker(_model(), loss)
    tracker.model(x[:0])
    assert tracker.epoch_values() is None  # only empty batches: no epoch
    tracker.close()


def test_a_lars_holding_a_sharded_norm_fn_refuses_pickle_with_advice_and_deep_copies() -> None:
    """The hook holds a process group: pickling a LARS that holds it says to save ``state_dict()`` (it said
    "Can't pickle local object"); ``copy.deepcopy`` keeps the same hook, which still reduces."""
    import copy
    import pickle

    from theorylr.optim.lars import LARS

    norm_fn = sharded_norm_fn()
    opt = LARS([nn.Parameter(torch.ones(3))], lr=0.1, norm_fn=norm_fn)
    with pytest.raises(TypeError, match=r"cannot be pickled.*state_dict\(\)"):
        pickle.dumps(opt)
    twin = copy.deepcopy(opt)
    assert twin.norm_fn is norm_fn
    assert copy.copy(norm_fn) is norm_fn  # as copying a function gives the function
    assert getattr(twin.norm_fn, "sharded", False)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert [float(n) for n in norm_fn([torch.tensor([3.0, 4.0])], "l2")] == [5.0]
    finally:
        dist.destroy_process_group()
