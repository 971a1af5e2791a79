"""``theorylr suggest`` with 16-bit models, and the ``grad_norm_samples`` cap of ``build_inputs``: two gaps an earlier
review listed as untested."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from theorylr.commands.suggest import build_inputs
from theorylr.lab import WORKLOADS, get_workload
from theorylr.lab.suggest import suggest
from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import softmax_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_model_rows_equal_the_float32_computation_on_its_activations(dtype: torch.dtype) -> None:
    # ReLU activations of inputs of size ~30: sum(a^2) is about 2e6, past float16's largest finite value (65504), so a
    # sum of squares taken in float16 would give K_z = inf and a learning rate of 0.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).to(dtype)
    x = (30 * torch.randn(200, 8)).to(dtype)
    y = torch.randint(0, 3, (200,))
    with torch.no_grad():
        a = torch.relu(model[0](x)).float()  # the last Linear's input, as the model computed it, then widened
    assert not torch.isfinite((a.to(torch.float16) ** 2).sum())

    s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10)

    paper = s.row("lipschitz-paper")
    assert paper.quantities["K_z"] == pytest.approx(float(a.norm()), rel=1e-6)
    assert paper.lr == pytest.approx(1.0 / softmax_cross_entropy(float(a.norm()), 200, 3), rel=1e-6)
    rigorous = s.row("lipschitz-rigorous")
    bound = float(gradient_norm_bound(a, "softmax", num_classes=3, targets=y, bias=True))
    assert rigorous.lr == pytest.approx(1.0 / bound, rel=1e-6)
    assert next(model.parameters()).dtype == dtype  # the model is left in its own precision


@pytest.fixture
def capped_digits():
    name = "digits-mlp-capped-for-test"
    WORKLOADS[name] = dataclasses.replace(get_workload("digits-mlp"), name=name, grad_norm_samples=100)
    try:
        yield name
    finally:
        del WORKLOADS[name]


def test_build_inputs_takes_the_workloads_grad_norm_samples_cap_unless_examples_is_given(capped_digits) -> None:
    def examples(inputs: dict) -> int:
        return sum(int(xb.shape[0]) for xb, _ in inputs["batches"])

    capped = build_inputs(capped_digits)
    assert examples(capped) == 100
    full = build_inputs("digits-mlp")  # no cap: every training example
    n_train = examples(full)
    assert n_train > 1000
    assert examples(build_inputs(capped_digits, examples=40)) == 40  # --examples overrides the cap
    assert examples(build_inputs(capped_digits, examples=10**6)) == n_train  # and is clipped to the data
    # the first examples, in order
    torch.testing.assert_close(capped["batches"][0][0], full["batches"][0][0][: capped["batches"][0][0].shape[0]])
    # T still counts the steps of the capped workload's own training (all examples), not of the capped slice
    assert capped["total_steps"] == full["total_steps"]
