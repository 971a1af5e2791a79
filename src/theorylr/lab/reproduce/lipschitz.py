r"""Reproduction of Yedida & Saha, *LipschitzLR: Using theoretically computed adaptive learning rates for fast
convergence* (Yedida & Saha): Tables 1-3, Fig. 3, and the paper's constants against rigorous bounds.

* **Table 1** (§7.1) -- epochs of full-batch gradient descent until the training loss falls below a threshold
  ``T_L``, with ``lr = 0.1`` and with ``lr = 1/L``, on the embedded sets: breast cancer (logistic regression) and
  iris (softmax regression) as in the paper, diabetes in place of Boston housing (least squares), digits and wine as
  extra rows. As in §7.1, an intercept column of ones is appended and every column is scaled to sum to 1 over the
  data set; ``L`` is the paper's closed form (:mod:`theorylr.lipschitz.closed_form`), and ``1/B`` from the rigorous
  :func:`theorylr.lipschitz.bounds.gradient_norm_bound` is run beside it. These runs need up to 10^5-10^6 tiny
  steps with a stopping rule, so they are a vectorised float64 loop here (the lab's runner writes a checkpoint
  every epoch), with the loss curve saved to ``analytic/table1.json``.
* **Table 2** (§7.2) -- accuracy after ``N`` epochs with 0.1 and 1/L (iris 200, digits 200, breast cancer 1000
  epochs in the paper) through the lab (``sgd@0.1`` vs ``lipschitz-sgd`` and ``lipschitz-sgd-rigorous``).
* **Table 3 / Fig. 3** (§7.3-§7.4) -- the paper's MNIST CNN (Table 4) with the per-epoch schedule: adaptive SGD,
  AdaMo, adaptive RMSprop and Auto-Adam against fixed-lr baselines (SGD/momentum 0.01, RMSprop/Adam 0.001), on
  digits upscaled as a stand-in (MNIST with ``--data-dir``); ResNet-20 on CIFAR-10 with weight decay 1e-3 in the full
  form; the learning rate over epochs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from theorylr.lab.plots import subplots
from theorylr.lab.reproduce._common import (
    Context,
    final_median,
    layout,
    learned,
    run_dirs,
    save_figure,
)
from theorylr.lab.reproduce.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_RUN_FULL,
    PARTLY,
    Claim,
    PaperResult,
    fmt,
    not_run,
    verdict_all,
    verdict_ratio,
    verdict_universal,
)
from theorylr.lab.rules import Rule, build_torch_baseline, get_rule, resolve_rule
from theorylr.lab.scores import BAD, RuleSummary
from theorylr.lab.workloads import Workload, get_workload

__all__ = [
    "TABLE1",
    "gd_epochs_to_threshold",
    "learned",
    "loss_went_up",
    "lr_verdict",
    "pairs_verdict",
    "run_lipschitz",
    "table1_lipschitz",
]

PAPER = "lipschitz"
TITLE = "Yedida & Saha -- LipschitzLR: Using theoretically computed adaptive learning rates for fast convergence"
REFERENCE = 'Yedida & Saha, "LipschitzLR: Using theoretically computed adaptive learning rates for fast convergence"'

#: Table 1 rows: ``(data set, loss, threshold T_L or None, the paper's row or None)``. ``None`` as threshold for
#: least squares means the loss of the best constant predictor, (1/2m) sum (y - mean y)^2 ("learn the intercept").
TABLE1: tuple[tuple[str, str, float | None, Mapping[str, Any] | None], ...] = (
    (
        "breast_cancer",
        "bce",
        0.69,
        {"row": "Breast cancer", "threshold": 0.69, "inv_l": 4280.23, "e_01": 37008, "e_l": 2},
    ),
    ("iris", "softmax", 0.2, {"row": "Iris", "threshold": 0.2, "inv_l": 1.902, "e_01": 413, "e_l": 49}),
    (
        "diabetes",
        "least_squares",
        None,
        {"row": "Boston housing", "threshold": 200, "inv_l": 9.316, "e_01": 46041, "e_l": 555},
    ),
    ("digits", "softmax", 0.5, None),
    ("wine", "softmax", 0.5, None),
)
#: Table 2: the paper's accuracies after N epochs, ``A_0.1`` and ``A_1/L`` (and its 1/L).
TABLE2_PAPER: dict[str, tuple[float, float, float]] = {
    "iris": (0.9333, 0.9778, 1.936),
    "digits": (0.913, 0.9463, 0.635),
    "breast_cancer": (0.4323, 0.905, 4280.22),
}
_PAIRS = (("lipschitz-sgd", "sgd@0.01"), ("adamo", "momentum@0.01"), ("adaptive-rmsprop", "rmsprop@0.001"))
_ACC_SLACK = 0.005
INCONCLUSIVE = not_run("inconclusive: no rule beat chance accuracy at this size")


def pairs_verdict(pairs: Sequence[tuple[float, float]]) -> str:
    """Table 3's "adaptive matches or beats fixed": ``adaptive >= fixed - 0.005`` for each ``(adaptive, fixed)``
    pair of accuracies in which a rule beats chance (10 classes); a pair of two rules at chance says nothing and is
    not counted (inconclusive when none is left).

    Example:
        >>> pairs_verdict([(0.10, 0.10), (0.10, 0.33)]), pairs_verdict([(0.1, 0.1)])
        ('does not hold', 'not run (inconclusive: no rule beat chance accuracy at this size)')
    """
    checks = [a >= b - _ACC_SLACK for a, b in pairs if learned([a, b], 10)]
    return verdict_all(checks) if checks else INCONCLUSIVE


def lr_verdict(median_lr: float, lipschitz_accuracy: float, accuracies: Sequence[float]) -> str:
    """Fig. 3's "1/L is far above the usual fixed lrs (no decay by hand is needed)": ``holds`` for a median lr of at
    least 0.1, ``partly`` for 0.01; at most ``partly`` when the run at that lr ends at chance (the second half
    fails), inconclusive when no rule beats chance.

    Example:
        >>> lr_verdict(2.0, 0.9, [0.9]), lr_verdict(2.0, 0.098, [0.098, 0.33]), lr_verdict(2.0, 0.1, [0.1])
        ('holds', 'partly', 'not run (inconclusive: no rule beat chance accuracy at this size)')
    """
    size = verdict_ratio(0.1 / median_lr if median_lr > 0 else math.inf, 1.0, 10.0)
    if not learned(accuracies, 10):
        return INCONCLUSIVE
    if not learned([lipschitz_accuracy], 10):
        return PARTLY if size in (HOLDS, PARTLY) else DOES_NOT_HOLD
    return size


# ----------------------------------------------------------------------------------------------------------------
# Table 1: full-batch gradient descent to a loss threshold


def _loss_grad(kind: str, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The mean loss and its gradient in closed form (``bce``: logistic, ``softmax``: multinomial, least squares)."""
    m = x.shape[0]
    z = x @ w
    if kind == "bce":
        loss = torch.nn.functional.softplus(z) - y * z
        return float(loss.mean()), x.mT @ (torch.sigmoid(z) - y) / m
    if kind == "softmax":
        lse = torch.logsumexp(z, dim=1)
        loss = lse - z.gather(1, y[:, None]).squeeze(1)
        p = torch.softmax(z, dim=1)
        p[torch.arange(m), y] -= 1.0
        return float(loss.mean()), x.mT @ p / m
    r = z - y
    return float(0.5 * r.square().mean()), x.mT @ r / m


def gd_epochs_to_threshold(
    kind: str, x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, lr: float, threshold: float, max_epochs: int
) -> tuple[float, list[tuple[int, float]]]:
    """Full-batch gradient descent ``w <- w - lr grad`` from ``w0``: the number of epochs (steps) after which the
    loss is first below ``threshold`` (``inf`` if not within ``max_epochs``), and ``(epoch, loss)`` samples.

    Example:
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64); y = torch.tensor([2.0, 4.0], dtype=torch.float64)
        >>> e, _ = gd_epochs_to_threshold("least_squares", x, y, torch.zeros(1, dtype=torch.float64), 0.4, 1e-6, 100)
        >>> e  # w* = 2; each step multiplies the error by 1 - 0.4 * 2.5 = 0
        1.0
    """
    w = w0.clone()
    curve: list[tuple[int, float]] = []
    marks = set(np.unique(np.geomspace(1, max(max_epochs, 1), 120).astype(int)).tolist()) | set(range(50))
    for epoch in range(max_epochs + 1):
        loss, grad = _loss_grad(kind, x, y, w)
        if epoch in marks or loss < threshold or not math.isfinite(loss):
            curve.append((epoch, loss))
        if loss < threshold:
            return float(epoch), curve
        if not math.isfinite(loss) or epoch == max_epochs:
            break
        w -= lr * grad
    return math.inf, curve


def _table1_data(name: str, kind: str) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """The whole data set with a ones column, every column scaled to sum to 1 (§7.1)."""
    from theorylr.data import load_dataset, scale_features

    ds = load_dataset(name, scaling=None, dtype=torch.float64)
    x = torch.cat([ds.x_train, ds.x_test]).reshape(ds.num_train + ds.num_test, -1)
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    x, _ = scale_features(x, x[:1], "sum_to_one")
    y = torch.cat([ds.y_train, ds.y_test])
    if kind == "softmax":
        return x, y.long(), ds.num_classes
    return x, y.to(torch.float64), None


def table1_lipschitz(kind: str, x: torch.Tensor, y: torch.Tensor, k: int | None) -> dict[str, float]:
    """The paper's ``L`` (NaN when its least-squares form is not positive) and the rigorous bound ``B``.

    ``B`` for least squares needs a weight bound; gradient descent at a step below ``1/lambda_max`` stays within
    ``||w*|| + ||w0 - w*||`` of the origin, and we use ``K = 2 ||w*||`` (``w0`` is near 0).

    Example:
        >>> x = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
        >>> table1_lipschitz("bce", x, torch.tensor([0.0, 1.0], dtype=torch.float64), None)["paper"]  # ||X||_F/(2m)
        0.25
    """
    from theorylr.lipschitz.bounds import gradient_norm_bound
    from theorylr.lipschitz.closed_form import (
        least_squares,
        logistic_regression,
        softmax_regression,
        weight_bound_estimate,
    )

    if kind == "bce":
        paper = float(logistic_regression(x))
        bound = float(gradient_norm_bound(x, "bce", targets=y))
        return {"paper": paper, "rigorous": bound}
    if kind == "softmax":
        assert k is not None
        paper = float(softmax_regression(x, k))
        bound = float(gradient_norm_bound(x, "softmax", num_classes=k, targets=y))
        return {"paper": paper, "rigorous": bound}
    k_est = float(weight_bound_estimate(x))
    paper = float(least_squares(x, y, k_est, check=False))
    w_star = torch.linalg.lstsq(x, y[:, None]).solution
    k_rig = 2.0 * float(w_star.norm())
    bound = float(gradient_norm_bound(x, "least_squares", targets=y, weight_bound=k_rig))
    return {"paper": paper, "rigorous": bound, "weight_bound_paper": k_est, "weight_bound_rigorous": k_rig}


def _table1(max_epochs: int) -> dict[str, Any]:
    rows, curves = [], {}
    for name, kind, threshold, _ in TABLE1:
        x, y, k = _table1_data(name, kind)
        if threshold is None:
            threshold = float(0.5 * (y - y.mean()).square().mean())
        constants = table1_lipschitz(kind, x, y, k)
        shape = (x.shape[1],) if k is None else (x.shape[1], k)
        w0 = 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        row: dict[str, Any] = {"dataset": name, "loss": kind, "threshold": threshold, "m": x.shape[0], **constants}
        row["initial_loss"] = _loss_grad(kind, x, y, w0)[0]
        for key, lr in (("0.1", 0.1), ("1/L", 1.0 / constants["paper"]), ("1/B", 1.0 / constants["rigorous"])):
            if not (math.isfinite(lr) and lr > 0):
                row[f"epochs {key}"] = math.nan
                continue
            epochs, curve = gd_epochs_to_threshold(kind, x, y, w0, lr, threshold, max_epochs)
            row[f"epochs {key}"] = epochs
            curves[f"{name} {key}"] = curve
        rows.append(row)
    return {"rows": rows, "curves": curves, "max_epochs": max_epochs}


def _plot_table1(ctx: Context, data: dict[str, Any]) -> str:
    names = [r["dataset"] for r in data["rows"]]
    fig, axes = subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, row in zip(axes[0], data["rows"]):
        for key, style in (("0.1", "-"), ("1/L", "-"), ("1/B", "--")):
            curve = data["curves"].get(f"{row['dataset']} {key}")
            if curve:
                e = np.array([c[0] for c in curve]) + 1
                ax.loglog(e, [c[1] for c in curve], style, lw=1.2, label=f"lr {key}")
        ax.axhline(row["threshold"], color="k", lw=0.7, ls=":", label="T_L")
        ax.set(title=f"{row['dataset']} ({row['loss']})", xlabel="epoch + 1", ylabel="training loss")
        ax.legend(fontsize=7)
    fig.suptitle("Table 1: gradient descent to the threshold (features + intercept scaled to sum to 1)")
    layout(fig)
    return ctx.rel(save_figure(fig, ctx.figures_dir / "table1_threshold.png"))


def _epochs_text(value: float) -> str:
    if math.isnan(value):
        return "L <= 0"
    return "not reached" if math.isinf(value) else f"{value:.0f}"


def _table1_claims(ctx: Context, data: dict[str, Any], fig: str) -> list[Claim]:
    rows = data["rows"]
    cap = data["max_epochs"]
    faster = [r["epochs 1/L"] < r["epochs 0.1"] for r in rows]
    lines = [
        f"{r['dataset']}: 1/L = {fmt(1 / r['paper'], 4)}, T_L = {fmt(r['threshold'], 4)}, "
        f"E_0.1 = {_epochs_text(r['epochs 0.1'])}, E_1/L = {_epochs_text(r['epochs 1/L'])}"
        for r in rows
    ]
    paper_rows = [p for *_, p in TABLE1 if p is not None]
    reported = "; ".join(
        f"{p['row']}: T_L {p['threshold']}, 1/L {p['inv_l']}, E_0.1 {p['e_01']}, E_1/L {p['e_l']}" for p in paper_rows
    )
    c1 = Claim(
        id="lipschitz-table1-speed",
        paper=PAPER,
        section="§7.1, Table 1",
        claim="gradient descent with lr = 1/L reaches the loss threshold in fewer epochs than with lr = 0.1",
        reported=reported,
        measured="; ".join(lines) + f" (cap {cap} epochs)",
        criterion="E_1/L < E_0.1 on every data set (a paper L <= 0, or neither reaching T_L within the cap, counts "
        "as a failure)",
        verdict=verdict_all(faster),
        setting="whole data set, intercept column, every column scaled to sum to 1; full-batch GD from the same "
        "N(0, 0.01^2) weights; diabetes stands in for Boston housing (threshold: the best constant predictor's loss); "
        "digits and wine are extra rows (threshold 0.5)",
        values={"rows": rows},
        sources=[ctx.analytic_path("table1")],
        figures=[fig],
    )
    by_name = {r["dataset"]: r for r in rows}
    checks, parts = [], []
    for name, key in (("breast_cancer", 4280.23), ("iris", 1.902)):
        ours = 1.0 / by_name[name]["paper"]
        checks.append(abs(ours / key - 1.0) <= 0.01)
        parts.append(f"{name}: ours {fmt(ours, 6)} vs paper {key}")
    c2 = Claim(
        id="lipschitz-table1-constants",
        paper=PAPER,
        section="§5.1-§5.2, §7.1, Table 1",
        claim="the paper's 1/L values follow from its closed forms on data scaled as §7.1 says",
        reported="breast cancer 1/L = 4280.23, iris 1/L = 1.902",
        measured="; ".join(parts),
        criterion="our 1/L within 1% of the paper's, for each of the two data sets",
        verdict=verdict_all(checks),
        setting="as lipschitz-table1-speed (||X||_F, m = the whole set)",
        values={"ours": {n: 1.0 / by_name[n]["paper"] for n in ("breast_cancer", "iris")}},
        sources=[ctx.analytic_path("table1")],
        figures=[fig],
    )
    return [c1, c2]


# ----------------------------------------------------------------------------------------------------------------
# Table 2 and Table 3 through the lab


def _table2_workloads(ctx: Context) -> list[tuple[str, Workload]]:
    epochs = ctx.scale.lipschitz.table2_epochs
    # breast cancer: no bias, since an intercept of 1 next to features scaled to sum to 1 would take steps
    # 1/L ~ 2500 times its gradient, which the paper's L (computed from the scaled X) does not account for
    spec = {
        "iris": ("iris", "cross_entropy", None, True),
        "digits": ("digits", "cross_entropy", None, True),
        "breast_cancer": ("breast_cancer", "bce", "sum_to_one", False),
    }
    out = []
    for key, (dataset, loss, scaling, bias) in spec.items():
        out.append(
            (
                key,
                Workload(
                    name=f"lipschitz-t2-{key.replace('_', '-')}",
                    description=f"{dataset} ({'features scaled to sum to 1' if scaling else 'unscaled'}, 70/30 split), "
                    f"{'logistic' if loss == 'bce' else 'softmax'} regression{'' if bias else ' without bias'}, "
                    "full batch",
                    dataset=dataset,
                    dataset_options={"scaling": scaling, "test_fraction": 0.3},
                    model="linear",
                    model_options={"bias": bias},
                    loss=loss,
                    epochs=int(epochs[key]),
                    tuning_metric="test_accuracy",
                ),
            )
        )
    return out


def _baseline(optimizer: str, lr: float, momentum: float = 0.0) -> Rule:
    name = {"sgd": "sgd", "rmsprop": "rmsprop", "adam": "adam"}[optimizer]
    if optimizer == "sgd" and momentum:
        name = "momentum"
    return Rule(
        name=f"{name}@{lr:g}",
        kind="baseline",
        description=f"{name} at a fixed lr {lr:g} (LipschitzLR §7.4.2 baseline)",
        factory=build_torch_baseline,
        defaults={"optimizer": optimizer, "momentum": momentum, "lr": lr, "schedule": "constant"},
        reference="Yedida & Saha, §7.4.2",
    )


def _table3_rules() -> list[Rule]:
    return [
        get_rule("lipschitz-sgd"),
        get_rule("lipschitz-sgd-rigorous"),
        get_rule("adamo"),
        get_rule("adaptive-rmsprop"),
        get_rule("auto-adam"),
        resolve_rule("sgd@0.01"),
        _baseline("sgd", 0.01, momentum=0.9),
        _baseline("rmsprop", 0.001),
        resolve_rule("adam@0.001"),
    ]


def _cnn_workload(ctx: Context) -> Workload:
    s = ctx.scale.lipschitz
    if ctx.has("mnist"):
        base = Workload(
            name="lipschitz-mnist-cnn",
            description="MNIST, the paper's Table 4 CNN, batch 256",
            dataset="mnist",
            dataset_options={"scaling": "unit"},
            model="lipschitz_cnn",
            loss="cross_entropy",
            batch_size=256,
            epochs=s.cnn_epochs,
            needs_data_dir=True,
            grad_norm_samples=10000,
            tuning_metric="test_accuracy",
        )
        steps = math.ceil(60000 / 256)
    else:
        options: dict[str, Any] = {"scaling": "unit", "image": True}
        if s.cnn_image_size != 8:
            options["resize"] = s.cnn_image_size
        if s.cnn_train_size is not None:
            options["train_size"] = s.cnn_train_size
        n_train = s.cnn_train_size or 1348
        base = Workload(
            name=f"lipschitz-digits-cnn{s.cnn_image_size}" + (f"-n{s.cnn_train_size}" if s.cnn_train_size else ""),
            description=f"digits at {s.cnn_image_size}x{s.cnn_image_size} ({n_train} training images), "
            "the paper's Table 4 CNN, batch 256 (a stand-in for MNIST)",
            dataset="digits",
            dataset_options=options,
            model="lipschitz_cnn",
            loss="cross_entropy",
            batch_size=256,
            epochs=s.cnn_epochs,
            tuning_metric="test_accuracy",
        )
        steps = math.ceil(n_train / 256)
    # §7.3.1: AdaMo's first epoch runs at 0.1 (the paper sets K = 0.1 there)
    return dataclasses.replace(base, rule_options={"adamo": {"initial_step_size": 0.1, "initial_steps": steps}})


def _resnet_workload(ctx: Context) -> Workload:
    base = get_workload("cifar10-resnet20")
    steps = math.ceil(50000 / 128)
    decay = {"weight_decay": 1e-3}
    options = {r.name: dict(decay) for r in _table3_rules()}
    # §7.4: AdaMo's first epoch at x = 1 for Table 3's weight-decay-1e-3 row ("for the first experiment using
    # ResNet20 and momentum, we used x = 0.1 [the 1e-2 row]; for the second, we used x = 1")
    options["adamo"] = {**decay, "initial_step_size": 1.0, "initial_steps": steps}
    return dataclasses.replace(
        base,
        name="lipschitz-cifar10-resnet20",
        epochs=ctx.scale.lipschitz.resnet_epochs,
        tuning_metric="test_accuracy",
        rule_options=options,
    )


def _median_lr(summary: RuleSummary | None) -> float:
    """Median over epochs >= 1 of the first seed's lr column (the lr each epoch ran at, after the first)."""
    if summary is None or not summary.best_runs:
        return math.nan
    lrs = summary.best_runs[0].column("lr")[1:]
    lrs = lrs[np.isfinite(lrs)]
    return float(np.median(lrs)) if lrs.size else math.nan


def _diverged(summary: RuleSummary | None) -> int:
    return 0 if summary is None else sum(r.status in BAD for r in summary.best_runs)


def loss_went_up(train_loss: Sequence[float] | np.ndarray) -> bool:
    """Whether a run failed to converge in the sense of §7.1's "the high learning rates indeed lead to
    convergence": its final train loss is above its initial one (the first evaluation, before training), or the
    loss is non-finite or missing. A run can do this without the lab marking it ``diverged`` (a non-finite loss).

    Example:
        >>> loss_went_up([0.95, 58.4, 17.8]), loss_went_up([0.95, 58.4, 0.6]), loss_went_up([0.95, float("nan")])
        (True, False, True)
    """
    values = [float(v) for v in train_loss]
    if len(values) < 2 or not all(math.isfinite(v) for v in (values[0], values[-1])):
        return True
    return values[-1] > values[0]


def _not_converged(summary: RuleSummary | None) -> int:
    """How many of the best trial's runs diverged or ended with a higher train loss than they started with."""
    if summary is None:
        return 0
    return sum(r.status in BAD or loss_went_up(r.column("train_loss")) for r in summary.best_runs)


def _plot_accuracy(ctx: Context, panels: Sequence[tuple[str, dict[str, RuleSummary]]], name: str, title: str) -> str:
    fig, axes = subplots(2, len(panels), figsize=(4.8 * len(panels), 7.2), squeeze=False)
    for col, (label, summaries) in enumerate(panels):
        for rule, s in summaries.items():
            if not s.best_runs:
                continue
            run = s.best_runs[0]
            style = "--" if "@" in rule else "-"
            axes[0, col].plot(run.column("epoch"), run.column("test_accuracy"), style, lw=1.1, label=rule)
            axes[1, col].semilogy(run.column("epoch"), run.column("lr"), style, lw=1.1, label=rule)
        axes[0, col].set(title=label, xlabel="epoch", ylabel="test accuracy")
        axes[1, col].set(xlabel="epoch", ylabel="lr (group 0, after the epoch)")
        axes[0, col].legend(fontsize=6)
    fig.suptitle(title)
    layout(fig)
    return ctx.rel(save_figure(fig, ctx.figures_dir / name))


def _table2(ctx: Context) -> tuple[list[Claim], list[tuple[str, str]], dict[str, dict[str, RuleSummary]]]:
    rules = [resolve_rule("sgd@0.1"), get_rule("lipschitz-sgd"), get_rule("lipschitz-sgd-rigorous")]
    results: dict[str, dict[str, RuleSummary]] = {}
    workloads = _table2_workloads(ctx)
    for key, workload in workloads:
        results[key] = ctx.run_rules(workload, rules, epochs=workload.epochs)
    fig = _plot_accuracy(
        ctx,
        [(w.description.split(" (")[0] + f", {w.epochs} epochs", results[k]) for k, w in workloads],
        "table2_accuracy.png",
        "Table 2: lr 0.1 vs 1/L (paper's form) vs 1/B (rigorous), full-batch gradient descent",
    )
    checks, lines, values = [], [], {}
    for key, workload in workloads:
        r = results[key]
        a01 = final_median(r.get("sgd@0.1"), "test_accuracy")
        al = final_median(r.get("lipschitz-sgd"), "test_accuracy")
        checks.append(al >= a01)
        lines.append(
            f"{key} ({workload.epochs} epochs): 1/L = {fmt(_median_lr(r.get('lipschitz-sgd')), 4)}, "
            f"A_0.1 = {fmt(100 * a01, 4)}%, A_1/L = {fmt(100 * al, 4)}%"
        )
        values[key] = {"A_0.1": a01, "A_1/L": al, "lr_1/L": _median_lr(r.get("lipschitz-sgd"))}
    sources = sorted(d for r in results.values() for s in r.values() for d in run_dirs(s, ctx.root))
    reported = "; ".join(
        f"{k} ({n} epochs): 1/L {p[2]}, A_0.1 {100 * p[0]:.2f}%, A_1/L {100 * p[1]:.2f}%"
        for (k, p), n in zip(TABLE2_PAPER.items(), (200, 200, 1000))
    )
    claim = Claim(
        id="lipschitz-table2-accuracy",
        paper=PAPER,
        section="§7.2, Table 2",
        claim="after N epochs, lr = 1/L gives a higher accuracy than lr = 0.1",
        reported=reported,
        measured="; ".join(lines),
        criterion="final test accuracy (median over seeds) with 1/L >= with 0.1, on every data set",
        verdict=verdict_all(checks),
        setting="70/30 splits; iris and digits unscaled, breast cancer scaled to sum to 1 (the scalings the paper's "
        "1/L values imply); the lab's linear model, with a bias except for breast cancer (an unscaled intercept "
        "beside sum-to-1 features is outside the paper's L); lipschitz-sgd recomputes 1/L each epoch (constant for "
        f"a linear model); epochs {dict(ctx.scale.lipschitz.table2_epochs)}",
        values=values,
        sources=sources,
        figures=[fig],
    )
    return [claim], [(fig, "Table 2 redrawn: test accuracy and lr per epoch, 0.1 vs 1/L vs rigorous 1/B")], results


def _table3(ctx: Context) -> tuple[list[Claim], list[tuple[str, str]], dict[str, dict[str, RuleSummary]]]:
    claims: list[Claim] = []
    figures: list[tuple[str, str]] = []
    results: dict[str, dict[str, RuleSummary]] = {}
    cnn = _cnn_workload(ctx)
    stand_in = not ctx.has("mnist")
    where = "digits stand-in" if stand_in else "MNIST"
    reason = ctx.dataset_problem(cnn.dataset)
    if reason is None:
        results["cnn"] = ctx.run_rules(cnn, _table3_rules(), epochs=cnn.epochs)
    resnet = _resnet_workload(ctx)
    resnet_reason = None if ctx.scale.lipschitz.full_only else "full form only"
    resnet_reason = resnet_reason or ctx.dataset_problem(resnet.dataset)
    if resnet_reason is None:
        results["resnet"] = ctx.run_rules(resnet, _table3_rules(), epochs=resnet.epochs)
    for key, label in (("cnn", f"Table 4 CNN ({where})"), ("resnet", "ResNet-20, CIFAR-10")):
        if key in results:
            fig = _plot_accuracy(ctx, [(label, results[key])], f"table3_{key}.png", f"Table 3 / Fig. 3: {label}")
            figures.append((fig, f"Table 3 and Fig. 3 redrawn ({label}): test accuracy and lr per epoch"))

    def pair_claim(key: str, label: str, reported: str, not_run_reason: str | None) -> Claim:
        base = Claim(
            id=f"lipschitz-table3-{key}-adaptive",
            paper=PAPER,
            section="§7.3-§7.4, Table 3",
            claim=f"{label}: the adaptive lr (1/L per epoch) matches or beats the fixed-lr baseline for SGD, "
            "momentum (AdaMo) and RMSprop",
            reported=reported,
            measured="-",
            criterion="final test accuracy of adaptive >= baseline - 0.005, for each of the three pairs in which a "
            "rule beats chance + 0.05 (a pair at chance is not counted; inconclusive when none is left)",
            verdict=not_run(not_run_reason) if not_run_reason else NOT_RUN_FULL,
            setting=(cnn if key == "cnn" else resnet).description,
        )
        if key not in results:
            if not_run_reason == "full form only":
                base.verdict = NOT_RUN_FULL
            return base
        r = results[key]
        pairs, parts = [], []
        for adaptive, fixed in _PAIRS:
            a, b = final_median(r.get(adaptive), "test_accuracy"), final_median(r.get(fixed), "test_accuracy")
            pairs.append((a, b))
            chance = "" if learned([a, b], 10) else " (both at chance: not counted)"
            parts.append(f"{adaptive} {fmt(100 * a, 4)}% vs {fixed} {fmt(100 * b, 4)}%{chance}")
        base.measured = "; ".join(parts)
        base.verdict = pairs_verdict(pairs)
        base.values = {n: final_median(s, "test_accuracy") for n, s in r.items()}
        base.sources = sorted(d for s in r.values() for d in run_dirs(s, ctx.root))
        base.figures = [f for f, c in figures if ("CNN" if key == "cnn" else "ResNet-20") in c]
        return base

    claims.append(
        pair_claim(
            "cnn",
            f"MNIST CNN ({where})",
            "MNIST (Table 3): adaptive SGD 99.5%, momentum 99.57%, Adam 99.43% (no baselines reported for MNIST; the "
            "baseline comparison is the CIFAR-10 one: SGD 89.37% vs 60.33%, momentum 89.27% vs 58.29%, RMSprop "
            "86.66% vs 84.92%)",
            reason,
        )
    )
    claims.append(
        pair_claim(
            "resnet",
            "ResNet-20 on CIFAR-10",
            "SGD 89.37% vs 60.33%, momentum (AdaMo) 89.27% vs 58.29%, RMSprop 86.66% vs 84.92% (weight decay 1e-3)",
            resnet_reason,
        )
    )
    # Auto-Adam
    auto = Claim(
        id="lipschitz-table3-auto-adam",
        paper=PAPER,
        section="§7.3.1, §7.4, Table 3",
        claim="Auto-Adam trains the MNIST CNN about as well as adaptive SGD (99.43% vs 99.5%) but falls behind Adam "
        "on ResNet-20 (70.57% vs 84.67%)",
        reported="MNIST: Auto-Adam 99.43%, adaptive SGD 99.5%; CIFAR-10 ResNet-20: Auto-Adam 70.57% (Table 3's "
        "'Adam, Fixed' row: weight decay 1e-4, the first epoch's lr kept; §7.4: no setting trained ResNets well), "
        "Adam 84.67% (weight decay 1e-3); we run the adaptive Auto-Adam at weight decay 1e-3",
        measured="-",
        criterion="CNN: |Auto-Adam - adaptive SGD| <= 1 point; ResNet-20 (when run): Auto-Adam < Adam baseline; "
        "each counted only when one of its two rules beats chance + 0.05 (inconclusive when neither is)",
        verdict=not_run(reason) if reason else NOT_RUN_FULL,
        setting=cnn.description,
    )
    if "cnn" in results:
        r = results["cnn"]
        aa, ls = (
            final_median(r.get("auto-adam"), "test_accuracy"),
            final_median(r.get("lipschitz-sgd"), "test_accuracy"),
        )
        # "As well as": the pair's own accuracies must show learning; two networks at chance are equal, not good.
        checks = [abs(aa - ls) <= 0.01] if learned([aa, ls], 10) else []
        text = f"CNN: auto-adam {fmt(100 * aa, 4)}% vs lipschitz-sgd {fmt(100 * ls, 4)}%"
        if not checks:
            text += " (both at chance: not counted)"
        if "resnet" in results:
            rr = results["resnet"]
            ra, rb = (
                final_median(rr.get("auto-adam"), "test_accuracy"),
                final_median(rr.get("adam@0.001"), "test_accuracy"),
            )
            if learned([ra, rb], 10):
                checks.append(ra < rb)
            text += f"; ResNet-20: auto-adam {fmt(100 * ra, 4)}% vs adam@0.001 {fmt(100 * rb, 4)}%"
        auto.measured = text
        auto.verdict = verdict_all(checks) if checks else INCONCLUSIVE
        auto.values = {"checks": checks}
        auto.sources = sorted(d for s in r.values() for d in run_dirs(s, ctx.root))
        auto.figures = [f for f, _ in figures]
    claims.append(auto)
    # Fig. 3: the learning rate the schedule picks
    lr_claim = Claim(
        id="lipschitz-fig3-lr",
        paper=PAPER,
        section="§7.3-§7.4, Fig. 3",
        claim="the per-epoch 1/L is far above the usual fixed learning rates (no decay by hand is needed)",
        reported="ResNet-20: 1/L = 0.668 (fixed), first epoch 8e-3 then larger; MNIST CNN: starts high, varies",
        measured="-",
        criterion="median over epochs of lipschitz-sgd's lr: >= 0.1 (10x the SGD baseline) holds, >= 0.01 partly; "
        "at most partly when lipschitz-sgd itself ends at chance + 0.05 (the 'no decay needed' half fails), "
        "inconclusive when no CNN rule beats it",
        verdict=not_run(reason) if reason else NOT_RUN_FULL,
        setting=cnn.description,
    )
    if "cnn" in results:
        lr = _median_lr(results["cnn"].get("lipschitz-sgd"))
        first = (
            results["cnn"]["lipschitz-sgd"].best_runs[0].column("lr")[1]
            if "lipschitz-sgd" in results["cnn"]
            else math.nan
        )
        lr_claim.measured = f"CNN ({where}): median lr {fmt(lr, 3)}, first epoch {fmt(float(first), 3)}"
        if "resnet" in results:
            lr_claim.measured += f"; ResNet-20: median lr {fmt(_median_lr(results['resnet'].get('lipschitz-sgd')), 3)}"
        # the verdict is 'holds' at >= 0.1 (1 / 10) and 'partly' at >= 0.01: compare 0.1 / lr with 1 and 10
        ls_acc = final_median(results["cnn"].get("lipschitz-sgd"), "test_accuracy")
        lr_claim.verdict = lr_verdict(lr, ls_acc, [final_median(x, "test_accuracy") for x in results["cnn"].values()])
        if not learned([ls_acc], 10):  # "no decay by hand is needed" fails: the run at that lr learned nothing
            lr_claim.measured += f"; lipschitz-sgd ends at {fmt(100 * ls_acc, 4)}% (chance 10%) at that lr"
        lr_claim.values = {"median_lr": lr, "first_epoch_lr": float(first)}
        lr_claim.sources = (
            sorted(run_dirs(results["cnn"]["lipschitz-sgd"], ctx.root)) if "lipschitz-sgd" in results["cnn"] else []
        )
        lr_claim.figures = [f for f, _ in figures]
    claims.append(lr_claim)
    return claims, figures, results


def _rigorous_claims(
    ctx: Context, table1: dict[str, Any], lab: Mapping[str, dict[str, RuleSummary]], table1_fig: str, figs: list[str]
) -> list[Claim]:
    faster, lines, ratios, diverged = [], [], [], []
    values: dict[str, dict[str, Any]] = {}
    for key, summaries in lab.items():
        paper, rig = summaries.get("lipschitz-sgd"), summaries.get("lipschitz-sgd-rigorous")
        if paper is None:
            continue
        # "never diverges" is a claim about every lipschitz-sgd run, with or without a rigorous run beside it
        diverged.append(_not_converged(paper))
        values[key] = {"diverged": _diverged(paper), "not_converged": _not_converged(paper)}
        if rig is None:
            continue
        lp, lr_ = final_median(paper, "train_loss"), final_median(rig, "train_loss")
        ratio = _median_lr(paper) / _median_lr(rig)
        faster.append(lp < lr_)
        ratios.append(ratio)
        lines.append(f"{key}: loss {fmt(lp, 3)} (paper L) vs {fmt(lr_, 3)} (rigorous), lr ratio {fmt(ratio, 3)}")
        values[key] = {"train_loss_paper": lp, "train_loss_rigorous": lr_, "lr_ratio": ratio, **values[key]}
    for row in table1["rows"]:
        e_l, e_b = row["epochs 1/L"], row["epochs 1/B"]
        faster.append(e_l < e_b)
        lines.append(f"Table 1 {row['dataset']}: E_1/L {_epochs_text(e_l)} vs E_1/B {_epochs_text(e_b)}")
        values[f"table1 {row['dataset']}"] = {"epochs_1/L": e_l, "epochs_1/B": e_b}
    sources = sorted(
        d
        for summaries in lab.values()
        for n in ("lipschitz-sgd", "lipschitz-sgd-rigorous")
        if n in summaries
        for d in run_dirs(summaries[n], ctx.root)
    )
    sources.append(ctx.analytic_path("table1"))
    n_runs = sum(len(s["lipschitz-sgd"].best_runs) for s in lab.values() if "lipschitz-sgd" in s)
    return [
        Claim(
            id="lipschitz-rigorous-speed",
            paper=PAPER,
            section="§4-§5 vs theorylr.lipschitz.bounds",
            claim="(our question) the paper's constants, which are not upper bounds, give larger steps and train "
            "faster than the rigorous bound",
            reported="the paper presents its L as the Lipschitz constant (no comparison)",
            measured="; ".join(lines),
            criterion="lower final train loss (lab runs) or fewer epochs to T_L (Table 1) with the paper's L, in every "
            "setting",
            verdict=verdict_all(faster) if faster else not_run("no setting ran"),
            setting="the Table 1 problems, and the Table 2/3 lab workloads with lipschitz-sgd vs "
            "lipschitz-sgd-rigorous",
            values=values,
            sources=sources,
            figures=[table1_fig, *figs],
        ),
        Claim(
            id="lipschitz-rigorous-divergence",
            paper=PAPER,
            section="§3, §7 vs theorylr.lipschitz.bounds",
            claim="(our question) training with the paper's looser 1/L never diverges",
            reported="'the high learning rates indeed lead to convergence' (§7.1, Fig. 1)",
            measured=f"runs with the paper's L that diverged or ended above their initial train loss: {sum(diverged)} "
            f"of {n_runs} ("
            + ", ".join(f"{k} {v['not_converged']}" for k, v in values.items() if "not_converged" in v)
            + f"; non-finite: {sum(v['diverged'] for v in values.values() if 'diverged' in v)}); paper/rigorous lr "
            f"ratio {fmt(min(ratios, default=math.nan), 3)} .. {fmt(max(ratios, default=math.nan), 3)}",
            criterion="no lipschitz-sgd run diverges (non-finite loss) or ends with a train loss above its initial "
            "one, in every lab workload (a claim of 'never': one such run refutes it)",
            verdict=verdict_universal([d == 0 for d in diverged]) if diverged else not_run("no setting ran"),
            setting="the Table 2/3 lab workloads",
            values=values,
            sources=sources,
            figures=figs,
        ),
    ]


# ----------------------------------------------------------------------------------------------------------------
# entry point


def run_lipschitz(ctx: Context) -> PaperResult:
    """Run every LipschitzLR experiment of ``ctx.scale`` into ``ctx.root`` and return the claims.

    Claims: Table 1 (speed, the paper's constants), Table 2, Table 3 (digits/MNIST CNN; ResNet-20 in the full form),
    Auto-Adam, Fig. 3 (the learning rate), and our two questions about the paper's constants against the rigorous
    bounds (speed, divergence).

    Example::

        from pathlib import Path
        from theorylr.lab.reproduce import QUICK
        from theorylr.lab.reproduce._common import Context

        result = run_lipschitz(Context(Path("runs/reproduce/lipschitz/quick"), QUICK))   # about 40 s
        result.tables[0]   # Table 1 as measured
    """
    s = ctx.scale.lipschitz
    table1 = ctx.cached(
        "table1", {"max_epochs": s.table1_max_epochs, "rows": TABLE1}, lambda: _table1(s.table1_max_epochs)
    )
    t1_fig = _plot_table1(ctx, table1)
    claims = _table1_claims(ctx, table1, t1_fig)
    figures = [(t1_fig, "Table 1 redrawn: loss against epochs with lr 0.1, 1/L (paper) and 1/B (rigorous)")]
    c2, f2, lab2 = _table2(ctx)
    c3, f3, lab3 = _table3(ctx)
    claims += c2 + c3
    figures += f2 + f3
    lab = {**lab2, **lab3}
    claims += _rigorous_claims(ctx, table1, lab, t1_fig, [f for f, _ in f2 + f3])
    table_rows = [
        [
            r["dataset"],
            r["loss"],
            fmt(r["threshold"], 4),
            fmt(1 / r["paper"], 5),
            fmt(1 / r["rigorous"], 4),
            _epochs_text(r["epochs 0.1"]),
            _epochs_text(r["epochs 1/L"]),
            _epochs_text(r["epochs 1/B"]),
        ]
        for r in table1["rows"]
    ]
    tables = [
        {
            "title": f"Table 1 as measured (cap {table1['max_epochs']} epochs)",
            "headers": ["data set", "loss", "T_L", "1/L (paper form)", "1/B (rigorous)", "E_0.1", "E_1/L", "E_1/B"],
            "rows": table_rows,
        }
    ]
    notes = [
        "Table 1's iris row (1/L = 1.902) matches unscaled features on a 70% split, not §7.1's 'scale each feature to "
        "sum to 1' (that gives 1/L in the thousands): the paper's rows were not all computed on the data it describes. "
        "We scale every row as §7.1 says and report the mismatch as a claim.",
        "Table 1 thresholds: the paper's for breast cancer (0.69) and iris (0.2); for the stand-ins ours, fixed before "
        "running: diabetes the best constant predictor's loss, digits and wine 0.5. Breast cancer's 0.69 is just "
        "below ln 2 = 0.693, the loss at zero weights.",
        "The paper's least-squares L = (K/m)||X^T X|| - (1/m)||X^T y|| subtracts norms and can be <= 0 "
        "(theorylr.lipschitz.closed_form.least_squares); a row with L <= 0 has no 1/L run.",
        "Table 1 runs are a float64 gradient-descent loop (analytic gradients), not the lab runner: they need up to "
        f"{s.table1_max_epochs} epochs with a stopping rule and the runner checkpoints every epoch.",
        "Table 2/3 run through the lab; 'lipschitz-sgd' recomputes 1/L every epoch from the penultimate activations "
        "(for a linear model: constant); 'adamo' runs its first epoch at 0.1 on the CNN as §7.3.1 does, and at 1 on "
        "ResNet-20, §7.4's value for the weight-decay-1e-3 row.",
        "The Table 4 CNN is trained on digits upscaled as a stand-in for MNIST unless --data-dir is given; the paper's "
        "data augmentation is not used. ResNet-20 on CIFAR-10 (weight decay 1e-3) runs in the full form with files.",
    ]
    commands = [
        "theorylr reproduce lipschitz --out runs/reproduce      # full form: paper epochs, digits CNN at 28x28",
        "theorylr reproduce lipschitz --data-dir ~/data --device cuda --out runs/reproduce  # + MNIST CNN, ResNet-20",
    ]
    return PaperResult(PAPER, TITLE, REFERENCE, ctx.scale.name, claims, figures, tables, notes, commands)
