"""``theorylr reproduce lars``'s Fig. 3 (full form, CIFAR-10 files): the rules it runs and the figure it writes, with
the lab's runs replaced by hand-made ones (a ResNet-20 run is far too long for a test)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.lab.test_reproduce_evidence import _Run, _Summary
from theorylr.lab.reproduce import HOLDS, QUICK
from theorylr.lab.reproduce import lars as lr_
from theorylr.lab.reproduce._common import Context
from theorylr.lab.rules import Rule


def test_fig3_runs_sgd_and_lars_with_the_same_momentum_and_the_papers_learning_rates() -> None:
    """§6.1: LARS reuses TensorFlow's MomentumOptimizer, one per variable; §6.3: only the optimizer of TensorFlow's
    CIFAR-10 ResNet (momentum 0.9 SGD at 0.1) was swapped. Fig. 3 ran plain SGD and momentum-free LARS."""
    workload, rules = lr_.fig3_setup()
    assert lr_.FIG3_MOMENTUM == 0.9
    assert workload.name == "lars-cifar10-resnet20" and workload.model == "resnet20" and workload.batch_size == 128
    sgd, adam, lars = rules["sgd"], rules["adam"], rules["lars"]
    assert sgd.defaults["optimizer"] == "sgd" and sgd.defaults["momentum"] == lr_.FIG3_MOMENTUM
    assert sgd.defaults["lr"] == 0.1
    assert adam.defaults["lr"] == 0.005 and adam.defaults["optimizer"] == "adam"
    assert lars.name == "lars" and lars.defaults.get("momentum", 0.0) == 0.0  # the rule itself is eq. (1) ...
    lars_options = {**lars.defaults, **workload.options_for(lars.name)}
    assert lars_options["lr"] == 0.001 and lars_options["momentum"] == lr_.FIG3_MOMENTUM  # ... the workload adds it
    assert lars_options["optimizer"] == "LARS"


def _trained(final_accuracy: float, early_accuracy: float) -> _Summary:
    run = _Run([2.3, 1.0, 0.5, 0.1], lr=0.1)
    run._columns["epoch"] = np.array([0.0, 1.0, 2.0, 3.0])
    run._columns["step"] = np.array([0.0, 3000.0, 6000.0, 9000.0])
    run._columns["train_accuracy"] = np.array([0.1, early_accuracy, 0.9, final_accuracy])
    return _Summary(run)


def test_fig3_writes_its_own_figure_and_leaves_fig2s_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fig. 3 drew its curves with Fig. 2's plotting function, which saved to fig2_convex.png: in the full form with
    CIFAR-10 files, Fig. 3 overwrote Fig. 2's figure (title and all), and both claims linked to the ResNet plot."""
    scale = dataclasses.replace(QUICK, lars=dataclasses.replace(QUICK.lars, full_only=True))
    ctx = Context(tmp_path, scale, data_dir=str(tmp_path), verbose=False)
    fig2 = lr_._plot_fig2(ctx, [("SVM", {"gd": _trained(0.9, 0.5)})])
    assert fig2 is not None and fig2.name == "fig2_convex.png"
    fig2_bytes = fig2.read_bytes()

    ran: dict[str, Any] = {}

    def run_rules(workload: Any, rules: list[Rule], *, epochs: int) -> dict[str, _Summary]:
        ran.update(workload=workload, rules=[r.name for r in rules], epochs=epochs)
        accuracies = {"momentum@0.1": (0.985, 0.6), "adam@0.005": (0.97, 0.8), "lars": (0.987, 0.55)}
        return {r.name: _trained(*accuracies[r.name]) for r in rules}

    monkeypatch.setattr(ctx, "dataset_problem", lambda dataset: None)
    monkeypatch.setattr(ctx, "run_rules", run_rules)
    claim, figures = lr_._fig3(ctx)

    assert ran["rules"] == ["momentum@0.1", "adam@0.005", "lars"] and ran["epochs"] == scale.lars.resnet_epochs
    assert ran["workload"].options_for("lars")["momentum"] == lr_.FIG3_MOMENTUM
    assert claim.verdict == HOLDS
    assert claim.values["train_error"] == pytest.approx({"sgd": 0.015, "adam": 0.03, "lars": 0.013})
    assert [f for f, _ in figures] == claim.figures == ["figures/fig3_resnet.png"]
    assert (tmp_path / "figures" / "fig3_resnet.png").is_file()
    assert fig2.read_bytes() == fig2_bytes  # Fig. 2's figure is untouched
    assert "momentum 0.9" in claim.setting
