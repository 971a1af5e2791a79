"""Gaps a mutation review of LipschitzLR and the closed forms found: each test kills a mutant that survived the
rest of the suite, plus a resume bug it found (a float32 tensor lr holding an initial_lr that float32 rounds)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor
from torch.optim.lr_scheduler import ChainedScheduler, ExponentialLR

from tests.estimate._reference import F64
from tests.lipschitz.test_scheduler import _batches, _data, _mlp, _train_epoch
from theorylr.lipschitz.scheduler import DegenerateLipschitzError, LipschitzLR


def test_paper_forms_small_positive_and_zero_values() -> None:
    """A positive paper-form value below 1 is returned (not refused); an exactly-zero tensor value is nan, as the
    module docstring promises for every value that is not positive."""
    from theorylr.lipschitz import least_squares_nn

    assert least_squares_nn(1.5, 1.0, 2.0, 4) == pytest.approx(0.25)  # (1.5 - 1) * 2 / 4
    zero = least_squares_nn(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0))
    assert isinstance(zero, Tensor) and bool(torch.isnan(zero))
    with pytest.raises(ValueError, match="<= 0"):
        least_squares_nn(1.0, 1.0, 2.0, 4)


def test_spectral_norm_bound_worst_case_is_exact() -> None:
    """All singular values equal (the worst case of the trace bound): the result is exactly
    ``n ** (1 / 2 ** (q + 1)) ||A||_2``, with the default ``q = 10``; ``q = 0`` is the Frobenius norm."""
    from theorylr.lipschitz import spectral_norm_bound

    a = 3.0 * torch.eye(1024, dtype=F64)
    assert float(spectral_norm_bound(a)) == pytest.approx(3.0 * 1024 ** (1 / 2**11), rel=1e-12)
    assert float(spectral_norm_bound(a, squarings=0)) == pytest.approx(3.0 * 32.0, rel=1e-12)


def test_least_squares_exactly_zero_raises() -> None:
    """``L = (K ||X^T X||_F - ||X^T y||) / m = 0`` is no Lipschitz constant: refused like a negative one."""
    from theorylr.lipschitz import least_squares

    x = torch.eye(2, dtype=F64)
    y = torch.ones(2, dtype=F64)  # ||X^T X||_F = ||X^T y|| = sqrt(2)
    with pytest.raises(ValueError, match="<= 0"):
        least_squares(x, y, weight_bound=1.0)
    assert bool(torch.isnan(least_squares(x, y, weight_bound=1.0, check=False)))


def test_chained_decay_survives_an_initial_lr_of_one() -> None:
    """The relative update divides by the previous Lipschitz lr; an ``initial_lr`` of exactly 1.0 is a value like
    any other (only 0 is special), so a decay applied before LipschitzLR in the chain is kept."""
    model = _mlp()
    batches = _batches(*_data())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    lipschitz = LipschitzLR(opt, model, initial_lr=1.0)
    sched = ChainedScheduler([ExponentialLR(opt, gamma=0.5), lipschitz])
    assert opt.param_groups[0]["lr"] == 1.0
    for epoch in range(1, 3):
        values = _train_epoch(model, opt, batches)
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5**epoch * 0.5 / max(values), rel=1e-12)
    lipschitz.close()


def test_first_batch_history_entry() -> None:
    """The lazy first lr is recorded for epoch 0, from one batch."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with LipschitzLR(opt, model) as sched:
        values = _train_epoch(model, opt, _batches(*_data()))
        first = sched.history[0]
        assert (first["source"], first["epoch"], first["batches"]) == ("first_batch", 0, 1)
        assert first["lipschitz"] == pytest.approx(values[0], rel=1e-12)
        assert first["batch_size"] == 12


def test_degenerate_error_names_the_epoch_counted_from_zero() -> None:
    """All-zero penultimate activations give L = 0 at the end of the first epoch: the error names epoch 0."""
    model = _mlp()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()  # tanh(0) = 0: K_z = 0
    model[0].requires_grad_(False)  # and it stays 0
    opt = torch.optim.SGD(model[2].parameters(), lr=1.0)
    with LipschitzLR(opt, model, initial_lr=0.1) as sched:
        _train_epoch(model, opt, _batches(*_data()))
        with pytest.raises(DegenerateLipschitzError, match=r"epoch 0 \(counted from 0: training epoch 1\)"):
            sched.step()


def test_state_dict_is_a_snapshot() -> None:
    """A state_dict taken now does not change when training goes on (the history is copied, not shared)."""
    model = _mlp()
    batches = _batches(*_data())
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with LipschitzLR(opt, model) as sched:
        _train_epoch(model, opt, batches)
        sched.step()
        saved = sched.state_dict()
        before = [dict(h) for h in saved["history"]]
        _train_epoch(model, opt, batches)
        sched.step()
        assert saved["history"] == before and len(sched.history) == len(before) + 1


def _resume_with_tensor_lr(initial_lr: float) -> tuple[float, Tensor, float]:
    model = _mlp()
    batches = _batches(*_data())
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(1.0))
    sched = LipschitzLR(opt, model, initial_lr=initial_lr)
    for _ in range(2):
        _train_epoch(model, opt, batches)
        sched.step()
    lr = float(opt.param_groups[0]["lr"])
    saved_opt, saved_sched = copy.deepcopy(opt.state_dict()), sched.state_dict()
    sched.close()
    opt2 = torch.optim.SGD(model.parameters(), lr=torch.tensor(1.0))
    opt2.load_state_dict(saved_opt)
    sched2 = LipschitzLR(opt2, model, initial_lr=initial_lr)
    tensor = opt2.param_groups[0]["lr"]
    assert isinstance(tensor, Tensor) and float(tensor) == pytest.approx(initial_lr)  # the construction wrote it
    sched2.load_state_dict(saved_sched)
    assert opt2.param_groups[0]["lr"] is tensor
    sched2.close()
    return lr, tensor, initial_lr


def test_resuming_a_tensor_lr_puts_back_the_checkpoints_lr() -> None:
    """As test_resuming_with_the_optimizer_loaded_before_the_scheduler_is_built, with a 0-dim tensor lr (a compiled
    step's): the checkpoint's lr is written into the same tensor."""
    lr, tensor, _ = _resume_with_tensor_lr(0.5)  # exact in float32
    assert float(tensor) == pytest.approx(lr, rel=1e-6)


def test_resuming_a_float32_tensor_lr_with_an_inexact_initial_lr() -> None:
    """0.05 is not exact in float32: the tensor read back 0.05000000075, the scheduler took that for an lr changed
    since its construction and kept initial_lr, and every later epoch's lr was 56 times too small."""
    lr, tensor, _ = _resume_with_tensor_lr(0.05)  # the paper's kind of value, not exact in float32
    assert float(tensor) == pytest.approx(lr, rel=1e-6)
