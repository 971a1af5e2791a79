"""Metamorphic tests: properties that follow from the formulas, each relating two runs (no second
implementation).

Each property is derived from the docstrings' formulas; where it holds only under conditions (eps = 0, no weight
decay, no SGD fallback, no initial-step override) the test states them, and a negative control checks that the
comparison is sharp enough to see the property break where the mathematics says it must. Scale factors are powers
of two where the property is exact in floating point too (a power of two commutes with every rounding), so those
comparisons are bitwise; other factors are compared to rounding.
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from theorylr import LARS, AdaMo, AdaptiveRMSprop, AutoAdam, LipschitzLR, PercentDelta, exact_step_adam
from theorylr.estimate import data_loss, hessian_spectral_norm, smoothness
from theorylr.lab.results import Run
from theorylr.lab.scores import best_trial, performance_profile
from theorylr.lipschitz import ActivationTracker, gradient_norm_bound
from theorylr.lipschitz import closed_form as cf
from theorylr.theory import lars as lt
from theorylr.theory.adam import constant_step

SEEDS = [0, 1, 2, 3]
F64 = torch.float64


def _rel(a: float, b: float) -> float:
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


def _maxdiff(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((x - y).abs().max() / (y.abs().max() + 1e-300)) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------------------
# LARS / PercentDelta
# ----------------------------------------------------------------------------------------------------------------
def _lars_problem(rng: random.Random, n: int) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per tensor a separable quadratic 0.5 * s * (w - t)^2: its gradient s * (w - t) depends on that tensor only."""
    gen = torch.Generator().manual_seed(rng.randint(0, 10**9))
    shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 2))) for _ in range(n)]
    w0 = [torch.randn(s, generator=gen, dtype=F64) * rng.choice([0.5, 1.0, 3.0]) for s in shapes]
    targets = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    curv = [torch.rand(s, generator=gen, dtype=F64) + 0.5 for s in shapes]
    return w0, targets, curv


def _lars_config(rng: random.Random, **overrides: Any) -> dict[str, Any]:
    momentum = rng.choice([0.0, 0.5, 0.9])
    nesterov = momentum > 0 and rng.random() < 0.4
    config = {
        "lr": rng.choice([0.01, 0.1, 0.3]),
        "momentum": momentum,
        "nesterov": nesterov,
        "dampening": 0.0 if nesterov else rng.choice([0.0, 0.3]),
        "eps": 0.0,
        "weight_decay": 0.0,
        "norm": rng.choice(["l1", "l2", "linf", "mean_ratio"]),
        "denominator": rng.choice(["decayed", "sum"]),
        "min_norm": 0.0,
        "trust_coefficient": rng.choice([1.0, 0.02]),
        "foreach": rng.choice([True, False]),
        "factored_momentum": rng.choice([True, False, None]),
    }
    config.update(overrides)
    return config


def _run_lars(
    w0: list[Tensor],
    targets: list[Tensor],
    curv: list[Tensor],
    steps: int,
    config: dict[str, Any],
    *,
    grad_scale: float = 1.0,
    groups: list[list[int]] | None = None,
) -> list[Tensor]:
    ps = [nn.Parameter(w.clone()) for w in w0]
    opt = LARS(ps if groups is None else [{"params": [ps[i] for i in g]} for g in groups], **config)
    for _ in range(steps):
        for p, t, s in zip(ps, targets, curv):
            p.grad = grad_scale * (s * (p.detach() - t))
        opt.step()
    return [p.detach().clone() for p in ps]


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_update_invariant_to_gradient_scale(seed: int) -> None:
    """ratio * d = ||w|| / ||c d|| * (c d) = ratio * d when eps = 0, weight_decay = 0 and no step falls back to
    ratio 1: every momentum buffer (ratio * d accumulated) and Nesterov step is then unchanged, over many steps.
    "mean_ratio" adds eps to |w| only, so it keeps the invariance with eps > 0."""
    rng = random.Random(seed)
    for _ in range(25):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _lars_config(rng)
        steps = rng.randint(1, 6)
        c = 2.0 ** rng.randint(-20, 20)
        base = _run_lars(w0, targets, curv, steps, config)
        assert all(torch.equal(a, b) for a, b in zip(_run_lars(w0, targets, curv, steps, config, grad_scale=c), base))
        mean_ratio = dict(config, norm="mean_ratio", eps=rng.choice([1e-8, 0.1]))
        base = _run_lars(w0, targets, curv, steps, mean_ratio)
        scaled = _run_lars(w0, targets, curv, steps, mean_ratio, grad_scale=c)
        assert all(torch.equal(a, b) for a, b in zip(scaled, base))
        general = math.exp(rng.uniform(-5, 5))
        base = _run_lars(w0, targets, curv, steps, config)
        assert _maxdiff(_run_lars(w0, targets, curv, steps, config, grad_scale=general), base) < 1e-12


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_gradient_scale_control_weight_decay_breaks_it(seed: int) -> None:
    """Negative control: with weight decay d = c g + wd w is no multiple of d, so the update changes."""
    rng = random.Random(seed)
    w0, targets, curv = _lars_problem(rng, 2)
    config = _lars_config(rng, weight_decay=0.1, norm="l2")
    base = _run_lars(w0, targets, curv, 3, config)
    assert _maxdiff(_run_lars(w0, targets, curv, 3, config, grad_scale=8.0), base) > 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_is_layer_wise(seed: int) -> None:
    """Each tensor's step depends on its own w and g only: splitting the parameters into groups with equal
    hyperparameters, or stepping one tensor alone, gives the same iterates."""
    rng = random.Random(seed)
    for _ in range(20):
        n = rng.randint(1, 4)
        w0, targets, curv = _lars_problem(rng, n)
        config = _lars_config(rng, weight_decay=rng.choice([0.0, 0.1]), eps=rng.choice([0.0, 1e-8]))
        steps = rng.randint(1, 6)
        base = _run_lars(w0, targets, curv, steps, config)
        order = rng.sample(range(n), n)
        cut = rng.randint(0, n)
        groups = [g for g in (order[:cut], order[cut:]) if g]
        assert _maxdiff(_run_lars(w0, targets, curv, steps, config, groups=groups), base) < 1e-13
        assert _maxdiff(_run_lars(w0[:1], targets[:1], curv[:1], steps, config), base[:1]) < 1e-13


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_equivariant_to_permuting_a_tensors_elements(seed: int) -> None:
    """Every norm is symmetric in the elements, so permuting w, g (and the problem) permutes the iterates."""
    rng = random.Random(seed)
    for trial in range(20):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _lars_config(rng, weight_decay=rng.choice([0.0, 0.1]), eps=rng.choice([0.0, 1e-8]))
        steps = rng.randint(1, 6)
        perms = [torch.randperm(w.numel(), generator=torch.Generator().manual_seed(trial)) for w in w0]

        def permute(ts: list[Tensor], perms: list[Tensor] = perms) -> list[Tensor]:
            return [t.flatten()[p] for t, p in zip(ts, perms)]

        base = _run_lars(w0, targets, curv, steps, config)
        out = _run_lars(permute(w0), permute(targets), permute(curv), steps, config)
        assert _maxdiff(out, permute(base)) < 1e-12


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_scale_invariant_loss_gives_scaled_trajectory(seed: int) -> None:
    """On a loss f(w / ||w||) (what a normalisation layer makes of the weights before it), g(cw) = g(w) / c, so
    ratio(cw) = c^2 ratio(w) and the step is c times as long: from c w0 the iterates are c times those from w0
    (eps = 0, weight_decay = 0, min_norm = 0; momentum and Nesterov included). With eps > 0 that fails."""
    rng = random.Random(seed)

    def trajectory(
        w0: list[Tensor], t: list[Tensor], s: list[Tensor], cw: float, config: dict[str, Any]
    ) -> list[Tensor]:
        ps = [nn.Parameter(w.clone() * cw) for w in w0]
        opt = LARS(ps, **config)
        for _ in range(4):
            opt.zero_grad()
            sum((si * (p / p.norm() - ti) ** 2).sum() for p, ti, si in zip(ps, t, s)).backward()
            opt.step()
        return [p.detach().clone() for p in ps]

    for _ in range(15):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _lars_config(rng)
        cw = 2.0 ** rng.randint(-5, 5)
        base = trajectory(w0, targets, curv, 1.0, config)
        assert all(torch.equal(a / cw, b) for a, b in zip(trajectory(w0, targets, curv, cw, config), base))
    config = _lars_config(rng, eps=0.5, norm="l2")  # negative control
    base = trajectory(w0, targets, curv, 1.0, config)
    assert _maxdiff([a / 0.125 for a in trajectory(w0, targets, curv, 0.125, config)], base) > 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_lars_only_lr_times_trust_coefficient_matters(seed: int) -> None:
    """Documented: for adapted tensors (no trust_clip, no ratio-1 fallback) only lr * trust_coefficient matters."""
    rng = random.Random(seed)
    for _ in range(20):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _lars_config(rng, weight_decay=rng.choice([0.0, 0.1]), eps=rng.choice([0.0, 1e-8]))
        s = 2.0 ** rng.randint(-3, 3)
        other = dict(config, lr=config["lr"] * s, trust_coefficient=config["trust_coefficient"] / s)
        base = _run_lars(w0, targets, curv, 4, config)
        assert all(torch.equal(a, b) for a, b in zip(_run_lars(w0, targets, curv, 4, other), base))


@pytest.mark.parametrize("seed", SEEDS)
def test_percent_delta_moves_each_tensor_by_lr_relative(seed: int) -> None:
    """Without momentum, eps or decay: ||dw||_1 / ||w||_1 = lr * tc ("l1") and mean_i |dw_i| / |w_i| = lr * tc
    ("mean_ratio"), whatever the gradient."""
    rng = random.Random(seed)
    for _ in range(20):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        grads = [s * (w - t) * math.exp(rng.uniform(-8, 8)) for w, t, s in zip(w0, targets, curv)]
        lr, tc = rng.choice([0.01, 0.1, 0.3]), rng.choice([1.0, 0.5])
        for norm in ("l1", "mean_ratio"):
            ps = [nn.Parameter(w.clone()) for w in w0]
            opt = PercentDelta(ps, lr=lr, eps=0.0, min_norm=0.0, norm=norm, trust_coefficient=tc)
            for p, g in zip(ps, grads):
                p.grad = g
            opt.step()
            for p, w in zip(ps, w0):
                step = (p.detach() - w).abs()
                moved = float(step.sum() / w.abs().sum()) if norm == "l1" else float((step / w.abs()).mean())
                assert math.isclose(moved, lr * tc, rel_tol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Lipschitz-adaptive optimizers
# ----------------------------------------------------------------------------------------------------------------
_ADAPTIVE = {"adamo": AdaMo, "autoadam": AutoAdam, "rmsprop": AdaptiveRMSprop}


def _adaptive_config(rng: random.Random, name: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "lr": rng.choice([0.01, 0.1, 1.0]),
        "bias_correction": rng.choice([True, False]),
        "foreach": rng.choice([True, False]),
        "lipschitz": "observed",
    }
    if name == "autoadam":
        config["betas"] = (rng.choice([0.0, 0.5, 0.9]), rng.choice([0.5, 0.9, 0.999]))
        config["l2_estimate"] = rng.choice(["no_cross", "square", "no_weight"])
        config["eps"] = 0.0
    elif name == "rmsprop":
        config["beta"] = rng.choice([0.5, 0.9])
        config["l2_estimate"] = rng.choice(["no_cross", "square", "no_weight"])
        config["eps"] = 0.0
    else:
        config["beta"] = rng.choice([0.0, 0.5, 0.9])
    config.update(overrides)
    return config


def _run_adaptive(
    cls: type,
    w0: list[Tensor],
    targets: list[Tensor],
    curv: list[Tensor],
    steps: int,
    config: dict[str, Any],
    *,
    loss_scale: float = 1.0,
    groups: list[list[int]] | None = None,
) -> tuple[list[Tensor], float]:
    """The iterates, and the largest coordinate move of any step."""
    ps = [nn.Parameter(w.clone()) for w in w0]
    opt = cls(ps if groups is None else [{"params": [ps[i] for i in g]} for g in groups], **config)
    largest = 0.0
    for _ in range(steps):
        before = [p.detach().clone() for p in ps]
        for p, t, s in zip(ps, targets, curv):
            p.grad = loss_scale * (s * (p.detach() - t))
        opt.step()
        largest = max(largest, *(float((p.detach() - b).abs().max()) for p, b in zip(ps, before)))
    return [p.detach().clone() for p in ps], largest


@pytest.mark.parametrize("name", sorted(_ADAPTIVE))
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_adaptive_observed_update_invariant_to_loss_scale(name: str, seed: int) -> None:
    """lipschitz="observed": L_t = max ||g_l|| scales with the loss like g, so V / K1 (AdaMo) and
    (sqrt(K2) / K1) V / sqrt(S) (Auto-Adam, adaptive RMSprop, eps = 0) are unchanged; with weight decay the loss
    and lambda scaled together keep g + lambda w and D + lambda K proportional. Splitting the parameters into
    groups changes nothing (L_t is one maximum over every group)."""
    rng, cls = random.Random(seed), _ADAPTIVE[name]
    for _ in range(12):
        n = rng.randint(1, 3)
        w0, targets, curv = _lars_problem(rng, n)
        config = _adaptive_config(rng, name)
        steps = rng.randint(1, 6)
        c = 2.0 ** rng.randint(-10, 10)
        base, _ = _run_adaptive(cls, w0, targets, curv, steps, config)
        assert all(
            torch.equal(a, b)
            for a, b in zip(_run_adaptive(cls, w0, targets, curv, steps, config, loss_scale=c)[0], base)
        )
        wd = rng.choice([0.01, 0.3])
        decayed, _ = _run_adaptive(cls, w0, targets, curv, steps, dict(config, weight_decay=wd))
        both, _ = _run_adaptive(cls, w0, targets, curv, steps, dict(config, weight_decay=wd * c), loss_scale=c)
        assert all(torch.equal(a, b) for a, b in zip(both, decayed))
        order = rng.sample(range(n), n)
        cut = rng.randint(0, n)
        groups = [g for g in (order[:cut], order[cut:]) if g]
        assert _maxdiff(_run_adaptive(cls, w0, targets, curv, steps, config, groups=groups)[0], base) < 1e-13


@pytest.mark.parametrize("name", sorted(_ADAPTIVE))
def test_adaptive_loss_scale_control_initial_step_size_breaks_it(name: str) -> None:
    """Negative control: during the initial_step_size override K is not used, so AdaMo's step scales with the loss;
    Auto-Adam's V / sqrt(S) does not, so its control uses eps large enough to matter instead."""
    rng, cls = random.Random(0), _ADAPTIVE[name]
    w0, targets, curv = _lars_problem(rng, 2)
    config = _adaptive_config(rng, name)
    config = dict(config, initial_step_size=0.05, initial_steps=2) if name == "adamo" else dict(config, eps=0.1)
    base, _ = _run_adaptive(cls, w0, targets, curv, 3, config)
    assert _maxdiff(_run_adaptive(cls, w0, targets, curv, 3, config, loss_scale=1 / 64)[0], base) > 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_adamo_observed_moves_no_coordinate_more_than_lr(seed: int) -> None:
    """Documented: |V_i| <= K (V averages g, K averages max ||g_l|| >= |g_i|; with decay ||g + lambda w|| <=
    ||g|| + lambda ||w||), so no coordinate moves more than lr per step."""
    rng = random.Random(seed)
    for _ in range(20):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _adaptive_config(rng, "adamo", weight_decay=rng.choice([0.0, 0.1, 1.0]))
        _, largest = _run_adaptive(AdaMo, w0, targets, curv, rng.randint(1, 8), config)
        assert largest <= config["lr"] * (1 + 1e-12)


@pytest.mark.parametrize("name", sorted(_ADAPTIVE))
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_adaptive_bias_correction_cancels(name: str, seed: int) -> None:
    """Documented: V and K1 share 1 - b1^t, S and K2 share 1 - b2^t, so with eps = 0 the flag changes nothing."""
    rng, cls = random.Random(seed), _ADAPTIVE[name]
    for _ in range(10):
        w0, targets, curv = _lars_problem(rng, rng.randint(1, 3))
        config = _adaptive_config(rng, name, weight_decay=rng.choice([0.0, 0.1]))
        steps = rng.randint(1, 6)
        on, _ = _run_adaptive(cls, w0, targets, curv, steps, dict(config, bias_correction=True))
        off, _ = _run_adaptive(cls, w0, targets, curv, steps, dict(config, bias_correction=False))
        assert _maxdiff(on, off) < 1e-12


@pytest.mark.parametrize("name", sorted(_ADAPTIVE))
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_adaptive_bias_correction_during_the_initial_steps_is_adams(name: str, seed: int) -> None:
    """Documented (the classes' notes): during the initial_step_size steps no K divides V, so the corrected V (and
    S) are used, as Adam uses them. From a zero state the first step is then 1 / (1 - b1) (AdaMo),
    sqrt(1 - b2) / (1 - b1) (Auto-Adam, eps = 0) or sqrt(1 - b2) (adaptive RMSprop) times the uncorrected one."""
    rng, cls = random.Random(seed), _ADAPTIVE[name]
    w0, targets, curv = _lars_problem(rng, 2)
    config = _adaptive_config(rng, name, initial_step_size=0.05, initial_steps=2)
    on, _ = _run_adaptive(cls, w0, targets, curv, 1, dict(config, bias_correction=True))
    off, _ = _run_adaptive(cls, w0, targets, curv, 1, dict(config, bias_correction=False))
    b1, b2 = config["betas"] if name == "autoadam" else (config["beta"], config["beta"])
    ratio = {"adamo": 1 / (1 - b1), "autoadam": math.sqrt(1 - b2) / (1 - b1), "rmsprop": math.sqrt(1 - b2)}[name]
    for a, b, w in zip(on, off, w0):
        torch.testing.assert_close(a - w, ratio * (b - w), rtol=1e-12, atol=1e-15)


def _mlp(seed: int, din: int, hidden: int, k: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(din, hidden), nn.Tanh(), nn.Linear(hidden, k, bias=bias)).to(F64)


def _train(
    model: nn.Module, opt: Any, batches: list[tuple[Tensor, Tensor]], epochs: int, scale: float = 1.0, sched: Any = None
) -> list[float]:
    lrs = []
    for _ in range(epochs):
        for xb, yb in batches:
            opt.zero_grad()
            (scale * F.cross_entropy(model(xb), yb)).backward()
            opt.step()
        if sched is not None:
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("seed", SEEDS)
def test_closed_form_constants_do_not_see_the_loss_scale(seed: int) -> None:
    """The closed forms read activations only, so scaling the loss by c is AdaMo's lr times c (V scales, K not),
    LipschitzLR's multiplier times c (SGD), and leaves Auto-Adam / adaptive RMSprop (eps = 0: V / sqrt(S)) as is."""
    rng = random.Random(seed)
    din, hidden, k, m = rng.randint(1, 4), rng.randint(2, 5), rng.randint(2, 4), rng.randint(4, 12)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(m, din, generator=gen, dtype=F64), torch.randint(0, k, (m,), generator=gen)
    size = rng.randint(1, m)
    batches = list(zip(x.split(size), y.split(size)))
    c, rigorous = 2.0 ** rng.randint(-5, 5), rng.random() < 0.5

    def weights(model: nn.Module) -> list[Tensor]:
        return [p.detach().clone() for p in model.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = []
        for lr, scale in ((0.1, c), (0.1 * c, 1.0)):
            model = _mlp(seed, din, hidden, k)
            with AdaMo(model.parameters(), lr=lr, beta=0.9, model=model, rigorous=rigorous) as opt:
                _train(model, opt, batches, 2, scale)
            results.append(weights(model))
        assert all(torch.equal(a, b) for a, b in zip(*results))
        for cls in (AutoAdam, AdaptiveRMSprop):
            results = []
            for scale in (c, 1.0):
                model = _mlp(seed, din, hidden, k)
                with cls(model.parameters(), lr=0.01, eps=0.0, model=model, rigorous=rigorous) as opt:
                    _train(model, opt, batches, 2, scale)
                results.append(weights(model))
            assert all(torch.equal(a, b) for a, b in zip(*results))
    results, lrs = [], []
    for lr, scale in ((0.5, c), (0.5 * c, 1.0)):
        model = _mlp(seed, din, hidden, k)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with LipschitzLR(opt, model, rigorous=rigorous) as sched:
            lrs.append(_train(model, opt, batches, 3, scale, sched))
        results.append(weights(model))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert [a * c for a in lrs[0]] == lrs[1]


# ----------------------------------------------------------------------------------------------------------------
# Closed forms and the rigorous bound
# ----------------------------------------------------------------------------------------------------------------
def _bound_inputs(seed: int) -> tuple[Tensor, int, Tensor, Tensor, Tensor, float]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    m, n, k = rng.randint(1, 8), rng.randint(1, 6), rng.randint(2, 5)
    a = torch.randn(m, n, generator=gen, dtype=F64) * rng.choice([1e-3, 1.0, 1e3])
    labels = torch.randint(0, k, (m,), generator=gen)
    binary = torch.randint(0, 2, (m,), generator=gen).to(F64)
    real = torch.randn(m, rng.randint(1, 3), generator=gen, dtype=F64)
    return a, k, labels, binary, real, rng.uniform(0.1, 5.0)


@pytest.mark.parametrize("seed", range(12))
def test_gradient_norm_bound_scales_like_the_gradient(seed: int) -> None:
    """The last-layer gradient (1/m) G^T A is linear in A for softmax and BCE: B(cA) = c B(A). For least squares
    (1/m)(W A^T A - Y^T A) with ||W|| <= K: B(cA, K/c) = c B(A, K). The activation norms are homogeneous too."""
    a, k, labels, binary, real, bound = _bound_inputs(seed)
    for c in (2.0 ** (seed - 6), math.exp(seed / 3 - 2)):
        exact = math.log2(c).is_integer()
        pairs = [
            (
                gradient_norm_bound(c * a, "softmax", num_classes=k, targets=labels),
                c * gradient_norm_bound(a, "softmax", num_classes=k, targets=labels),
            ),
            (gradient_norm_bound(c * a, "softmax"), c * gradient_norm_bound(a, "softmax")),
            (gradient_norm_bound(c * a, "bce", targets=binary), c * gradient_norm_bound(a, "bce", targets=binary)),
            (
                gradient_norm_bound(c * a, "least_squares", targets=real, weight_bound=bound / c),
                c * gradient_norm_bound(a, "least_squares", targets=real, weight_bound=bound),
            ),
            (cf.least_squares_rigorous(c * a, real, bound / c), c * cf.least_squares_rigorous(a, real, bound)),
            (cf.least_squares(c * a, real, bound / c, check=False), c * cf.least_squares(a, real, bound, check=False)),
            (cf.softmax_regression(c * a, k), c * cf.softmax_regression(a, k)),
            (cf.weight_bound_estimate(c * a), c * cf.weight_bound_estimate(a)),
            *((cf.activation_norm(c * a, kind), c * cf.activation_norm(a, kind)) for kind in cf.ACTIVATION_NORMS),
        ]
        for got, want in pairs:
            if exact and not torch.isnan(want):
                assert torch.equal(got, want)
            else:
                assert torch.allclose(got, want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("seed", range(12))
def test_gradient_norm_bound_sees_only_the_mean_gradient(seed: int) -> None:
    """The bound is of the batch-mean gradient: invariant to the order of the rows, to every row given twice, to a
    zero feature; bias=True is a column of ones; one-hot probabilities are the class indices; relabelling the
    classes and flipping BCE targets (y -> 1 - y, with the centre 1/2) change nothing."""
    a, k, labels, binary, real, bound = _bound_inputs(seed)
    m = a.shape[0]
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    cases = {
        "softmax": {"num_classes": k, "targets": labels},
        "bce": {"targets": binary},
        "least_squares": {"targets": real, "weight_bound": bound},
    }
    for loss, kw in [*cases.items(), ("softmax", {})]:
        for bias in (False, True):
            ref = gradient_norm_bound(a, loss, bias=bias, **kw)
            take = {key: (v[perm] if isinstance(v, Tensor) else v) for key, v in kw.items()}
            twice = {key: (torch.cat([v, v]) if isinstance(v, Tensor) else v) for key, v in kw.items()}
            assert torch.allclose(gradient_norm_bound(a[perm], loss, bias=bias, **take), ref, rtol=1e-12)
            assert torch.allclose(gradient_norm_bound(torch.cat([a, a]), loss, bias=bias, **twice), ref, rtol=1e-6)
            padded = torch.cat([a, torch.zeros(m, 1, dtype=F64)], 1)
            assert torch.allclose(gradient_norm_bound(padded, loss, bias=bias, **kw), ref, rtol=1e-12)
        ones = torch.cat([a, torch.ones(m, 1, dtype=F64)], 1)
        assert torch.equal(gradient_norm_bound(a, loss, bias=True, **kw), gradient_norm_bound(ones, loss, **kw))
    ref = gradient_norm_bound(a, "softmax", num_classes=k, targets=labels)
    onehot = F.one_hot(labels, k).to(F64)
    assert torch.allclose(gradient_norm_bound(a, "softmax", targets=onehot), ref, rtol=1e-13)
    relabel = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(gradient_norm_bound(a, "softmax", num_classes=k, targets=relabel[labels]), ref, rtol=1e-12)
    flipped = gradient_norm_bound(a, "bce", targets=1 - binary)
    assert torch.equal(flipped, gradient_norm_bound(a, "bce", targets=binary))


@pytest.mark.parametrize("seed", range(8))
def test_regularisation_terms_agree_across_forms(seed: int) -> None:
    """Tikhonov: gamma, a 0-dim tensor, a constant diagonal and gamma * I are the same Gamma; the term depends on
    ||Gamma^T Gamma||_2 only (invariant to Q Gamma Q^T and -Gamma); lambda/2 ||w||^2 is Gamma = sqrt(lambda/2) I;
    softmax with k = 2 is BCE (eq. 23 vs eq. 18)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    gamma, bound, n = rng.uniform(-2, 2), rng.uniform(0.1, 5), rng.randint(1, 4)
    ref = cf.tikhonov_term(gamma, bound)
    assert math.isclose(float(cf.tikhonov_term(torch.tensor(gamma, dtype=F64), bound)), ref, rel_tol=1e-14)
    assert math.isclose(float(cf.tikhonov_term(torch.full((n,), gamma, dtype=F64), bound)), ref, rel_tol=1e-14)
    assert math.isclose(float(cf.tikhonov_term(gamma * torch.eye(n, dtype=F64), bound)), ref, rel_tol=1e-13)
    mat = torch.randn(n, n, generator=gen, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    assert math.isclose(
        float(cf.tikhonov_term(q @ mat @ q.T, bound)), float(cf.tikhonov_term(mat, bound)), rel_tol=1e-12
    )
    assert math.isclose(float(cf.tikhonov_term(-mat, bound)), float(cf.tikhonov_term(mat, bound)), rel_tol=1e-14)
    lam = rng.uniform(0, 2)
    assert math.isclose(cf.l2_term(lam, bound), cf.tikhonov_term(math.sqrt(lam / 2), bound), rel_tol=1e-13)
    k_z, m = rng.uniform(0.1, 10), rng.randint(1, 50)
    assert cf.softmax_cross_entropy(k_z, m, 2) == cf.binary_cross_entropy(k_z, m)


def _tracked_epoch(
    model: nn.Module, loss: str, k: int, batches: list[tuple[Tensor, Tensor]], rigorous: bool, kind: str, **kw: Any
) -> dict[str, Any]:
    tracker = ActivationTracker(
        model,
        loss,
        num_classes=k if loss == "softmax" else None,
        rigorous=rigorous,
        activation_norm=kind,
        weight_bound=50.0 if loss == "least_squares" and not rigorous else None,
        **kw,
    )
    for xb, yb in batches:
        model(xb)
        tracker.observe_targets(yb)
    values = tracker.epoch_values(weight_decay=0.1)
    tracker.close()
    assert values is not None
    return values


def _tracked_problem(seed: int) -> tuple[random.Random, str, int, int, int, nn.Sequential, list[tuple[Tensor, Tensor]]]:
    rng = random.Random(seed)
    loss = ["softmax", "bce", "least_squares"][seed % 3]
    k = 1 if loss == "bce" else rng.randint(2, 4)
    din, hidden = rng.randint(1, 4), rng.randint(1, 5)
    model = _mlp(seed, din, hidden, k, bias=rng.random() < 0.7)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(rng.randint(1, 4)):
        size = rng.randint(1, 5)
        x = torch.randn(size, din, generator=gen, dtype=F64)
        if loss == "softmax":
            y = torch.randint(0, k, (size,), generator=gen)
        elif loss == "bce":
            y = torch.randint(0, 2, (size,), generator=gen).to(F64)
        else:
            y = torch.randn(size, k, generator=gen, dtype=F64)
        batches.append((x, y))
    return rng, loss, k, din, hidden, model, batches


@pytest.mark.parametrize("seed", range(9))
@pytest.mark.parametrize("rigorous", [False, True])
def test_tracker_epoch_constant_invariances(seed: int, rigorous: bool) -> None:
    """An epoch's L = max_b L_b + lambda K: invariant to the order of the batches, to seeing each batch twice, to
    permuting the rows within a batch and to permuting the hidden units that feed the last layer (K_z, ||W|| and
    the bound are symmetric in them). Rows duplicated within every batch: the rigorous bound (of the mean gradient)
    is unchanged; the paper's softmax/BCE forms c K_z / m become 1/sqrt(2) ("fro", "spectral") or 1/2 ("max_row")
    of it; a mid-epoch state_dict round trip continues the same epoch."""
    rng, loss, k, din, hidden, model, batches = _tracked_problem(seed)
    for kind in ("fro", "spectral", "max_row"):
        ref = _tracked_epoch(model, loss, k, batches, rigorous, kind)
        data = ref["data_lipschitz"]
        assert ref["lipschitz"] == pytest.approx(data + 0.1 * ref["weight_bound"], rel=1e-14)
        assert _tracked_epoch(model, loss, k, batches[::-1], rigorous, kind)["lipschitz"] == ref["lipschitz"]
        assert _tracked_epoch(model, loss, k, batches + batches, rigorous, kind)["lipschitz"] == ref["lipschitz"]
        shuffled = []
        for x, y in batches:
            p = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
            shuffled.append((x[p], y[p]))
        assert _tracked_epoch(model, loss, k, shuffled, rigorous, kind)["lipschitz"] == pytest.approx(
            ref["lipschitz"], rel=1e-12
        )
        twice = [(torch.cat([x, x]), torch.cat([y, y])) for x, y in batches]
        doubled = _tracked_epoch(model, loss, k, twice, rigorous, kind)["data_lipschitz"]
        if rigorous:
            assert doubled == pytest.approx(data, rel=1e-6)
        elif loss != "least_squares":
            assert doubled == pytest.approx(data * (0.5 if kind == "max_row" else 2**-0.5), rel=1e-12)
        perm = torch.randperm(hidden, generator=torch.Generator().manual_seed(seed + 1))
        permuted = _mlp(seed, din, hidden, k, bias=model[2].bias is not None)
        with torch.no_grad():
            permuted[0].weight.copy_(model[0].weight[perm])
            permuted[0].bias.copy_(model[0].bias[perm])
            permuted[2].weight.copy_(model[2].weight[:, perm])
            if model[2].bias is not None:
                permuted[2].bias.copy_(model[2].bias)
        assert _tracked_epoch(permuted, loss, k, batches, rigorous, kind)["lipschitz"] == pytest.approx(
            ref["lipschitz"], rel=1e-12
        )
        named = _tracked_epoch(model, loss, k, batches, rigorous, kind, penultimate="1")
        assert named["lipschitz"] == pytest.approx(ref["lipschitz"], rel=1e-14)
    cut = rng.randint(0, len(batches))
    kwargs = {
        "num_classes": k if loss == "softmax" else None,
        "rigorous": rigorous,
        "weight_bound": 50.0 if loss == "least_squares" and not rigorous else None,
    }
    first = ActivationTracker(model, loss, **kwargs)
    for x, y in batches[:cut]:
        model(x)
        first.observe_targets(y)
    state = first.state_dict()
    first.close()
    second = ActivationTracker(model, loss, **kwargs)
    second.load_state_dict(state)
    for x, y in batches[cut:]:
        model(x)
        second.observe_targets(y)
    resumed = second.epoch_values(weight_decay=0.1)
    second.close()
    whole = _tracked_epoch(model, loss, k, batches, rigorous, "fro")
    assert resumed is not None and resumed["lipschitz"] == whole["lipschitz"] and resumed["batches"] == whole["batches"]


# ----------------------------------------------------------------------------------------------------------------
# Curvature estimates and the exact Adam step
# ----------------------------------------------------------------------------------------------------------------
class _Scaled:
    """``c * loss_fn``, still a mean-reduced criterion."""

    def __init__(self, base: nn.Module, c: float) -> None:
        self.base, self.c = base, c

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        return self.c * self.base(out, y)


@pytest.mark.parametrize("seed", range(6))
def test_hessian_spectral_norm_metamorphic(seed: int) -> None:
    """||H|| of the batch-size-weighted mean loss: c ||H|| for the loss times c; unchanged by repeating every
    sample, by splitting the data into uneven batches in any order, by permuting its rows, and by permuting the
    hidden units (H is conjugated by a permutation). The loss L(w) obeys the same, and a sub-block of parameters
    has a spectral norm no larger than the whole Hessian's (interlacing)."""
    rng = random.Random(seed)
    din, hidden, k, m = rng.randint(1, 4), rng.randint(2, 5), rng.randint(2, 4), rng.randint(3, 12)
    model = _mlp(seed, din, hidden, k)
    model[1] = rng.choice([nn.Tanh(), nn.Sigmoid(), nn.Softplus()])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, din, generator=gen, dtype=F64)
    ce = seed % 2 == 0
    y = torch.randint(0, k, (m,), generator=gen) if ce else torch.randn(m, k, generator=gen, dtype=F64)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if ce else nn.MSELoss()
    opts: dict[str, Any] = {"tol": 1e-10, "max_matvecs": 200, "seed": seed}
    base = hessian_spectral_norm(model, loss_fn, (x, y), **opts).value
    loss0 = data_loss(model, loss_fn, (x, y))
    c = 2.0 ** rng.randint(-6, 6)
    assert hessian_spectral_norm(model, _Scaled(loss_fn, c), (x, y), **opts).value == c * base
    assert data_loss(model, _Scaled(loss_fn, c), (x, y)) == c * loss0
    doubled = (torch.cat([x, x]), torch.cat([y, y]))
    assert hessian_spectral_norm(model, loss_fn, doubled, **opts).value == pytest.approx(base, rel=1e-9)
    assert data_loss(model, loss_fn, doubled) == pytest.approx(loss0, rel=1e-13)
    cuts = sorted(rng.sample(range(1, m), rng.randint(1, min(3, m - 1))))
    edges = [0, *cuts, m]
    batches = [(x[a:b], y[a:b]) for a, b in itertools.pairwise(edges)]
    for data in (batches, batches[::-1]):
        assert hessian_spectral_norm(model, loss_fn, data, **opts).value == pytest.approx(base, rel=1e-9)
        assert data_loss(model, loss_fn, data) == pytest.approx(loss0, rel=1e-13)
    rows = torch.randperm(m, generator=gen)
    assert hessian_spectral_norm(model, loss_fn, (x[rows], y[rows]), **opts).value == pytest.approx(base, rel=1e-9)
    perm = torch.randperm(hidden, generator=gen)
    permuted = _mlp(seed, din, hidden, k)
    permuted[1] = model[1]
    with torch.no_grad():
        permuted[0].weight.copy_(model[0].weight[perm])
        permuted[0].bias.copy_(model[0].bias[perm])
        permuted[2].weight.copy_(model[2].weight[:, perm])
        permuted[2].bias.copy_(model[2].bias)
    assert hessian_spectral_norm(permuted, loss_fn, (x, y), **opts).value == pytest.approx(base, rel=1e-8)
    block = hessian_spectral_norm(model, loss_fn, (x, y), params=[model[2].weight], **opts).value
    assert block <= base * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_exact_step_is_scale_free_and_smoothness_grows_with_samples(seed: int) -> None:
    """alpha = sqrt(2 L(w0) / (K_hat T)): K_hat and L(w0) scale with the loss and alpha does not; repeating the
    data leaves it; 4 T halves it. smoothness with N + 2 samples extends the N-sample list, so K_hat cannot drop."""
    rng = random.Random(seed)
    din, k, m = rng.randint(1, 3), rng.randint(2, 3), rng.randint(4, 10)
    model = _mlp(seed, din, 3, k)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(m, din, generator=gen, dtype=F64), torch.randint(0, k, (m,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()
    c, steps = 2.0 ** rng.randint(-4, 4), rng.randint(1, 1000)
    est = {"tol": 1e-10, "max_matvecs": 200}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref = exact_step_adam(model, loss_fn, (x, y), steps, num_samples=2, seed=seed, estimate_kwargs=est)
        _, scaled = exact_step_adam(
            model, _Scaled(loss_fn, c), (x, y), steps, num_samples=2, seed=seed, estimate_kwargs=est
        )
        _, longer = exact_step_adam(
            model,
            loss_fn,
            [(torch.cat([x, x]), torch.cat([y, y]))],
            4 * steps,
            num_samples=2,
            seed=seed,
            estimate_kwargs=est,
        )
    assert scaled.k_hat == c * ref.k_hat and scaled.initial_loss == c * ref.initial_loss
    assert scaled.alpha == pytest.approx(ref.alpha, rel=1e-15)
    assert longer.alpha == pytest.approx(ref.alpha / 2, rel=1e-9)
    assert constant_step(c * 1.7, c * 9.0, steps) == pytest.approx(constant_step(1.7, 9.0, steps), rel=1e-15)
    few = smoothness(model, loss_fn, (x, y), num_samples=2, seed=seed, **est)
    more = smoothness(model, loss_fn, (x, y), num_samples=4, seed=seed, **est)
    assert [s.seed for s in more.samples[:2]] == [s.seed for s in few.samples]
    assert more.k_hat >= few.k_hat


# ----------------------------------------------------------------------------------------------------------------
# theorylr.theory (LARS in one dimension)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_lars_1d_theory_scale_and_sign_symmetry(seed: int) -> None:
    """Eq. (1) in 1-D depends on f only through sign(w - a) and moves by lr |w|: (w0, a) -> (c w0, c a) scales
    the iterates by c (c < 0 included) and leaves the step counts alone; min_norm scales with them. The iterates
    enter the invariant interval at steps_to_interval and never leave it."""
    rng = random.Random(seed)
    for _ in range(100):
        a = math.exp(rng.uniform(-3, 3)) * rng.choice([1, -1])
        w0 = a * math.exp(rng.uniform(-4, 4))
        lr = rng.choice([rng.uniform(0.001, 0.99), 0.1, 0.25, 0.5])
        c = 2.0 ** rng.randint(-30, 30) * rng.choice([1, -1])
        count = lt.steps_to_interval(w0, a, lr)
        assert lt.steps_to_interval(c * w0, c * a, lr) == count
        low, high = lt.invariant_interval(a, lr)
        assert lt.invariant_interval(c * a, lr) == tuple(sorted((c * low, c * high)))
        steps = rng.randint(0, 30)
        path = lt.lars_1d_trajectory(w0, a, lr, steps)
        assert lt.lars_1d_trajectory(c * w0, c * a, lr, steps) == [c * w for w in path]
        floor = abs(w0) * math.exp(rng.uniform(-5, 0.5))
        assert lt.steps_to_fallback(c * w0, lr, abs(c) * floor) == lt.steps_to_fallback(w0, lr, floor)
        assert lt.origin_attraction(c * w0, lr, steps) == c * lt.origin_attraction(w0, lr, steps)
        if count < 2000:
            path = lt.lars_1d_trajectory(w0, a, lr, count + 20)
            inside = [low * (1 - 1e-12) <= w <= high * (1 + 1e-12) for w in path]
            assert not any(inside[:count]) and all(inside[count:])


# ----------------------------------------------------------------------------------------------------------------
# The lab's scores
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_performance_profile_metamorphic(seed: int) -> None:
    """rho_rule(tau) compares each time with the workload's best: invariant to rescaling a workload's times, to
    renaming rules and workloads, to a workload no rule reaches and to a rule that never reaches."""
    rng = random.Random(seed)
    for _ in range(50):
        rules = [f"r{i}" for i in range(rng.randint(1, 5))]
        times = {
            f"w{w}": {
                r: rng.choice([math.inf, rng.uniform(0.1, 100.0), float(rng.randint(1, 5))])
                for r in rules
                if rng.random() < 0.85
            }
            for w in range(rng.randint(1, 5))
        }
        taus = sorted(rng.choice([1.0, 1.5, 2.0, rng.uniform(1, 10)]) for _ in range(5))
        ref = performance_profile(times, taus)
        factors = {w: 2.0 ** rng.randint(-10, 10) for w in times}
        assert (
            performance_profile({w: {r: t * factors[w] for r, t in per.items()} for w, per in times.items()}, taus)
            == ref
        )
        names = {r: f"z{j}" for j, r in enumerate(rng.sample(rules, len(rules)))}
        renamed = performance_profile(
            {f"W{w}": {names[r]: t for r, t in per.items()} for w, per in times.items()}, taus
        )
        assert all(renamed[names[r]] == v for r, v in ref.items())
        dead = performance_profile({**times, "dead": dict.fromkeys(rules, math.inf)}, taus)
        assert all(str(dead[r]) == str(v) for r, v in ref.items())  # str: nan == nan when no workload is usable
        never = performance_profile({w: dict(per, never=math.inf) for w, per in times.items()}, taus)
        assert all(never[r] == v for r, v in ref.items())


@pytest.mark.parametrize("seed", SEEDS)
def test_best_trial_ignores_seed_labels_and_order(seed: int) -> None:
    """The best trial is the lowest median over seeds: relabelling or reordering the seeds, reordering the trials
    and shifting their indices (ties go to the lowest index) cannot change which one it is."""
    rng = random.Random(seed)
    for _ in range(50):
        metric = rng.choice(["train_loss", "test_accuracy"])

        def run(trial: int, seed_: int, value: float, status: str, metric: str = metric) -> Run:
            config = {
                "workload": {"name": "w"},
                "rule": {"name": "r", "kind": "theory"},
                "trial": trial,
                "seed": seed_,
                "lr": 0.1,
            }
            return Run(Path("."), config, {"status": status}, [{"step": 1.0, metric: value}])

        seeds = rng.randint(1, 4)
        trials = {
            t: [
                run(
                    t,
                    s,
                    rng.choice([rng.uniform(0, 1), 0.5, math.nan]),
                    rng.choice(["finished"] * 4 + ["diverged", "running"]),
                )
                for s in range(seeds)
            ]
            for t in range(rng.randint(1, 5))
        }
        best = best_trial(trials, metric)
        labels = rng.sample(range(100), seeds)
        relabelled = {
            t: [
                Run(r.directory, dict(r.config, seed=labels[r.seed]), r.meta, r.rows)
                for r in rng.sample(runs, len(runs))
            ]
            for t, runs in trials.items()
        }
        assert best_trial(relabelled, metric) == best
        keys = rng.sample(list(trials), len(trials))
        assert best_trial({t: trials[t] for t in keys}, metric) == best
        shift = rng.randint(1, 10)
        assert best_trial({t + shift: runs for t, runs in trials.items()}, metric) == best + shift
