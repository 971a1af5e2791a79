"""ActivationTracker: what the hook records equals what an explicit forward pass gives, batch by batch and per epoch."""

from __future__ import annotations

import copy
import gc
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import activation_norm, softmax_cross_entropy
from theorylr.lipschitz.tracker import ActivationTracker, find_last_linear, stats_values

F64 = torch.float64


def _mlp(out: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 6), nn.Tanh(), nn.Linear(6, out)).to(F64)


def _penultimate(model: nn.Sequential, x: Tensor) -> Tensor:
    """The input of the last Linear, by an explicit forward pass through the other modules (no hooks involved)."""
    with torch.no_grad():
        for module in list(model)[:-1]:
            x = module(x)
    return x


def _max_param_norm(model: nn.Module) -> float:
    return max(float(torch.sqrt((p.detach() ** 2).sum())) for p in model.parameters())


def _x(m: int, seed: int) -> Tensor:
    return torch.randn(m, 5, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("kind", ["fro", "spectral", "max_row"])
def test_k_z_from_the_hook_equals_k_z_from_an_explicit_forward_pass(kind: str) -> None:
    model = _mlp()
    with ActivationTracker(model, "softmax", activation_norm=kind) as tracker:
        for m, seed in ((16, 0), (7, 1)):
            x = _x(m, seed)
            model(x)
            a = _penultimate(model, x)
            expected = {
                "fro": torch.sqrt((a * a).sum()),
                "spectral": torch.linalg.svdvals(a)[0],
                "max_row": torch.sqrt((a * a).sum(dim=1)).max(),
            }[kind]
            torch.testing.assert_close(tracker.batch_k_z(), expected, rtol=1e-12, atol=0)
            assert tracker.batch_size == m


def test_batch_constants_are_the_papers_closed_forms() -> None:
    x = _x(16, 0)
    model = _mlp(out=4)
    with ActivationTracker(model, "softmax") as tracker:  # k inferred from the last Linear
        model(x)
        a = _penultimate(model, x)
        assert tracker.num_classes == 4
        assert float(tracker.batch_lipschitz()) == pytest.approx(3 / 64 * float(a.norm()), rel=1e-13)  # eq. 23
    model = _mlp(out=1)
    with ActivationTracker(model, "bce") as tracker:
        model(x)
        a = _penultimate(model, x)
        assert float(tracker.batch_lipschitz()) == pytest.approx(float(a.norm()) / 32, rel=1e-13)  # eq. 18
    with ActivationTracker(model, "least_squares") as tracker:
        model(x)
        y = 0.01 * torch.randn(16, 1, dtype=F64)
        tracker.observe_targets(y)
        a = _penultimate(model, x)
        k = _max_param_norm(model)  # the largest parameter-tensor norm (§7.4)
        expected = (k * float(a.norm()) - float(y.norm())) * float(a.norm()) / 16  # eq. 9 with K_a = K K_z (eq. 12)
        assert expected > 0
        assert float(tracker.batch_lipschitz()) == pytest.approx(expected, rel=1e-13)
        model(x)
        tracker.observe_targets(100 + y)  # ||y|| > K K_z: the paper's form is negative, returned as nan
        assert torch.isnan(tracker.batch_lipschitz())


@pytest.mark.parametrize("loss", ["softmax", "bce", "least_squares"])
def test_rigorous_batch_constant_is_gradient_norm_bound_and_bounds_the_gradient(loss: str) -> None:
    out = 4 if loss == "softmax" else 1
    model = _mlp(out=out)
    x = _x(16, 3)
    gen = torch.Generator().manual_seed(4)
    y: Tensor
    if loss == "softmax":
        y = torch.randint(0, 4, (16,), generator=gen)
    elif loss == "bce":
        y = torch.randint(0, 2, (16, 1), generator=gen).to(F64)
    else:
        y = torch.randn(16, 1, generator=gen, dtype=F64)
    with ActivationTracker(model, loss, rigorous=True) as tracker:
        z = model(x)
        tracker.observe_targets(y)
        a = _penultimate(model, x)
        k = num = None
        last = model[-1]
        if loss == "least_squares":
            # K covers the joint norm of the last layer's weight and bias (the bias enters the residual).
            joint = torch.cat([last.weight.detach().flatten(), last.bias.detach()]).norm()
            k = max(_max_param_norm(model), float(joint))
        if loss == "softmax":
            num = 4
        # The last layer has a bias: the bound covers the weight and bias gradients together.
        expected = gradient_norm_bound(a, loss, num_classes=num, targets=y, weight_bound=k, bias=True)
        got = tracker.batch_lipschitz()
        torch.testing.assert_close(got, expected, rtol=1e-13, atol=0)
        # The documented relation: the bound is >= the actual last-layer gradient norm of the batch's mean loss.
        if loss == "softmax":
            value = nn.functional.cross_entropy(z, y)
        elif loss == "bce":
            value = nn.functional.binary_cross_entropy_with_logits(z, y)
        else:
            value = 0.5 * ((z - y) ** 2).sum() / 16
        grad_w, grad_b = torch.autograd.grad(value, [last.weight, last.bias])
        assert float(torch.cat([grad_w.flatten(), grad_b]).norm()) <= float(got)


def test_epoch_statistics_are_the_max_over_batches() -> None:
    model = _mlp()
    sizes = [16, 16, 5, 16, 9]
    with ActivationTracker(model, "softmax") as tracker:
        values, kzs = [], []
        for i, m in enumerate(sizes):
            x = _x(m, 10 + i) * (1 + i)
            model(x)
            kz = float(_penultimate(model, x).norm())
            kzs.append(kz)
            values.append(3 / (4 * m) * kz)
        stats = tracker.epoch_stats()
        assert stats is not None
        best = max(range(len(sizes)), key=lambda i: values[i])
        assert float(stats.data_lipschitz) == pytest.approx(values[best], rel=1e-13)
        assert float(stats.lipschitz) == pytest.approx(values[best], rel=1e-13)
        assert float(stats.k_z) == pytest.approx(kzs[best], rel=1e-13)
        assert float(stats.batch_size) == sizes[best]
        assert float(stats.max_k_z) == pytest.approx(max(kzs), rel=1e-13)
        assert (stats.batches, stats.examples) == (len(sizes), sum(sizes))
        weight_decay = 0.01
        bound = _max_param_norm(model)
        with_decay = tracker.epoch_stats(weight_decay=weight_decay)
        assert with_decay is not None
        assert float(with_decay.weight_bound) == pytest.approx(bound, rel=1e-13)
        assert float(with_decay.lipschitz) == pytest.approx(values[best] + weight_decay * bound, rel=1e-13)
        tracker.reset_epoch()
        assert tracker.epoch_stats() is None
        assert tracker.batch_size == sizes[-1]  # the latest batch stays readable


def test_latest_batch_and_epoch_stay_exact_when_the_record_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Frobenius fast path updates the latest batch's record in place and appends to the list of the latest
    batch size: a constant read for one batch is not served for the next, and batch sizes that change between
    batches, across periodic reductions and across epochs, are all counted."""
    import theorylr.lipschitz.tracker as module

    monkeypatch.setattr(module, "_REDUCE_EVERY", 4)
    model = _mlp()
    sizes = [16, 16, 16, 16, 16, 5, 5, 5, 5, 9, 16]  # runs across reductions, and across epochs
    with ActivationTracker(model, "softmax") as tracker:
        for peak in range(len(sizes)):  # one epoch per position of the largest batch
            model(_x(sizes[0], 99))  # a batch that reset_epoch() forgets, of the size the epoch starts with
            tracker.reset_epoch()
            values, kzs = [], []
            for i, m in enumerate(sizes):
                x = _x(m, 100 * peak + i) * (10.0 if i == peak else 1.0)
                model(x)
                kzs.append(float(_penultimate(model, x).norm()))
                values.append(3 / (4 * m) * kzs[-1])
                assert tracker.batch_size == m
                assert float(tracker.batch_k_z()) == pytest.approx(kzs[-1], rel=1e-13)
                assert float(tracker.batch_lipschitz()) == pytest.approx(values[-1], rel=1e-13)
            stats = tracker.epoch_stats()
            assert stats is not None and (stats.batches, stats.examples) == (len(sizes), sum(sizes))
            assert float(stats.data_lipschitz) == pytest.approx(max(values), rel=1e-13)
            assert float(stats.max_k_z) == pytest.approx(kzs[peak], rel=1e-13)


def test_epoch_maximum_survives_periodic_reduction(monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.lipschitz.tracker as module

    monkeypatch.setattr(module, "_REDUCE_EVERY", 3)
    model = _mlp()
    rigorous = ActivationTracker(model, "softmax", rigorous=True)
    with ActivationTracker(model, "softmax") as tracker:
        values, bounds = [], []
        for i in range(10):
            x = _x(4 + i % 3, 20 + i) * (1 + (i * 7) % 5)
            model(x)
            a = _penultimate(model, x)
            values.append(3 / (4 * a.shape[0]) * float(a.norm()))
            bounds.append(float(gradient_norm_bound(a, "softmax", bias=True)))  # the last layer has a bias
        stats = tracker.epoch_stats()
        assert stats is not None and stats.batches == 10
        assert float(stats.data_lipschitz) == pytest.approx(max(values), rel=1e-13)
    stats = rigorous.epoch_stats()
    assert stats is not None
    assert float(stats.data_lipschitz) == pytest.approx(max(bounds), rel=1e-13)
    rigorous.close()


def test_only_training_mode_forward_passes_are_recorded() -> None:
    model = _mlp()
    with ActivationTracker(model, "softmax") as tracker:
        model(_x(8, 0))
        before = tracker.epoch_stats()
        assert before is not None
        model.eval()
        model(_x(8, 1) * 100)  # an evaluation pass with huge activations
        model.train()
        with tracker.paused():
            model(_x(8, 2) * 100)
        after = tracker.epoch_stats()
        assert after is not None and after.batches == 1
        assert float(after.data_lipschitz) == float(before.data_lipschitz)
        assert tracker.batch_size == 8


@pytest.mark.parametrize("penultimate", [None, "3"], ids=["input-of-last-linear", "output-of-named-module"])
def test_a_deep_copy_of_the_model_does_not_report_to_the_tracker(penultimate: str | None) -> None:
    """A copy (an EMA / AveragedModel, ``copy.deepcopy((model, opt))``) carries the hook along; its training passes,
    e.g. ``update_bn``'s, are not the tracked model's."""
    model = _mlp()
    with ActivationTracker(model, "softmax", penultimate=penultimate) as tracker:
        model(_x(8, 0))
        before = tracker.epoch_stats()
        assert before is not None
        twin = copy.deepcopy(model)
        twin(_x(8, 1) * 100)  # a training-mode pass of the copy, with huge activations
        after = tracker.epoch_stats()
        assert after is not None and after.batches == 1
        assert float(after.data_lipschitz) == float(before.data_lipschitz)


def test_explicit_penultimate_module_by_name_or_object() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3), nn.ReLU(), nn.Linear(3, 3)
    ).to(F64)
    x = torch.randn(5, 1, 6, 6, dtype=F64)
    with torch.no_grad():
        conv_out = model[1](model[0](x)).reshape(5, -1)
    for penultimate in ("1", model[1]):
        with ActivationTracker(model, "softmax", penultimate=penultimate) as tracker:
            assert tracker.mode == "output"
            model(x)
            torch.testing.assert_close(tracker.batch_k_z(), conv_out.norm(), rtol=1e-13, atol=0)
            assert tracker.batch_size == 5


def test_sequence_inputs_count_every_position_as_an_example() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5)).to(F64)
    x = torch.randn(2, 7, 3, dtype=F64)
    with ActivationTracker(model, "softmax") as tracker:
        model(x)
        assert tracker.batch_size == 14
        torch.testing.assert_close(tracker.batch_k_z(), torch.tanh(model[0](x)).detach().norm(), rtol=1e-13, atol=0)


def test_weight_bound_default_and_constant() -> None:
    model = _mlp()
    with ActivationTracker(model, "softmax") as tracker:
        expected = _max_param_norm(model)
        assert float(tracker.weight_bound()) == pytest.approx(expected, rel=1e-13)
        assert float(tracker.weight_bound(foreach=False)) == pytest.approx(expected, rel=1e-13)
    with ActivationTracker(model, "softmax", weight_bound=2.5) as tracker:
        assert float(tracker.weight_bound()) == 2.5


def test_hook_removed_by_close_context_manager_and_garbage_collection() -> None:
    model = _mlp()
    last = model[-1]
    tracker = ActivationTracker(model, "softmax")
    assert len(last._forward_pre_hooks) == 1 and not tracker.closed
    tracker.close()
    tracker.close()  # idempotent
    assert len(last._forward_pre_hooks) == 0 and tracker.closed
    model(_x(4, 0))
    assert tracker.batch_size is None  # nothing recorded after close
    with ActivationTracker(model, "softmax"):
        assert len(last._forward_pre_hooks) == 1
    assert len(last._forward_pre_hooks) == 0
    tracker = ActivationTracker(model, "softmax", penultimate="3")
    assert len(model[3]._forward_hooks) == 1
    del tracker
    gc.collect()
    assert len(model[3]._forward_hooks) == 0


def test_hooks_make_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _mlp()
    trackers = [
        ActivationTracker(model, "softmax"),
        ActivationTracker(model, "softmax", rigorous=True, activation_norm="max_row"),
        ActivationTracker(model, "least_squares", num_classes=None),
        ActivationTracker(model, "least_squares", rigorous=True),
    ]
    y = torch.randn(8, 4, dtype=F64)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        for i in range(3):
            model(_x(8, i))
            for tracker in trackers:
                if tracker.needs_targets:
                    tracker.observe_targets(y)
                tracker.batch_lipschitz(weight_decay=0.1)
        for tracker in trackers:
            assert tracker.epoch_stats(weight_decay=0.1) is not None
    for tracker in trackers:
        tracker.close()


def test_least_squares_needs_targets() -> None:
    model = _mlp(out=1)
    with ActivationTracker(model, "least_squares") as tracker:
        model(_x(4, 0))
        with pytest.raises(RuntimeError, match="observe_targets"):
            tracker.batch_lipschitz()
        with pytest.raises(RuntimeError, match="observe_targets"):
            model(_x(4, 1))  # the previous batch cannot be finished without its targets
    with ActivationTracker(model, "least_squares") as tracker:
        with pytest.raises(RuntimeError, match="no training forward pass"):
            tracker.observe_targets(torch.zeros(4))
        model(_x(4, 0))
        tracker.observe_targets(torch.zeros(4, 1, dtype=F64))
        tracker.batch_lipschitz()
        with pytest.raises(RuntimeError, match="already used"):
            tracker.observe_targets(torch.zeros(4, 1, dtype=F64))


def test_state_dict_round_trip_mid_epoch() -> None:
    model = _mlp()
    with ActivationTracker(model, "softmax") as first, ActivationTracker(model, "softmax") as second:
        for i in range(3):
            model(_x(6 + i, i))
        second.load_state_dict(first.state_dict())
        for i in range(3, 5):
            model(_x(6 + i, i) * 3)
        a, b = first.epoch_stats(), second.epoch_stats()
        assert a is not None and b is not None
        assert (a.batches, a.examples) == (b.batches, b.examples) == (5, 6 + 7 + 8 + 9 + 10)
        for field in ("data_lipschitz", "k_z", "batch_size", "max_k_z"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"loss": "hinge"}, "loss"),
        ({"activation_norm": "nuclear"}, "activation_norm"),
        ({"loss": "bce", "num_classes": 3}, "num_classes"),
        ({"loss": "least_squares", "num_classes": 3}, "num_classes"),
        ({"num_classes": 1}, "num_classes"),
        ({"penultimate": "nope"}, "penultimate"),
        ({"penultimate": nn.ReLU()}, "penultimate"),
        ({"weight_bound": -1.0}, "weight_bound"),
        ({"rigorous": "yes"}, "rigorous"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ActivationTracker(_mlp(), **kwargs)


def test_find_last_linear() -> None:
    model = _mlp()
    assert find_last_linear(model) == ("4", model[4])
    with pytest.raises(ValueError, match="penultimate"):
        find_last_linear(nn.Sequential(nn.ReLU()))


class _Attending(nn.Module):
    """Attention, then a head; the attention, registered after the head, holds an nn.Linear (out_proj) never called."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.attention(x, x, x)
        return self.head(input=h.mean(1))  # called with a keyword argument


def test_find_last_linear_skips_attention_projections_and_keyword_calls_are_recorded() -> None:
    torch.manual_seed(0)
    model = _Attending().to(F64)
    assert find_last_linear(model) == ("head", model.head)
    with ActivationTracker(model, "softmax") as tracker:
        x = torch.randn(6, 5, 4, dtype=F64)
        model(x)
        stats = tracker.epoch_stats()
        assert stats is not None and stats.batches == 1
        h = model.attention(x, x, x)[0].mean(1).detach()
        assert float(stats.k_z) == pytest.approx(float(torch.linalg.matrix_norm(h)), rel=1e-12)


def test_a_module_forward_never_calls_is_named_in_the_error() -> None:
    model = _mlp()
    with ActivationTracker(model, "softmax", penultimate=model[1]) as tracker:
        model.train()
        with torch.no_grad():
            model[2](torch.zeros(2, 9, dtype=F64))  # a call that is not the tracked module's
        with pytest.raises(RuntimeError, match=r"tracked module, '1' \(ReLU, its output\)"):
            tracker.batch_lipschitz()


def test_rigorous_least_squares_bound_holds_with_a_large_bias() -> None:
    """With a large output bias the bias-free bound can fall short; the tracker's bias-aware one must not."""
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=F64)
    y = torch.randn(64, 1, dtype=F64) * 3
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)
    with torch.no_grad():
        model[2].bias.fill_(4.0)
    with ActivationTracker(model, "least_squares", rigorous=True) as tracker:
        out = model(x)
        tracker.observe_targets(y)
        bound = tracker.batch_lipschitz()
    loss = 0.5 * (out - y).square().sum(1).mean()
    gw, gb = torch.autograd.grad(loss, [model[2].weight, model[2].bias])
    assert float(torch.cat([gw.flatten(), gb]).norm()) <= float(bound)


def test_rigorous_bound_with_a_bias_covers_the_decay_term_of_the_joint_gradient() -> None:
    """With weight decay the SGD step on the last layer is ``lr (g + lambda [W, b])``: ``K`` must hold ``[W, b]``,
    not only the largest single tensor, for ``lr = 1 / (L_b + lambda K)`` to move ``[W, b]`` by at most 1."""
    from theorylr.lipschitz.scheduler import LipschitzLR

    lam = 0.1
    model = nn.Sequential(nn.Linear(1, 1)).to(F64)
    with torch.no_grad():
        model[0].weight.fill_(5.0)
        model[0].bias.fill_(5.0)  # ||W|| = ||b|| = 5, ||[W, b]|| = 5 sqrt(2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=lam)
    sched = LipschitzLR(opt, model, "bce", rigorous=True, weight_decay=lam)
    assert sched.tracker.weight_bound().item() == pytest.approx(5 * 2**0.5)
    x, y = torch.ones(4, 1, dtype=F64), torch.zeros(4, dtype=F64)
    before = torch.cat([model[0].weight.detach().flatten(), model[0].bias.detach()])
    nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y).backward()
    opt.step()
    after = torch.cat([model[0].weight.detach().flatten(), model[0].bias.detach()])
    assert float((after - before).norm()) <= 1.0 + 1e-12  # was 1.108 with K = max(||W||, ||b||)
    sched.close()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weight_bound_of_a_16_bit_model_is_accumulated_in_float32(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 4)).to(dtype)
    exact = max(float(p.detach().double().norm()) for p in model.parameters())
    with ActivationTracker(model, "softmax") as tracker:
        for foreach in (True, False):
            bound = tracker.weight_bound(foreach=foreach)
            assert bound.dtype == torch.float32
            assert float(bound) == pytest.approx(exact, rel=1e-6)  # a 16-bit result rounds to 8 or 11 bits
    mixed = nn.Sequential(nn.Linear(3, 3).double(), nn.Linear(3, 2).to(dtype))
    with ActivationTracker(mixed, "softmax") as tracker:
        exact = max(float(p.detach().double().norm()) for p in mixed.parameters())
        assert float(tracker.weight_bound()) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [
        ("input", (6, 5), torch.float32),
        ("input", (3, 4, 5), torch.float64),
        ("input", (5,), torch.float32),
        ("input", (6, 5), torch.bfloat16),
        ("output", (4, 2, 3, 3), torch.float32),
        ("output", (7,), torch.float16),
    ],
)
def test_fro_fast_path_equals_the_matrix_definition(mode: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """record()'s per-batch fast path (paper forms, "fro") gives the K_z and m of the (m, features) matrix."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 3))
    penultimate = None if mode == "input" else "0"
    a = torch.randn(shape).to(dtype)
    fast = ActivationTracker(model, "softmax", penultimate=penultimate)
    slow = ActivationTracker(model, "softmax", penultimate=penultimate, activation_norm="max_row")
    assert fast._fro_only and not slow._fro_only
    fast.record(a)
    slow.record(a)
    matrix = a.float().reshape(-1, shape[-1]) if mode == "input" else a.float().reshape(shape[0], -1)
    assert fast.batch_size == slow.batch_size == matrix.shape[0]
    assert fast.batch_k_z().dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(fast.batch_k_z().float(), activation_norm(matrix), rtol=1e-6, atol=0)
    stats = fast.epoch_stats()
    assert stats is not None and int(stats.batch_size) == matrix.shape[0]
    torch.testing.assert_close(
        stats.data_lipschitz.float(), softmax_cross_entropy(activation_norm(matrix), matrix.shape[0], 3)
    )


def _values_from_stats(tracker: ActivationTracker, weight_decay: float) -> dict[str, Any] | None:
    return stats_values(tracker.epoch_stats(weight_decay=weight_decay))


@pytest.mark.parametrize("loss", ["softmax", "bce"])
@pytest.mark.parametrize("reduce_every", [256, 2])
@pytest.mark.parametrize("weight_decay", [0.0, 0.03])
def test_epoch_values_equal_the_tensor_statistics(
    monkeypatch: pytest.MonkeyPatch, loss: str, reduce_every: int, weight_decay: float
) -> None:
    """The host-side reduction of epoch_values (paper forms) gives what reading epoch_stats gives: several batch
    sizes, a batch size seen in two reductions, the running maxima carried from a mid-epoch reduction."""
    import theorylr.lipschitz.tracker as module

    monkeypatch.setattr(module, "_REDUCE_EVERY", reduce_every)
    model = _mlp(out=4 if loss == "softmax" else 1)
    sizes = [16, 5, 16, 9, 5, 16, 3]
    scales = [1.0, 0.7, 2.5, 1.1, 0.2, 1.0, 0.4]
    with ActivationTracker(model, loss) as tracker:
        assert tracker.epoch_values() is None
        for i, (m, scale) in enumerate(zip(sizes, scales)):
            model(_x(m, 40 + i) * scale)
            got = tracker.epoch_values(weight_decay=weight_decay)
            want = _values_from_stats(tracker, weight_decay)
            assert got is not None and want is not None
            assert set(got) == set(want) == {*module.EPOCH_FIELDS, "batches"}
            assert got["batch_size"] == want["batch_size"] and got["batches"] == want["batches"] == i + 1
            for name in module.EPOCH_FIELDS:
                assert got[name] == pytest.approx(want[name], rel=1e-14), name
        tracker.reset_epoch()
        assert tracker.epoch_values() is None


def test_epoch_values_reduce_on_the_host_for_the_papers_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the paper's classification forms epoch_values does not go through epoch_stats (that is its speed);
    for the other forms it does, and gives the same numbers."""
    model = _mlp()
    x = _x(8, 0)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("epoch_stats was called")

    with ActivationTracker(model, "softmax") as fast:
        model(x)
        monkeypatch.setattr(fast, "epoch_stats", refuse)
        values = fast.epoch_values()
        assert values is not None
        assert values["lipschitz"] == pytest.approx(3 / (4 * 8) * float(_penultimate(model, x).norm()), rel=1e-13)
    with (
        ActivationTracker(model, "softmax", rigorous=True) as rigorous,
        ActivationTracker(model, "softmax", activation_norm="max_row") as other,
    ):
        model(x)
        for tracker in (rigorous, other):
            assert tracker.epoch_values(weight_decay=0.1) == _values_from_stats(tracker, 0.1)


@pytest.mark.parametrize("weight_bound", [2.5, None])
def test_epoch_values_with_low_precision_parameters_and_activations(weight_bound: float | None) -> None:
    """bfloat16 weights (norms in bfloat16), float32 K_z, and a constant bound: one stacked read all the same."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).to(torch.bfloat16)
    with ActivationTracker(model, "softmax", weight_bound=weight_bound) as tracker:
        for m in (6, 4, 6):
            model(torch.randn(m, 5).to(torch.bfloat16))
        got, want = tracker.epoch_values(weight_decay=0.2), _values_from_stats(tracker, 0.2)
        assert got is not None and want is not None
        assert got["weight_bound"] == (2.5 if weight_bound else pytest.approx(want["weight_bound"], rel=1e-6))
        for name in ("lipschitz", "data_lipschitz", "k_z", "max_k_z"):
            assert got[name] == pytest.approx(want[name], rel=1e-6), name


@pytest.mark.parametrize("where", [0, 2])
def test_epoch_values_propagate_nan_as_the_tensor_statistics_do(where: int) -> None:
    """A batch with non-finite activations makes the epoch's constant nan (LipschitzLR then refuses it), wherever
    it falls among the batches and batch sizes."""
    model = _mlp()
    with ActivationTracker(model, "softmax") as tracker:
        for i, m in enumerate((8, 8, 5, 8)):
            x = _x(m, 60 + i)
            if i == where:
                x[0, 0] = float("nan")
            model(x)
        got, want = tracker.epoch_values(), _values_from_stats(tracker, 0.0)
        assert got is not None and want is not None
        for name in ("lipschitz", "data_lipschitz", "max_k_z"):
            assert math.isnan(got[name]) and math.isnan(want[name]), name


@pytest.mark.parametrize("rigorous", [False, True])
def test_least_squares_state_dict_keeps_the_latest_batch_once_its_targets_are_given(rigorous: bool) -> None:
    """A mid-epoch checkpoint after the step of a batch whose targets were given dropped that batch (an lr 1.76x
    too large after the resume when it was the epoch's largest)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(F64)
    xs = [torch.randn(6, 3, dtype=F64) * s for s in (1.0, 3.0)]
    ys = [torch.randn(6, 1, dtype=F64) for _ in xs]
    with ActivationTracker(model, "least_squares", rigorous=rigorous) as straight:
        for x, y in zip(xs, ys):
            model(x)
            straight.observe_targets(y)
        expected = straight.epoch_values()
        state = straight.state_dict()
    assert expected is not None and expected["batches"] == 2
    with ActivationTracker(model, "least_squares", rigorous=rigorous) as resumed:
        resumed.load_state_dict(state)
        values = resumed.epoch_values()
    assert values is not None and values["batches"] == 2
    assert values["lipschitz"] == pytest.approx(expected["lipschitz"], rel=1e-12)


def test_mid_epoch_reads_and_compaction_leave_the_epochs_l_bit_identical() -> None:
    """The paper's forms take ``c_m K_z`` on the host in float64 when the epoch is read. A float32 model's epoch
    gives the same ``L``, bit for bit, whether nothing read it before, a ``state_dict()`` and ``epoch_stats()``
    read it after every batch, its batches were compacted every 2 batches, or it was checkpointed mid-epoch and
    resumed in a new tracker (each of these once folded ``c_m K_z`` in float32: a different last bit)."""

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 4))
    plain = ActivationTracker(model, "softmax")
    peeked = ActivationTracker(model, "softmax")
    compacted = ActivationTracker(model, "softmax")
    sizes = [10, 10, 10, 7, 10, 10, 5]  # c_m = 3 / (4 m) not dyadic: float32 rounds c_m K_z
    saved = None
    for i, m in enumerate(sizes):
        model(torch.randn(m, 5, generator=torch.Generator().manual_seed(i)) * (1 + i % 3))
        if i % 2:
            compacted._reduce()  # what every _REDUCE_EVERY (256) batches does
        peeked.state_dict()
        peeked.epoch_stats()
        if i == 3:
            saved = peeked.state_dict()
    assert saved is not None
    resumed = ActivationTracker(nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 4)), "softmax")
    resumed.load_state_dict(saved)
    for i, m in enumerate(sizes[4:], start=4):  # the rest of the epoch, through the resumed tracker's own record
        x = torch.randn(m, 5, generator=torch.Generator().manual_seed(i)) * (1 + i % 3)
        with torch.no_grad():
            resumed.record(model[:-1](x))
    values = [t.epoch_values() for t in (plain, peeked, compacted, resumed)]
    assert all(v is not None for v in values)
    assert values[1] == values[0] and values[2] == values[0]
    for key in ("lipschitz", "k_z", "batch_size", "max_k_z"):
        assert values[3][key] == values[0][key], key  # type: ignore[index]
    # and that L is c_m * max K_z in float64, over the batch sizes
    expected = 0.0
    for i, m in enumerate(sizes):
        x = torch.randn(m, 5, generator=torch.Generator().manual_seed(i)) * (1 + i % 3)
        with torch.no_grad():
            k_z = float(torch.linalg.vector_norm(model[:-1](x)))
        expected = max(expected, softmax_cross_entropy(k_z, m, 4))
    assert values[0]["lipschitz"] == pytest.approx(expected, rel=1e-15, abs=0)  # type: ignore[index]
    for t in (plain, peeked, compacted, resumed):
        t.close()


def test_a_state_of_another_form_is_refused_and_the_tracker_left_as_it_was() -> None:
    """The epoch maxima are of one form's constants: a paper-form state loaded into a rigorous tracker put its K_z
    where the rigorous constants go (the epoch then reported one batch's K_z beside another's constant)."""
    model = _mlp()
    with ActivationTracker(model, "softmax") as paper, ActivationTracker(model, "softmax", rigorous=True) as rig:
        model(_x(5, 0))
        saved = paper.state_dict()
        before = rig.state_dict()
        with pytest.raises(ValueError, match=r"other rigorous .*rigorous=False"):
            rig.load_state_dict(saved)
        assert rig.state_dict()["batches"] == before["batches"] == 1
        untagged = {k: v for k, v in saved.items() if k != "form"}  # a state saved before the form was recorded
        with pytest.raises(ValueError, match="paper forms' K_z per batch size"):
            rig.load_state_dict(untagged)
        with ActivationTracker(model, "bce") as bce, pytest.raises(ValueError, match=r"other .*loss"):
            bce.load_state_dict(saved)
        fresh = ActivationTracker(model, "softmax")
        fresh.load_state_dict({k: v for k, v in rig.state_dict().items() if k != "form"})  # untagged: taken as is
        fresh.close()
