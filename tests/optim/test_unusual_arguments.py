"""The optimizers on unusual but legal inputs: lr tensors of shape (1,), integer or complex lr tensors, copies of a
LARS with a ``norm_fn``, lazy modules in ``lars_param_groups``, and ``exact_step_adam``'s argument checks.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

import theorylr.optim.exact_adam as exact_adam_module
from theorylr.optim import (
    LARS,
    AdaMo,
    AdaptiveRMSprop,
    AutoAdam,
    PercentDelta,
    exact_step_adam,
    lars_param_groups,
    local_norms,
)

CLASSES: list[tuple[type[Optimizer], dict[str, Any]]] = [
    (LARS, {"momentum": 0.9, "weight_decay": 0.1}),
    (LARS, {"momentum": 0.9, "nesterov": True, "factored_momentum": False}),
    (LARS, {"adapt": False}),
    (PercentDelta, {"momentum": 0.5, "norm": "mean_ratio"}),
    (AdaMo, {"weight_decay": 0.1}),
    (AutoAdam, {}),
    (AdaptiveRMSprop, {"bias_correction": True}),
]
CLASS_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CLASSES)]


def _params() -> list[nn.Parameter]:
    """A 0-dim parameter (a learned temperature), a vector and a matrix."""
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=g, dtype=torch.float64)) for shape in [(), (3,), (2, 4)]]


def _run(cls: type[Optimizer], kwargs: dict[str, Any], lr: float | Tensor, foreach: bool) -> list[Tensor]:
    params = _params()
    opt = cls(params, lr=lr, foreach=foreach, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    return [p.detach() for p in params]


# ----------------------------------------------------------------------------------------------------------------
# lr as a one-element tensor of shape (1,)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "kwargs"), CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("foreach", [False, True])
def test_a_one_element_lr_tensor_of_shape_1_steps_as_the_0_dim_one(
    cls: type[Optimizer], kwargs: dict[str, Any], foreach: bool
) -> None:
    """torch's optimizers take any one-element lr tensor; a shape-(1,) lr used to broadcast a 0-dim parameter's
    in-place update to shape (1,) ("output with shape [] doesn't match the broadcast shape [1]"), and AutoAdam's and
    AdaptiveRMSprop's foreach path refused it for every parameter."""
    expected = _run(cls, kwargs, torch.tensor(0.05, dtype=torch.float64), foreach)
    got = _run(cls, kwargs, torch.tensor([0.05], dtype=torch.float64), foreach)
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_a_shape_1_lr_tensor_follows_a_scheduler() -> None:
    p = nn.Parameter(torch.tensor(2.0))
    lr = torch.tensor([0.1])
    opt = LARS([p], lr=lr, min_norm=10.0, foreach=False)  # below min_norm: plain SGD, w -= lr * g
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for expected in (1.9, 1.85):
        p.grad = torch.tensor(1.0)
        opt.step()
        sched.step()
        assert p.shape == () and float(p.detach()) == pytest.approx(expected)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.025)


# ----------------------------------------------------------------------------------------------------------------
# lr tensors that are not real floating point
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LARS, PercentDelta, AdaMo, AutoAdam, AdaptiveRMSprop])
@pytest.mark.parametrize("lr", [torch.tensor(1), torch.tensor(0.1 + 0.0j)], ids=["int64", "complex64"])
def test_an_integer_or_complex_lr_tensor_is_refused_naming_lr(cls: type[Optimizer], lr: Tensor) -> None:
    """An integer lr tensor used to be taken, and a scheduler's in-place ``fill_(0.05)`` then truncated it to 0
    (training stopped silently); a complex one lost its imaginary part (LARS) or failed inside ``step()``."""
    with pytest.raises(ValueError, match=r"^lr must be a number or a one-element floating-point tensor"):
        cls(_params(), lr=lr)
    opt = cls(_params()[:1], lr=0.1)
    with pytest.raises(ValueError, match=r"^lr must be"):
        opt.add_param_group({"params": _params()[1:], "lr": lr})


# ----------------------------------------------------------------------------------------------------------------
# LARS: copies keep the norm hook
# ----------------------------------------------------------------------------------------------------------------
def _doubled_norms(tensors: list[Tensor], norm: str) -> list[Tensor]:
    """The weights' norms doubled, the denominators' kept (the first half of ``tensors`` is the weights): the trust
    ratio doubles, so a copy that lost the hook would step differently (doubling every norm would not show it)."""
    norms = local_norms(tensors, norm)
    half = len(norms) // 2
    return [2 * n for n in norms[:half]] + list(norms[half:])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_lars_keeps_its_norm_fn_and_steps_as_the_original(how: str) -> None:
    """torch's ``Optimizer.__getstate__`` keeps only defaults, state and param groups: a deep-copied or unpickled
    LARS used to lose ``norm_fn`` and silently take local norms (for sharded parameters, the norms of a shard)."""
    model = nn.Linear(4, 3)
    opt = LARS(model.parameters(), lr=0.1, momentum=0.9, norm_fn=_doubled_norms)
    model(torch.randn(5, 4)).square().mean().backward()
    opt.step()
    pair = (model, opt)
    copied_model, copied = copy.deepcopy(pair) if how == "deepcopy" else pickle.loads(pickle.dumps(pair))
    assert copied.norm_fn is _doubled_norms
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (copied_model, copied)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), copied_model.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    lost = copy.deepcopy(copied_model)  # the same state stepped without the hook moves elsewhere
    plain = LARS(lost.parameters(), lr=0.1, momentum=0.9)
    plain.load_state_dict(copied.state_dict())
    for m, o in ((copied_model, copied), (lost, plain)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert not torch.equal(lost.weight, copied_model.weight)
    assert "norm_fn" not in LARS(model.parameters()).__getstate__()  # nothing added without a hook


# ----------------------------------------------------------------------------------------------------------------
# lars_param_groups and lazy modules
# ----------------------------------------------------------------------------------------------------------------
def test_lars_param_groups_refuses_an_uninitialized_lazy_parameter() -> None:
    """An uninitialized parameter reports ``ndim == 1`` whatever its final shape: nn.LazyLinear's weight used to go
    to the non-adapted group (ratio 1, no weight decay) and stay there once it became a 2-D weight."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"'2\.weight' is uninitialized .*forward pass"):
        lars_param_groups(model)
    # Excluded by name, or without the 1-D rule, its shape is not needed.
    groups = lars_param_groups(model, exclude=("2.*",))
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [len(g["params"]) for g in lars_param_groups(model, exclude_1d=False)] == [4]
    model(torch.randn(3, 4))  # materialized: the weight is 2-D and adapted
    groups = lars_param_groups(model)
    assert groups[0]["params"] == [model[0].weight, model[2].weight]


# ----------------------------------------------------------------------------------------------------------------
# exact_step_adam: argument handling before the costly estimate
# ----------------------------------------------------------------------------------------------------------------
def _mlp() -> tuple[nn.Module, tuple[Tensor, Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, (torch.randn(16, 4), torch.randint(0, 3, (16,)))


@pytest.fixture
def no_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if exact_step_adam reaches the K_hat estimate."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the estimate ran before the argument was refused")

    monkeypatch.setattr(exact_adam_module, "smoothness", forbidden)


@pytest.mark.parametrize("data", [None, 3, torch.randn(16, 4)], ids=["None", "int", "tensor"])
@pytest.mark.usefixtures("no_estimate")
def test_exact_step_adam_refuses_data_that_is_no_batches_with_a_value_error(data: Any) -> None:
    """``data=None`` used to raise ``TypeError: 'NoneType' object is not iterable`` from ``list(data)``."""
    model, _ = _mlp()
    with pytest.raises(ValueError, match=r"^data must be an \(inputs, targets\) pair or an iterable"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.usefixtures("no_estimate")
def test_exact_step_adam_refuses_a_non_finite_initial_loss_before_the_estimate(bad: float) -> None:
    """An infinite L(w0) passed the ``L(w0) > L(w*)`` check and the estimate then failed in ``linalg.eigh``
    (``_LinAlgError``) after its whole cost; a NaN one was reported as a final_loss problem."""
    model, data = _mlp()

    def loss_fn(out: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out, target) * bad

    with pytest.raises(ValueError, match=r"initial loss L\(w0\) on data is (inf|nan).*finite"):
        exact_step_adam(model, loss_fn, data, total_steps=10, num_samples=1)


@pytest.mark.usefixtures("no_estimate")
def test_exact_step_adam_checks_the_optimizer_arguments_before_the_estimate() -> None:
    """A bad optimizer argument used to fail only when the optimizer was built, after the estimate of K_hat."""
    model, data = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="beta"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1, betas=(0.9, 2.0))
    with pytest.raises(TypeError, match="unexpected keyword"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1, nesterov=True)
    with pytest.raises(ValueError, match=r"^params must not be given"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1, params=[])
    with pytest.raises(ValueError, match=r"^estimate_kwargs must be a mapping"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1, estimate_kwargs=[1])
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


def test_exact_step_adam_still_takes_good_optimizer_arguments() -> None:
    model, data = _mlp()
    opt, step = exact_step_adam(
        model, nn.CrossEntropyLoss(), data, total_steps=10, num_samples=1, betas=(0.8, 0.9), foreach=False
    )
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["foreach"] is False and group["lr"] == step.alpha
    assert [p for g in opt.param_groups for p in g["params"]] == list(model.parameters())
