"""Tiny workloads for the lab's tests (a few milliseconds per epoch on one core)."""

from __future__ import annotations

from pathlib import Path

import pytest

from theorylr.lab import Target, Workload
from theorylr.lab.results import Run

# Mini-batches (3 per epoch) so that per-step and per-epoch schedules, shuffling and the last partial batch are
# all exercised; an MLP so that LipschitzLR's penultimate layer is a hidden layer.
TINY = Workload(
    name="tiny-wine-mlp",
    description="wine, MLP 13-8-3, batch 48 (tests)",
    dataset="wine",
    model="mlp",
    model_options={"hidden": (8,)},
    loss="cross_entropy",
    batch_size=48,
    epochs=2,
    target=Target("train_accuracy", 0.6),
    rule_options={"exact-adam": {"num_samples": 2}, "adam-range-test": {"num_steps": 10}},
)

# Dropout draws from torch's global RNG every step: resuming must restore it.
TINY_DROPOUT = Workload(
    name="tiny-wine-dropout",
    description="wine, MLP 13-16-3 with dropout 0.3, batch 32 (tests)",
    dataset="wine",
    model="mlp",
    model_options={"hidden": (16,), "dropout": 0.3},
    loss="cross_entropy",
    batch_size=32,
    epochs=4,
)

# Full batch, logistic regression with BCE: the other closed form.
TINY_BINARY = Workload(
    name="tiny-cancer-logreg",
    description="breast cancer, logistic regression, full batch (tests)",
    dataset="breast_cancer",
    model="linear",
    loss="bce",
    epochs=3,
    target=Target("test_accuracy", 0.9),
)


@pytest.fixture
def tiny() -> Workload:
    return TINY


@pytest.fixture
def tiny_dropout() -> Workload:
    return TINY_DROPOUT


def hand_run(rows: list[dict], status: str = "finished", trial: int = 0, seed: int = 0) -> Run:
    """A run made by hand, for the scores' tests: workload ``w`` (tuned on train_loss, target test accuracy 0.9),
    tuned rule ``r`` at lr ``0.1 * (trial + 1)``, the given metric rows."""
    config = {
        "workload": {"name": "w", "tuning_metric": "train_loss", "target": {"metric": "test_accuracy", "value": 0.9}},
        "rule": {"name": "r", "kind": "tuned", "search": {"low": 0.1, "high": 1.0}},
        "trial": trial,
        "seed": seed,
        "lr": 0.1 * (trial + 1),
        "epochs": len(rows) - 1,
    }
    return Run(Path("."), config, {"status": status}, rows)
