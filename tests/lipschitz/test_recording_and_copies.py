"""ActivationTracker and LipschitzLR in less common situations.

Evaluation passes under ``torch.no_grad()`` in training mode, empty batches, ``torch.save(model)`` with the hooks
attached, copies of a tracker or scheduler, a tensor ``lr``, and sequence targets for the rigorous bound.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ChainedScheduler, ExponentialLR, LinearLR, SequentialLR

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.scheduler import LipschitzLR
from theorylr.lipschitz.tracker import ActivationTracker

F64 = torch.float64


def _mlp(out: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, out)).to(F64)


def _data(n: int = 24, out: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=F64), torch.randint(0, out, (n,), generator=gen)


# ----------------------------------------------------------------------------------------------------------------
# What counts as a training batch
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("penultimate", [None, "1"])
def test_no_grad_and_inference_mode_passes_in_training_mode_are_not_recorded(
    context: str, penultimate: str | None
) -> None:
    """An evaluation under no_grad without model.eval() (common for models without dropout/BN) is no training batch."""
    model = _mlp()
    x, _ = _data()
    with ActivationTracker(model, "softmax", penultimate=penultimate) as tracker:
        model(x[:8])
        before = tracker.epoch_values()
        with torch.no_grad() if context == "no_grad" else torch.inference_mode():
            model(100 * x)  # would dominate the epoch's K_z if recorded
        assert tracker.epoch_values() == before
        assert tracker.batch_size == 8


def test_no_grad_evaluation_does_not_change_the_lipschitz_schedule() -> None:
    lrs = []
    for evaluate in (False, True):
        model = _mlp()
        x, y = _data()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        with LipschitzLR(opt, model, "softmax") as sched:
            for _ in range(2):
                for xb, yb in zip(x.split(8), y.split(8)):
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(xb), yb).backward()
                    opt.step()
                if evaluate:
                    with torch.no_grad():  # still in training mode
                        model(10 * x)
                sched.step()
            lrs.append([h["lr"] for h in sched.history])
    assert lrs[0] == lrs[1]


@pytest.mark.parametrize("rigorous", [False, True])
@pytest.mark.parametrize("penultimate", [None, "1"])
def test_an_empty_batch_is_skipped_not_an_error(rigorous: bool, penultimate: str | None) -> None:
    model = _mlp()
    x, y = _data()
    with ActivationTracker(model, "softmax", rigorous=rigorous, penultimate=penultimate) as tracker:
        model(x[:0])  # used to raise ValueError from inside the forward pass
        tracker.observe_targets(y[:0])
        assert tracker.batch_size is None
        model(x[:5])
        tracker.observe_targets(y[:5])
        model(x[:0])
        tracker.observe_targets(y[:0])  # ignored: does not replace the latest batch's targets
        values = tracker.epoch_values()
    assert values is not None and values["batches"] == 1 and values["batch_size"] == 5


def test_an_empty_least_squares_batch_keeps_the_previous_targets() -> None:
    model = _mlp(out=1)
    x = torch.randn(6, 4, dtype=F64)
    y = torch.randn(6, 1, dtype=F64)
    with ActivationTracker(model, "least_squares", rigorous=True) as tracker:
        model(x)
        tracker.observe_targets(y)
        model(x[:0])
        tracker.observe_targets(y[:0])
        a = torch.tanh(model[0](x)).detach()
        expected = gradient_norm_bound(a, "least_squares", targets=y, weight_bound=tracker.weight_bound(), bias=True)
        torch.testing.assert_close(tracker.batch_lipschitz(), expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Pickling and copying
# ----------------------------------------------------------------------------------------------------------------
def test_torch_save_of_a_tracked_model_works_and_the_loaded_copy_is_not_tracked() -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with LipschitzLR(opt, model, "softmax") as sched:
        buf = io.BytesIO()
        torch.save(model, buf)  # used to fail: "Can't pickle local object ... pre_hook"
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        loaded(x)  # the copy's inert hook records nothing, and does not fail
        assert sched.tracker.batch_size is None
        torch.testing.assert_close(loaded(x), model(x))
        assert sched.tracker.batch_size == len(x)  # the original is still tracked
        clone = pickle.loads(pickle.dumps(model))
        clone(x)
        assert sched.tracker.epoch_values()["batches"] == 1  # type: ignore[index]
        nn.functional.cross_entropy(model(x), y).backward()


def test_a_deep_copied_model_is_not_tracked_and_does_not_fail() -> None:
    model = _mlp()
    x, _ = _data()
    with ActivationTracker(model, "softmax") as tracker:
        twin = copy.deepcopy(model)
        twin(x)
        assert tracker.batch_size is None
        model(x[:3])
        assert tracker.batch_size == 3


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle"])
def test_copying_a_tracker_or_scheduler_is_a_clear_error(how: str) -> None:
    """A copy would hold a hook-less tracker that never records: refused with a pointer to state_dict()."""
    copier = {"deepcopy": copy.deepcopy, "copy": copy.copy, "pickle": pickle.dumps}[how]
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with ActivationTracker(model, "softmax") as tracker, pytest.raises(TypeError, match=r"state_dict\(\)"):
        copier(tracker)
    with LipschitzLR(opt, model, "softmax") as sched, pytest.raises(TypeError, match=r"state_dict\(\)"):
        copier(sched)


def test_scheduler_state_dict_survives_torch_save_with_weights_only() -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.5, dtype=F64))
    with LipschitzLR(opt, model, "softmax", rigorous=True) as sched:
        for xb, yb in zip(x.split(8), y.split(8)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()
        model(x[:5])  # a partial epoch
        buf = io.BytesIO()
        torch.save(sched.state_dict(), buf)
        state = sched.state_dict()
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["history"] == state["history"]
    assert loaded["tracker"]["batches"] == 1


# ----------------------------------------------------------------------------------------------------------------
# A tensor learning rate
# ----------------------------------------------------------------------------------------------------------------
def _epochs(opt: torch.optim.Optimizer, model: nn.Module, sched: object, epochs: int = 3) -> list[float]:
    x, y = _data()
    lrs = []
    for _ in range(epochs):
        for xb, yb in zip(x.split(8), y.split(8)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()  # type: ignore[attr-defined]
        lrs.append(float(opt.param_groups[0]["lr"]))
    return lrs


@pytest.mark.parametrize("compose", ["alone", "chained", "sequential"])
@pytest.mark.parametrize("initial_lr", [None, 0.1])
def test_a_tensor_lr_is_updated_in_place_exactly_as_a_float_lr(compose: str, initial_lr: float | None) -> None:
    """torch's schedulers take a 0-dim tensor lr (a compiled step's input); LipschitzLR used to refuse it."""
    runs = []
    for tensor in (False, True):
        model = _mlp()
        lr: float | Tensor = torch.tensor(0.5, dtype=F64) if tensor else 0.5
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        lr_tensor = opt.param_groups[0]["lr"]
        lipschitz = LipschitzLR(opt, model, "softmax", initial_lr=initial_lr)
        sched: object = lipschitz
        if compose == "chained":
            sched = ChainedScheduler([lipschitz, ExponentialLR(opt, 0.5)])
        elif compose == "sequential":
            sched = SequentialLR(opt, [LinearLR(opt, 0.5, total_iters=1), lipschitz], milestones=[1])
        lrs = _epochs(opt, model, sched)
        if tensor:
            assert opt.param_groups[0]["lr"] is lr_tensor  # the same tensor, changed in place
            last = sched.get_last_lr()  # type: ignore[attr-defined]
            assert float(last[0]) == lrs[-1]
        runs.append(lrs)
        lipschitz.close()
    assert runs[0] == pytest.approx(runs[1], rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Sequence targets
# ----------------------------------------------------------------------------------------------------------------
def test_rigorous_bound_takes_sequence_targets_shaped_like_the_activations() -> None:
    """Activations (B, T, D) give B*T rows; class targets (B, T) or regression targets (B, T, P) follow them."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6, dtype=F64)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(F64)
    a = torch.tanh(model[0](x)).detach().reshape(20, 8)
    y = torch.randint(0, 3, (4, 5))
    with ActivationTracker(model, "softmax", rigorous=True) as tracker:
        model(x)
        tracker.observe_targets(y)  # used to fail: "targets must be class indices (m,) ... with m = 20"
        expected = gradient_norm_bound(a, "softmax", num_classes=3, targets=y.reshape(-1), bias=True)
        torch.testing.assert_close(tracker.batch_lipschitz(), expected, rtol=1e-12, atol=0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    yr = torch.randn(4, 5, 2, dtype=F64)
    with ActivationTracker(model, "least_squares", rigorous=True) as tracker:
        model(x)
        tracker.observe_targets(yr)
        a = torch.tanh(model[0](x)).detach().reshape(20, 8)
        expected = gradient_norm_bound(
            a, "least_squares", targets=yr.reshape(20, 2), weight_bound=tracker.weight_bound(), bias=True
        )
        torch.testing.assert_close(tracker.batch_lipschitz(), expected, rtol=1e-12, atol=0)


def test_targets_with_the_wrong_number_of_rows_are_refused_at_once() -> None:
    model = _mlp()
    x, y = _data()
    with ActivationTracker(model, "softmax", rigorous=True) as tracker:
        model(x[:6])
        with pytest.raises(ValueError, match=r"targets must have one row per example .* m = 6 rows"):
            tracker.observe_targets(y[:7])
