"""exact_step_adam passes its ``mode`` and ``reduce`` to the measurement of ``L(w0)`` too, not only to ``K_hat``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.estimate._reference import classification_data, mlp
from theorylr.estimate import data_loss
from theorylr.optim.exact_adam import exact_step_adam

F64 = torch.float64


def _dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Tanh(), nn.Linear(16, 3)).to(F64)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(32, 4, generator=gen, dtype=F64), torch.randint(0, 3, (32,), generator=gen)


def test_train_mode_measures_the_initial_loss_in_train_mode() -> None:
    """Step 1 of the docstring: ``L(w0)`` is ``data_loss(model, loss_fn, data)`` *in ``mode``*.

    With dropout active (``mode="train"``) the loss differs from the eval-mode one, so the test can tell them apart;
    ``alpha`` is then ``sqrt(2 L_train(w0) / (K_hat T))``.
    """
    model, data = _dropout_model(), _data()
    loss_fn = nn.CrossEntropyLoss()
    train_loss = data_loss(model, loss_fn, data, mode="train")
    eval_loss = data_loss(model, loss_fn, data, mode="eval")
    assert abs(train_loss - eval_loss) > 1e-3  # dropout matters here
    _, step = exact_step_adam(model, loss_fn, data, total_steps=100, num_samples=2, mode="train")
    assert step.initial_loss == pytest.approx(train_loss, rel=1e-12)
    assert step.alpha == pytest.approx(math.sqrt(2 * train_loss / (step.k_hat * 100)), rel=1e-12)


def test_reduce_applies_to_the_initial_loss() -> None:
    r"""A ``reduce`` that doubles (an all-reduce sum over two equal ranks without the division), on a hand case.

    Model ``z = w x`` (``nn.Linear(1, 1, bias=False)``) at ``w0 = 0``, one example ``x = 1``, ``y = 2``, MSE loss:
    the local loss is ``(0 - 2)^2 = 4``, reduced ``8``. The loss ``(w - 2)^2`` has Hessian ``2`` at every ``w`` (so
    at every sampled weight), and ``reduce`` doubles each Hessian-vector product: ``K_hat = 4``. With ``T = 100``
    the paper's step is ``alpha = sqrt(2 L(w0) / (K_hat T)) = sqrt(2 * 8 / (4 * 100)) = 0.2`` (with an unreduced
    ``L(w0) = 4`` it would be ``sqrt(0.02) = 0.1414``).
    """
    model = nn.Linear(1, 1, bias=False).to(F64)
    with torch.no_grad():
        model.weight.zero_()
    data = (torch.ones(1, 1, dtype=F64), torch.full((1, 1), 2.0, dtype=F64))

    def double(t: torch.Tensor) -> torch.Tensor:
        return 2 * t

    opt, step = exact_step_adam(
        model, nn.MSELoss(), data, total_steps=100, num_samples=2, estimate_kwargs={"reduce": double}
    )
    assert step.initial_loss == pytest.approx(8.0, rel=1e-12)
    assert step.initial_loss == pytest.approx(double(torch.tensor(data_loss(model, nn.MSELoss(), data))).item())
    assert step.k_hat == pytest.approx(4.0, rel=1e-9)
    assert step.alpha == pytest.approx(0.2, rel=1e-9)
    assert opt.param_groups[0]["lr"] == step.alpha


def test_exact_step_adam_names_an_estimate_keyword_given_to_the_optimizer() -> None:
    """``sampler=`` (which the warning above used to ask for) reached Adam as an unexpected keyword."""
    model = mlp(nn.Tanh)
    with pytest.raises(
        ValueError,
        match=r"sampler: keyword\(s\) of the smoothness estimate, not of Adam; pass "
        r"estimate_kwargs=\{'sampler': ...\}",
    ):
        exact_step_adam(model, nn.CrossEntropyLoss(), classification_data(), total_steps=10, sampler=lambda m, g: None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):  # others: the optimizer's own error
        exact_step_adam(model, nn.CrossEntropyLoss(), classification_data(), total_steps=10, bogus=1)
