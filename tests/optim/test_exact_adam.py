"""exact_step_adam: an Adam whose lr is the paper's formula applied to measured L(w0) and K_hat."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from tests.estimate._reference import assert_same_state, classification_data, mlp, state_snapshot
from theorylr.estimate import smoothness
from theorylr.optim.exact_adam import ExactStep, exact_step_adam
from theorylr.theory.adam import constant_step


def test_returns_adam_with_the_formula_lr() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    before = state_snapshot(model)
    opt, step = exact_step_adam(model, nn.CrossEntropyLoss(), (x, y), 250, num_samples=3, seed=2)
    assert_same_state(model, before)
    assert type(opt) is torch.optim.Adam
    assert [p for g in opt.param_groups for p in g["params"]] == list(model.parameters())
    with torch.no_grad():
        loss0 = float(nn.CrossEntropyLoss()(model(x), y))
    est = smoothness(model, nn.CrossEntropyLoss(), (x, y), num_samples=3, seed=2)
    assert step.initial_loss == pytest.approx(loss0, rel=1e-12)
    assert step.smoothness == est and step.k_hat == est.k_hat
    assert step.alpha == constant_step(step.initial_loss, step.k_hat, 250)
    assert step.alpha == pytest.approx(math.sqrt(2 * loss0 / (est.k_hat * 250)), rel=1e-12)  # by hand
    assert all(g["lr"] == step.alpha for g in opt.param_groups)
    assert step.total_steps == 250 and step.final_loss == 0.0


def test_mini_batch_data_and_a_custom_optimizer() -> None:
    model, (x, y) = mlp(nn.Tanh), classification_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10, shuffle=True)
    opt, step = exact_step_adam(
        model,
        nn.CrossEntropyLoss(),
        loader,
        total_steps=30,
        num_samples=2,
        optimizer_class=torch.optim.AdamW,
        betas=(0.8, 0.9),
        weight_decay=0.0,
        final_loss=0.1,
        estimate_kwargs={"tol": 1e-3},
    )
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    with torch.no_grad():
        loss0 = float(nn.CrossEntropyLoss()(model(x), y))
    assert step.initial_loss == pytest.approx(loss0, rel=1e-12)  # batch-size weights over 10 + 10 + 4 samples
    assert step.alpha == pytest.approx(math.sqrt(2 * (loss0 - 0.1) / (step.k_hat * 30)), rel=1e-12)
    assert opt.param_groups[0]["lr"] == step.alpha


def test_to_dict_is_json() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    _, step = exact_step_adam(model, nn.CrossEntropyLoss(), data, 10, num_samples=2)
    assert isinstance(step, ExactStep)
    d = json.loads(json.dumps(step.to_dict()))
    assert d["alpha"] == step.alpha and d["k_hat"] == step.k_hat and len(d["smoothness"]["samples"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"total_steps": 0}, "total_steps"),
        ({"num_samples": 0}, "num_samples"),
        ({"lr": 1e-3}, "lr"),
        ({"optimizer_class": object}, "optimizer_class"),
        ({"estimate_kwargs": {"seed": 3}}, "estimate_kwargs"),
        ({"final_loss": float("inf")}, "final_loss"),
        ({"final_loss": 100.0}, "initial_loss"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], name: str) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    args: dict[str, object] = {"total_steps": 10, "num_samples": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, **args)  # type: ignore[arg-type]


def test_a_final_loss_above_the_initial_loss_is_refused_before_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.optim.exact_adam as module

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("smoothness ran")

    monkeypatch.setattr(module, "smoothness", never)
    model, data = mlp(nn.Tanh), classification_data()
    with pytest.raises(ValueError, match="final_loss must be below initial_loss"):
        exact_step_adam(model, nn.CrossEntropyLoss(), data, 10, final_loss=100.0)


def test_a_loss_without_curvature_is_refused_with_the_reason() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.sign(torch.randn(16, 1))

    def hinge(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.relu(1 - out * target).mean()

    with pytest.raises(ValueError, match=r"K_hat = 0.0: .* needs K_hat > 0.*piecewise-linear"):
        exact_step_adam(model, hinge, (x, y), 10, num_samples=2)


def test_review_edges_of_exact_step_adam() -> None:
    """Inputs and outputs a user trips on: (x, y, extra) batches and dict batches get errors that say what to
    pass; a NumPy T serialises; params= trains what the estimate covered; an unconverged estimate warns."""
    import warnings

    import numpy as np

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    loss = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"tuple of 3 items \(e\.g\. \(x, y, extra\)\)"):
        exact_step_adam(model, loss, (x, y, torch.zeros(24)), 10, num_samples=1)
    with pytest.raises(ValueError, match=r"dict with keys \['x', 'y'\]"):
        exact_step_adam(model, loss, [{"x": x, "y": y}], 10, num_samples=1)
    head = [model[2].weight, model[2].bias]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        opt, step = exact_step_adam(
            model, loss, (x, y), np.int64(10), num_samples=1, estimate_kwargs={"params": iter(head)}
        )
    assert json.loads(json.dumps(step.to_dict()))["total_steps"] == 10
    assert [p for g in opt.param_groups for p in g["params"]] == head  # the parameters the estimate covered
    opt, _ = exact_step_adam(model, loss, (x, y), 10, num_samples=1, estimate_kwargs={"params": None})
    assert [p for g in opt.param_groups for p in g["params"]] == list(model.parameters())  # None: all of them
    with pytest.warns(RuntimeWarning, match="did not converge within max_matvecs"):
        exact_step_adam(model, loss, (x, y), 10, num_samples=1, estimate_kwargs={"max_matvecs": 2, "tol": 1e-12})


def test_a_compiled_model_gets_a_hint_instead_of_a_bare_double_backward_error() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    compiled = torch.compile(model, backend="aot_eager")
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    with pytest.raises(RuntimeError, match="backend='forward_over_reverse'"):
        exact_step_adam(compiled, nn.CrossEntropyLoss(), (x, y), 10, num_samples=1)


def test_a_16_bit_model_that_cannot_reach_tol_is_told_so() -> None:
    """A bfloat16 model's products resolve no residual below about 2**-7: the estimate cannot reach the default
    tol 1e-4 and the warning names the dtype and what to do (it named max_matvecs alone)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(torch.bfloat16)
    data = (torch.randn(32, 6).to(torch.bfloat16), torch.randint(0, 3, (32,)))
    with pytest.warns(RuntimeWarning, match=r"the model is torch\.bfloat16.*tol above it"):
        _, step = exact_step_adam(model, nn.CrossEntropyLoss(), data, total_steps=100, num_samples=1)
    assert math.isfinite(step.alpha) and step.alpha > 0
