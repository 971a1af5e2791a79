"""The lab's entry points refuse bad input early, by name (found by a review feeding every public function odd
values): before, these failed deep inside with raw errors, late, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from theorylr.lab import compare
from theorylr.lab.range_test import lr_range_test
from theorylr.lab.rules import resolve_rule
from theorylr.lab.runner import evaluate, parse_seeds
from theorylr.lab.suggest import suggest


@pytest.fixture
def tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), (torch.randn(16, 4), torch.randint(0, 3, (16,)))


@pytest.mark.parametrize("seeds", [[1.5, 2.7], [0, 1.0], (2**64,)])
def test_listed_seeds_must_be_integers_in_range(seeds: list[float]) -> None:
    """``[1.5, 2.7]`` ran seeds 1 and 2."""
    with pytest.raises(ValueError, match=r"seeds\[\d\] must be an integer >= 0"):
        parse_seeds(seeds)


def test_seeds_that_are_neither_a_count_nor_a_list_are_refused() -> None:
    with pytest.raises(ValueError, match="seeds must be a count or a list of integers"):
        parse_seeds(2.5)


def test_evaluate_checks_its_batch_size(tiny: tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]) -> None:
    from theorylr.lab.losses import get_loss

    model, (x, y) = tiny
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate(model, get_loss("cross_entropy"), x, y, batch_size=0)


def test_compare_checks_its_arguments_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="start_method must be one of"):
        compare("iris-softmax", "adam", out=out, epochs=1, jobs=2, start_method="bogus", verbose=False)
    with pytest.raises(ValueError, match=r"rules must be rule names or Rule objects \(got 3\)"):
        compare("iris-softmax", [3], out=out, epochs=1, verbose=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="workload must be a workload name or a Workload"):
        compare(None, "adam", out=out, epochs=1, verbose=False)  # type: ignore[arg-type]
    assert not out.exists()
    with pytest.raises(ValueError, match="rule spec must be a string"):
        resolve_rule(None)  # type: ignore[arg-type]


def test_range_test_checks_its_inputs(tiny: tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]) -> None:
    model, batch = tiny
    loss = nn.functional.cross_entropy
    with pytest.raises(ValueError, match="batches must hold at least one"):
        lr_range_test(model, loss, [], torch.optim.SGD)
    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Module"):
        lr_range_test(None, loss, [batch], torch.optim.SGD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="optimizer_factory must be a callable"):
        lr_range_test(model, loss, [batch], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        lr_range_test(model, None, [batch], torch.optim.SGD)  # type: ignore[arg-type]


def test_suggest_checks_range_test_options_and_sampler_before_estimating(
    tiny: tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad option value failed only after every estimate had run; a non-mapping failed inside ``dict()``; a
    sampler that is not callable was ignored for ``optimizer='sgd'``."""
    import theorylr.lab.suggest as module

    def no_estimates(*args: object, **kwargs: object) -> None:
        raise AssertionError("the arguments are checked before any estimate")

    monkeypatch.setattr(module, "as_batches", no_estimates)
    model, batch = tiny
    common = {"total_steps": 10, "range_test": True}
    with pytest.raises(ValueError, match=r"start_lr must be a finite number > 0\.0"):
        suggest(model, nn.CrossEntropyLoss(), [batch], range_test_options={"start_lr": -1.0}, **common)
    with pytest.raises(ValueError, match="range_test_options must be a mapping"):
        suggest(model, nn.CrossEntropyLoss(), [batch], range_test_options="x", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sampler must be None or a callable"):
        suggest(model, nn.CrossEntropyLoss(), [batch], optimizer="sgd", sampler="x", total_steps=10)  # type: ignore[arg-type]


def test_seed_strings_past_torchs_range_and_huge_counts_are_refused() -> None:
    """``"0,18446744073709551616"`` (what the CLI passes) was accepted and the run failed in torch."""
    with pytest.raises(ValueError, match="seeds must be integers <= 9223372036854775807"):
        parse_seeds("0,18446744073709551616")
    with pytest.raises(ValueError, match="seeds must be an integer >= 1 and <= 10000"):
        parse_seeds("1000000000000")  # a count: a list of that many seeds
    assert parse_seeds("0,9223372036854775807") == [0, 2**63 - 1]


def test_a_rule_setup_records_its_info_as_an_object() -> None:
    """A list as ``info`` was written to meta.json's "setup", which the reader then refused: the run was redone at
    every resume."""
    from theorylr.lab.rules import RuleSetup

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="info must be a dict"):
        RuleSetup(opt, info=["chosen"])  # type: ignore[arg-type]
