"""Gaps a mutation review of theorylr.lipschitz (bounds, tracker) found: each test kills a mutant that survived
the rest of the suite (the docstrings name the mutation)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.tracker import ActivationTracker

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# lipschitz/bounds.py
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["bce", "softmax", "least_squares"])
def test_all_zero_activations_give_a_zero_bound_not_nan(loss: str) -> None:
    """B17 (bounds.py:169, ``scale > 0`` -> ``scale >= 0``): zero activations (dead ReLUs) give a zero gradient;
    dividing by the scale 0 made the bound nan."""
    a = torch.zeros(3, 2, dtype=F64)
    kwargs: dict = {}
    if loss == "least_squares":
        kwargs = {"targets": torch.ones(3, dtype=F64), "weight_bound": 1.0}
    bound = gradient_norm_bound(a, loss, **kwargs)
    assert float(bound) == 0.0


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_a_negative_weight_bound_is_refused_for_classification_losses(loss: str) -> None:
    """B25 (bounds.py:186, the check deleted): the docstring promises a ValueError for a bad weight_bound."""
    with pytest.raises(ValueError, match="weight_bound"):
        gradient_norm_bound(torch.ones(2, 3), loss, weight_bound=-1.0)


def test_bce_accepts_num_classes_one() -> None:
    """B26 (bounds.py:190, ``(None, 1)`` -> ``(None,)``): num_classes 1 is documented as valid for "bce"."""
    a = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=F64)
    assert float(gradient_norm_bound(a, "bce", num_classes=1)) == float(gradient_norm_bound(a, "bce"))


def test_a_class_index_equal_to_num_classes_makes_the_bound_nan() -> None:
    """B32 (bounds.py:214, ``index >= k`` -> ``index > k``): index k is outside [0, k); it was clamped to k - 1 and
    gave a finite bound."""
    a = torch.randn(4, 3, dtype=F64)
    bound = gradient_norm_bound(a, "softmax", num_classes=3, targets=torch.tensor([0, 1, 2, 3]))
    assert math.isnan(float(bound))


def test_probability_targets_with_one_column_are_refused() -> None:
    """B37 (bounds.py:222, ``k < 2`` -> ``k < 1``): softmax over one class is not a classifier."""
    with pytest.raises(ValueError, match="k >= 2"):
        gradient_norm_bound(torch.randn(4, 3), "softmax", targets=torch.ones(4, 1))


def test_float_one_dimensional_softmax_targets_are_refused() -> None:
    """B41 (bounds.py:207, the integer-dtype test dropped): float (m,) targets were silently truncated to class
    indices (0.9 -> class 0)."""
    with pytest.raises(ValueError, match="integer class indices"):
        gradient_norm_bound(torch.randn(4, 3), "softmax", num_classes=3, targets=torch.tensor([0.9, 1.0, 2.0, 0.0]))


# ----------------------------------------------------------------------------------------------------------------
# lipschitz/tracker.py
# ----------------------------------------------------------------------------------------------------------------
def test_a_shallow_copy_of_the_tracked_module_is_not_recorded() -> None:
    """T05 (tracker.py:239, ``mod is not tracker.module`` dropped): copy.copy of the tracked module shares its hook
    dict; its passes are not the tracked model's."""
    head = nn.Linear(4, 3)
    with ActivationTracker(head, "softmax") as tracker:
        twin = copy.copy(head)
        twin(torch.randn(5, 4))
        assert tracker.batch_size is None
        head(torch.randn(2, 4))
        assert tracker.batch_size == 2


@pytest.mark.parametrize("loss", ["softmax", "least_squares"])
def test_rigorous_tracker_on_a_bias_free_head_uses_the_bound_without_bias(loss: str) -> None:
    """T15 (tracker.py:449, ``head.bias is not None`` dropped): a head without bias has no bias gradient to bound
    (the mutant appended a column of ones and then failed to concatenate a None bias)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3, bias=False)).double()
    x = torch.randn(8, 4, dtype=F64)
    y = torch.randint(0, 3, (8,)) if loss == "softmax" else torch.randn(8, 3, dtype=F64)
    with ActivationTracker(model, loss, rigorous=True) as tracker:
        model(x)
        tracker.observe_targets(y)
        a = model[1](model[0](x)).detach()
        kwargs: dict = {"targets": y}
        if loss == "softmax":
            kwargs["num_classes"] = 3
        else:
            kwargs["weight_bound"] = tracker.weight_bound()
        expected = gradient_norm_bound(a, loss, bias=False, **kwargs)
        torch.testing.assert_close(tracker.batch_lipschitz(), expected, rtol=1e-12, atol=0)


def test_paper_forms_ignore_targets_even_after_the_constant_was_read() -> None:
    """T29 (tracker.py:613, the early return of the paper's classification forms dropped): the docs say these forms
    ignore targets; the mutant checked their shape and refused them once batch_lipschitz() had been read."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with ActivationTracker(model, "softmax") as tracker:
        model(torch.randn(5, 4))
        tracker.batch_lipschitz()
        tracker.observe_targets(torch.zeros(7, dtype=torch.long))  # ignored: neither "used" nor a wrong shape


def test_max_k_z_is_the_largest_k_z_not_that_of_the_largest_constant() -> None:
    """T42 (tracker.py:728, ``kz.amax()`` -> ``kz[best]``): for least squares the batch with the largest L_b (big
    targets) need not have the largest K_z; EpochStats.max_k_z is documented as the epoch's largest K_z."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).double()
    with ActivationTracker(model, "least_squares", weight_bound=1.0) as tracker:
        big = torch.tensor([[10.0, 0.0], [0.0, 0.0]], dtype=F64)  # K_z = 10, targets 0
        tracker.record(big)
        tracker.observe_targets(torch.zeros(2, 1, dtype=F64))
        small = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)  # K_z = 1, huge targets: the largest L_b
        tracker.record(small)
        tracker.observe_targets(torch.full((2, 1), 1e6, dtype=F64))
        stats = tracker.epoch_stats()
        assert stats is not None
        assert float(stats.k_z) == 1.0  # the batch attaining max L_b
        assert float(stats.max_k_z) == 10.0


def test_ties_between_batch_sizes_keep_the_earlier_batch_in_both_read_paths() -> None:
    """T43 (tracker.py:738, ``value > prev`` -> ``>=``): epoch_values keeps the earlier batch on a tie of L_b (its
    comment says so); epoch_stats must agree. k = 2: L_b = K_z / (2m), so (m=2, K_z=2) and (m=4, K_z=4) tie."""
    model = nn.Sequential(nn.Linear(2, 2))
    with ActivationTracker(model, "softmax", num_classes=2) as tracker:
        tracker.record(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
        tracker.record(torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        values = tracker.epoch_values()
        stats = tracker.epoch_stats()
        assert values is not None and stats is not None
        assert values["batch_size"] == 2
        assert int(stats.batch_size) == 2 and float(stats.k_z) == 2.0


def test_a_paper_tracker_weight_bound_is_the_largest_parameter_norm() -> None:
    """T51 (tracker.py:823, ``self.rigorous and self._bias`` -> ``self._bias``): only the rigorous bound adds the
    head's joint ||[W, b]||_F to K; the paper form's K is max ||p|| (§7.4), also in epoch_values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[2].bias.fill_(5.0)  # ||[W, b]|| of the head is now clearly the largest
    expected = max(float(p.detach().norm()) for p in model.parameters())
    with ActivationTracker(model, "softmax") as tracker:
        model(torch.randn(5, 4))
        assert float(tracker.weight_bound()) == pytest.approx(expected, rel=1e-6)
        values = tracker.epoch_values()
        assert values is not None
        assert values["weight_bound"] == pytest.approx(expected, rel=1e-6)


def test_epoch_values_are_nan_when_a_later_batch_of_the_same_size_is_nan() -> None:
    """T57 (tracker.py:907, ``_nan_max`` -> ``max``): Python's max skips a nan that is not first; the docs promise
    that a nan anywhere gives a nan, as the tensor path does."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with ActivationTracker(model, "softmax") as tracker:
        tracker.record(torch.ones(5, 8))
        tracker.record(torch.full((5, 8), math.nan))
        values = tracker.epoch_values()
        assert values is not None
        assert math.isnan(values["lipschitz"])
        assert math.isnan(values["max_k_z"])


def test_reset_epoch_forgets_a_batch_whose_constant_was_not_yet_computed() -> None:
    """T62 (tracker.py:935, ``self._batch.folded = True`` deleted): a rigorous batch is folded lazily; after
    reset_epoch it must not reappear in the new epoch ("forget every batch recorded so far")."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with ActivationTracker(model, "softmax", rigorous=True) as tracker:
        model(torch.randn(5, 4))
        tracker.reset_epoch()
        assert tracker.epoch_stats() is None
        assert tracker.batch_size == 5  # the latest batch stays readable


def test_reset_epoch_forgets_the_running_maxima_of_a_rigorous_tracker() -> None:
    """T64 (tracker.py:937, ``self._summary = None`` deleted): the maxima of the previous epoch leaked into the
    next one, whose L could then never decrease."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3, bias=False))
    with ActivationTracker(model, "softmax", rigorous=True) as tracker:
        tracker.record(torch.full((4, 8), 100.0))
        first = tracker.epoch_stats()
        tracker.reset_epoch()
        tracker.record(torch.full((4, 8), 0.01))
        second = tracker.epoch_stats()
        assert first is not None and second is not None
        assert second.batches == 1
        assert float(second.data_lipschitz) < float(first.data_lipschitz) / 1000
        assert float(second.max_k_z) == pytest.approx(0.01 * math.sqrt(32), rel=1e-5)


def test_state_dict_mid_batch_of_least_squares_without_targets_works() -> None:
    """T67 (tracker.py:950, the waiting-for-targets test dropped): the docstring says a least-squares batch still
    waiting for its targets is left out of the state; the mutant tried to finish it and raised."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with ActivationTracker(model, "least_squares") as tracker:
        model(torch.randn(5, 4))
        tracker.observe_targets(torch.randn(5, 1))
        model(torch.randn(5, 4))  # its targets not given yet
        state = tracker.state_dict()
        assert state["batches"] == 1
        tracker.observe_targets(torch.randn(5, 1))
        stats = tracker.epoch_stats()
        assert stats is not None and stats.batches == 2


def test_load_state_dict_replaces_the_batches_recorded_before_it() -> None:
    """T70 (tracker.py:995, ``self.reset_epoch()`` deleted): batches recorded before load_state_dict stayed pending
    and were mixed into the restored epoch."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with ActivationTracker(model, "softmax") as source:
        source.record(torch.ones(5, 8))
        state = source.state_dict()
    with ActivationTracker(model, "softmax") as tracker:
        tracker.record(torch.full((3, 8), 1000.0))  # a batch (of another size) before the restore
        tracker.load_state_dict(state)
        values = tracker.epoch_values()
        assert values is not None
        assert values["batches"] == 1
        assert values["max_k_z"] == pytest.approx(math.sqrt(40), rel=1e-6)


def test_a_model_without_parameters_has_weight_bound_zero() -> None:
    """T76 (tracker.py:809, ``or not params`` dropped): the docstring gives K = 0 for a model without parameters;
    the mutant indexed params[0] of an empty list."""
    model = nn.Sequential(nn.Flatten())
    with ActivationTracker(model, "bce", penultimate="0") as tracker:
        model(torch.randn(4, 3))
        assert float(tracker.weight_bound()) == 0.0
        values = tracker.epoch_values()
        assert values is not None and values["weight_bound"] == 0.0


def test_softmax_with_a_one_output_head_asks_for_num_classes() -> None:
    """T77 (tracker.py:413, ``num_classes < 2`` -> ``< 1``): the specific message (name num_classes) was replaced by
    check_int's generic one."""
    with pytest.raises(ValueError, match="num_classes must be given"):
        ActivationTracker(nn.Sequential(nn.Linear(4, 1)), "softmax")


def test_epoch_values_batch_size_is_an_int_for_the_rigorous_form() -> None:
    """T78 (tracker.py:120, ``int(...)`` dropped): EPOCH_FIELDS' batch_size is documented as an int."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with ActivationTracker(model, "softmax", rigorous=True) as tracker:
        model(torch.randn(6, 4))
        values = tracker.epoch_values()
        assert values is not None
        assert type(values["batch_size"]) is int and values["batch_size"] == 6
