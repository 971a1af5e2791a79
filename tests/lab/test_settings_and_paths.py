"""The lab's settings and paths: the data cache per dtype, rule options of ``NAME@LR``, reports that refuse to mix
runs of other settings, the command line on the reproduction page, ``~`` in path options, an empty workload name."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.lab.conftest import TINY
from theorylr.cli import main
from theorylr.lab import compare, get_workload, load_runs, report, resolve_rule
from theorylr.lab import runner as runner_module
from theorylr.lab._files import read_json
from theorylr.lab.results import check_consistent

IRIS = dataclasses.replace(get_workload("iris-softmax"), epochs=2)


def test_the_data_cache_keeps_float32_and_float64_workloads_apart() -> None:
    """A float64 workload on the same dataset as a float32 one got the float32 copy (scaled in float32)."""
    iris64 = dataclasses.replace(IRIS, name="iris-softmax-64", dtype="float64")
    saved = dict(runner_module._DATA_CACHE)
    runner_module._DATA_CACHE.clear()
    try:
        assert runner_module._load_data(IRIS, None).x_train.dtype == torch.float32
        data64 = runner_module._load_data(iris64, None)
        assert data64.x_train.dtype == torch.float64
        assert torch.equal(data64.x_train, iris64.load_data(None).x_train)
    finally:
        runner_module._DATA_CACHE.clear()
        runner_module._DATA_CACHE.update(saved)


def test_a_fixed_lr_variant_keeps_the_workloads_other_options_for_its_rule() -> None:
    """``NAME@LR`` lost every ``rule_options`` entry of NAME (e.g. exact-adam's num_samples), not only the lr."""
    workload = dataclasses.replace(
        TINY, rule_options={"exact-adam": {"num_samples": 2, "lr": 0.5}, "lars": {"lr": 0.05, "momentum": 0.5}}
    )
    assert workload.options_for("exact-adam@1") == {"num_samples": 2}  # the spec's lr, not the workload's
    assert workload.options_for("lars@0.2") == {"momentum": 0.5}
    assert workload.options_for("exact-adam") == {"num_samples": 2, "lr": 0.5}
    # options given for the variant itself still apply (the reproduction's weight decay on 'sgd@0.01')
    custom = dataclasses.replace(TINY, rule_options={"sgd": {"momentum": 0.9}, "sgd@0.01": {"weight_decay": 1e-3}})
    assert custom.options_for("sgd@0.01") == {"momentum": 0.9, "weight_decay": 1e-3}
    cells = runner_module.plan_cells(workload, [resolve_rule("lars@0.2")], [0], 1, 1)
    assert cells[0].lr == 0.2


def test_exact_adam_at_a_multiplier_uses_the_workloads_num_samples(tmp_path: Path) -> None:
    compare(TINY, "exact-adam@1", out=tmp_path, epochs=1, verbose=False)
    meta = read_json(tmp_path / TINY.name / "exact-adam@1" / "trial-00" / "seed-0" / "meta.json")
    assert meta["setup"]["exact_step"]["smoothness"]["num_samples"] == 2


@pytest.fixture(scope="module")
def two_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two results directories of the same workload under one parent: other --trials and --epochs."""
    root = tmp_path_factory.mktemp("parent")
    compare(IRIS, "sgd", out=root / "a", trials=2, epochs=2, verbose=False)
    compare(IRIS, "sgd", out=root / "b", trials=3, epochs=3, verbose=False)
    return root


def test_a_report_refuses_to_mix_two_results_directories(two_results: Path) -> None:
    """The report of their parent took both seed-0 runs of each trial as two seeds (other lrs, other budgets)."""
    with pytest.raises(ValueError, match="seed 0 on iris-softmax"):
        report(two_results, figures=False)
    assert not (two_results / "report.md").exists()
    assert report(two_results / "a", figures=False).markdown.exists()  # each on its own is fine


def test_a_report_refuses_seeds_of_one_trial_with_other_settings(tmp_path: Path) -> None:
    """Seeds added later with another --epochs (or --trials) landed in one median without a word."""
    compare(IRIS, "sgd@0.1", out=tmp_path, epochs=2, verbose=False)
    compare(IRIS, "sgd@0.1", out=tmp_path, epochs=3, seeds=[1], verbose=False)
    with pytest.raises(ValueError, match=r"different configurations \(epochs differ\)"):
        check_consistent(load_runs(tmp_path))


def test_compare_report_prints_the_mixed_results_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``compare --report`` caught only OSError from the report: a ValueError was a traceback."""
    base = ["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--out", str(tmp_path), "--quiet"]
    assert main([*base, "--epochs", "2"]) == 0
    assert main([*base, "--epochs", "3", "--seeds", "1,", "--report"]) == 2
    assert "theorylr compare: error: the report:" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--no-figures"]) == 2


def test_reproduce_shows_the_command_main_was_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The page showed ``sys.argv[2:]``: called as ``main([...])`` from another program, that program's arguments."""
    import theorylr.lab.reproduce as reproduce_module

    seen: dict[str, object] = {}

    def fake_reproduce(target: str, out: str, **kwargs: object) -> SimpleNamespace:
        seen.update(kwargs)
        return SimpleNamespace(results=[], markdown=Path(out) / "R.md", html=Path(out) / "R.html", wall_time=0.0)

    monkeypatch.setattr(reproduce_module, "reproduce", fake_reproduce)
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests/lab"])
    out = str(tmp_path / "my runs")
    assert main(["reproduce", "lars", "--quick", "--out", out]) == 0
    assert seen["command"] == f"theorylr reproduce lars --quick --out '{out}'"


def test_path_options_expand_a_leading_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--out=~/runs`` (which the shell leaves alone) created a directory named '~' in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--workload", "iris-softmax", "--rules", "sgd@0.1", "--epochs", "1", "--out=~/runs"]) == 0
    assert (tmp_path / "home" / "runs" / "iris-softmax" / "compare.json").exists()
    assert not (tmp_path / "~").exists()
    assert main(["report", "~/runs", "--no-figures", "--out=~/rep"]) == 0
    assert (tmp_path / "home" / "rep" / "report.md").exists()


def test_an_empty_workload_name_is_an_error_not_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--workload ""`` (an unset shell variable) silently ran the default digits-mlp comparison."""
    args = ["--rules", "sgd@0.1", "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet"]
    assert main(["compare", "--workload", "", *args]) == 2
    assert "workload must be one of" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "digits-mlp").exists()
    assert main(["suggest", "--workload", "", "--num-samples", "1"]) == 2
    assert "workload must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["lenet5", "vgg9", "lipschitz_cnn"])
def test_image_models_are_built_for_the_workloads_image_side(model: str) -> None:
    """Every registered model whose first Linear depends on the image side gets the workload's side: VGG-9 on
    digits resized to 28 x 28 was built for 32 x 32 and failed in its first forward pass."""
    import torch

    from theorylr.lab.workloads import Workload

    workload = Workload(
        "w", "d", "digits", model, "cross_entropy", dataset_options={"image": True, "resize": 20}, batch_size=8
    )
    data = workload.load_data()
    net = workload.build_model(data, torch.Generator().manual_seed(0))
    assert net(data.x_train[:2]).shape == (2, 10)


def test_register_workload_takes_rule_options_for_a_fixed_lr_variant() -> None:
    """``rule_options`` keyed ``NAME@LR`` (which :meth:`Workload.options_for` reads) are accepted by
    ``register_workload``; an unknown rule, or ``@LR`` on a rule that takes none, is still refused."""
    from theorylr.lab.workloads import WORKLOADS, Workload, register_workload

    options = {"exact-adam": {"num_samples": 2}, "exact-adam@1": {"mode": "train"}}
    workload = Workload("iris-at-lr", "d", "iris", "linear", "cross_entropy", rule_options=options)
    try:
        register_workload(workload)
        assert WORKLOADS["iris-at-lr"].options_for("exact-adam@1") == {"num_samples": 2, "mode": "train"}
    finally:
        WORKLOADS.pop("iris-at-lr", None)
    for bad in ("no-such-rule", "no-such-rule@1", "sgd-range-test@0.1", "sgd@fast"):
        with pytest.raises(ValueError, match="rule_options names no rule"):
            register_workload(Workload("w-bad", "d", "iris", "linear", "cross_entropy", rule_options={bad: {}}))
    assert "w-bad" not in WORKLOADS
