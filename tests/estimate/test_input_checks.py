"""The estimators refuse bad input early, by name (found by a review feeding every public function odd values)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.estimate import data_loss, hessian_spectral_norm, hvp, lanczos, power_iteration, smoothness
from theorylr.estimate.hvp import default_backend, default_graph_budget
from theorylr.estimate.smoothness import reset_parameters_sampler
from theorylr.optim.exact_adam import exact_step_adam

DATA = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
MODULE = r"model must be a torch\.nn\.Module \(got NoneType\)"


def test_every_estimator_names_a_model_that_is_not_a_module() -> None:
    """``hessian_spectral_norm(None, ...)`` and its siblings raised "'NoneType' object has no attribute ...";
    ``hvp`` and ``HessianOperator`` already named the argument."""
    loss = nn.CrossEntropyLoss()
    for call in (
        lambda: hessian_spectral_norm(None, loss, DATA),  # type: ignore[arg-type]
        lambda: smoothness(None, loss, DATA, num_samples=1),  # type: ignore[arg-type]
        lambda: data_loss(None, loss, DATA),  # type: ignore[arg-type]
        lambda: exact_step_adam(None, loss, DATA, total_steps=10),  # type: ignore[arg-type]
        lambda: reset_parameters_sampler(None, torch.Generator()),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match=MODULE):
            call()


def test_solvers_name_a_matvec_that_is_not_callable() -> None:
    v0 = torch.ones(3)
    for solver in (lanczos, power_iteration):
        with pytest.raises(ValueError, match="matvec must be a callable"):
            solver(None, v0)  # type: ignore[arg-type]


def test_hvp_names_a_vector_that_is_no_sequence_and_a_bad_device() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="vector must be a flat tensor or a sequence of tensors"):
        hvp(model, nn.CrossEntropyLoss(), DATA, None)  # type: ignore[arg-type]
    for call in (default_backend, default_graph_budget):
        with pytest.raises(ValueError, match=r"device must be a torch\.device or a device string"):
            call("gpu")


def test_the_sampler_names_a_generator_of_another_kind() -> None:
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator"):
        reset_parameters_sampler(nn.Linear(2, 2), None)  # type: ignore[arg-type]
