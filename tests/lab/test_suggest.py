"""``theorylr.lab.suggest``: every row against the function it claims to be, on the same inputs, with numerical
references (a dense Hessian, brute-force gradient norms, hand-computed activations); the model left untouched; the
JSON round trip; the rows that cannot apply; the CLI."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from theorylr.cli import main
from theorylr.estimate import data_loss, hessian_spectral_norm, smoothness
from theorylr.lab.range_test import RangeTestResult, lr_range_test
from theorylr.lab.suggest import Cost, Suggestion, SuggestionRow, detect_loss, suggest
from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import activation_norm, least_squares_nn, softmax_cross_entropy
from theorylr.optim.exact_adam import exact_step_adam
from theorylr.optim.lars import LARS
from theorylr.theory.adam import constant_step
from theorylr.theory.lars import (
    corollary_2_1,
    fixed_lr_bound,
    theorem2_bound,
    theorem2_constants,
)

D = torch.float64
EPS = 0.01
T = 50


def _strict_json(text: str) -> object:
    def reject(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)
    x = torch.randn(40, 4, generator=gen, dtype=D)
    y = torch.randint(0, 3, (40,), generator=gen)
    return model, (x, y)


@pytest.fixture(scope="module")
def full(problem: tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]) -> Suggestion:
    model, data = problem
    return suggest(
        model,
        nn.CrossEntropyLoss(),
        data,
        total_steps=T,
        optimizer="all",
        num_samples=2,
        target_accuracy=EPS,
        range_test=True,
        range_test_options={"num_steps": 8},
    )


def _dense_hessian(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        parts, start = {}, 0
        for name, shape in zip(names, shapes):
            n = math.prod(shape)
            parts[name] = v[start : start + n].reshape(shape)
            start += n
        return loss_fn(torch.func.functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


def _full_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    with torch.enable_grad():
        return list(torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters())))


# ----------------------------------------------------------------------------------------------------------------
# Each row equals its function on the same inputs
# ----------------------------------------------------------------------------------------------------------------
def test_rows_and_order(full: Suggestion) -> None:
    assert [r.name for r in full.rows] == [
        "gd-descent",
        "gd-stability",
        "lipschitz-paper",
        "lipschitz-rigorous",
        "range-test-sgd",
        "exact-adam",
        "range-test-adam",
        "lars-trust-ratios",
        "lars-corollary-2.1",
        "lars-corollary-2.1-rigorous",
        "range-test-lars",
    ]
    for row in full.rows:
        assert row.formula and row.reference and row.caveat, row.name
        assert row.lr is not None or row.name == "lars-trust-ratios", (row.name, row.message)


def test_gd_rows_are_one_and_two_over_the_dense_hessian_norm(problem, full: Suggestion) -> None:
    model, (x, y) = problem
    reference = hessian_spectral_norm(model, nn.CrossEntropyLoss(), (x, y), seed=0)
    assert full.row("gd-descent").lr == 1.0 / reference.value
    assert full.row("gd-stability").lr == 2.0 / reference.value
    eigenvalues = torch.linalg.eigvalsh(_dense_hessian(model, nn.CrossEntropyLoss(), x, y))
    k_dense = float(eigenvalues.abs().max())
    assert full.row("gd-descent").quantities["K"] == pytest.approx(k_dense, rel=1e-6)
    assert full.row("gd-descent").quantities["lambda_max"] == pytest.approx(float(eigenvalues[-1]), rel=1e-6)
    assert full.row("gd-descent").quantities["lambda_min"] == pytest.approx(float(eigenvalues[0]), abs=1e-3 * k_dense)


def test_lipschitz_rows_from_hand_computed_activations(problem, full: Suggestion) -> None:
    model, (x, y) = problem
    with torch.no_grad():
        a = torch.tanh(model[0](x))  # the input of the last Linear, by hand
    m, k = x.shape[0], 3
    paper_l = (k - 1) * float(a.norm()) / (k * m)  # eq. 23 with K_z = ||A||_F
    row = full.row("lipschitz-paper")
    assert row.lr == pytest.approx(1.0 / paper_l, rel=1e-12)
    assert row.lr == 1.0 / softmax_cross_entropy(float(activation_norm(a)), m, k)
    rigorous = full.row("lipschitz-rigorous")
    # The last Linear has a bias: B bounds the gradient of [W, b], as LipschitzLR(rigorous=True) does (it bounded
    # W's alone, so a step of 1/B could move the layer by more than the row's "at most 1").
    bound = float(gradient_norm_bound(a, "softmax", num_classes=k, targets=y, bias=True))
    assert rigorous.lr == 1.0 / bound
    # B really bounds the last-layer gradient norm, at the current weights and at random ones of any size.
    gen = torch.Generator().manual_seed(3)
    for scale in (0.0, 1.0, 10.0, 100.0):
        w = scale * torch.randn(k, a.shape[1], generator=gen, dtype=D)
        b = scale * torch.randn(k, generator=gen, dtype=D)
        w.requires_grad_(True)
        b.requires_grad_(True)
        grads = torch.autograd.grad(F.cross_entropy(a @ w.T + b, y), (w, b))
        assert float(torch.cat([g.flatten() for g in grads]).norm()) <= bound
    assert rigorous.quantities["K_z"] == row.quantities["K_z"] and rigorous.quantities["m"] == m


def test_lipschitz_rows_take_the_largest_batch(problem) -> None:
    model, (x, y) = problem
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]
    s = suggest(model, nn.CrossEntropyLoss(), batches, total_steps=T)
    with torch.no_grad():
        acts = [torch.tanh(model[0](xb)) for xb, _ in batches]
    paper = max(softmax_cross_entropy(float(a.norm()), a.shape[0], 3) for a in acts)
    rigorous = max(
        float(gradient_norm_bound(a, "softmax", num_classes=3, targets=yb, bias=True))
        for a, (_, yb) in zip(acts, batches)
    )
    assert s.row("lipschitz-paper").lr == pytest.approx(1.0 / paper, rel=1e-12)
    assert s.row("lipschitz-rigorous").lr == 1.0 / rigorous
    assert s.row("gd-descent").lr == 1.0 / hessian_spectral_norm(model, nn.CrossEntropyLoss(), batches, seed=0).value
    assert s.settings["examples"] == 40 and s.settings["batches"] == 2


def test_exact_adam_row_equals_exact_step_adam(problem, full: Suggestion) -> None:
    model, data = problem
    _, step = exact_step_adam(copy.deepcopy(model), nn.CrossEntropyLoss(), data, T, num_samples=2, seed=0)
    row = full.row("exact-adam")
    assert row.lr == step.alpha
    l0 = data_loss(model, nn.CrossEntropyLoss(), data)
    k_hat = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, seed=0).k_hat
    assert row.lr == constant_step(l0, k_hat, T)
    assert row.lr == pytest.approx(math.sqrt(2 * l0 / (k_hat * T)), rel=1e-14)
    assert row.quantities["L(w0)"] == l0 and row.quantities["K_hat"] == k_hat and row.quantities["T"] == T
    # L(w0) is the mean cross-entropy, by hand.
    with torch.no_grad():
        assert l0 == pytest.approx(float(F.cross_entropy(model(data[0]), data[1])), rel=1e-12)


def test_trust_ratios_equal_the_optimizers_own(problem, full: Suggestion) -> None:
    model, (x, y) = problem
    grads = _full_grad(model, x, y)
    row = full.row("lars-trust-ratios")
    trial = copy.deepcopy(model)
    for p, g in zip(trial.parameters(), grads):
        p.grad = g.clone()
    opt = LARS(trial.parameters(), lr=0.1)
    opt.step()
    for (name, p), g, q in zip(model.named_parameters(), grads, trial.parameters()):
        expected = float(p.detach().norm()) / (float(g.norm()) + 1e-8)  # eq. (1) with eps, all norms > min_norm here
        assert row.quantities[f"ratio/{name}"] == pytest.approx(expected, rel=1e-12)
        assert row.quantities[f"ratio/{name}"] == float(opt.state[q]["trust_ratio"])
    w = math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters()))
    g = math.sqrt(sum(float(t.square().sum()) for t in grads))
    assert row.quantities["||w||"] == pytest.approx(w, rel=1e-12)
    assert row.quantities["global_ratio"] == pytest.approx(w / g, rel=1e-12)


def test_corollary_rows_equal_theory_lars(problem, full: Suggestion) -> None:
    model, _ = problem
    w0 = math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters()))
    lipschitz = full.row("gd-descent").quantities["K"]
    w_star, m1, m2 = w0, 2 * w0, w0 / 2  # the documented stand-ins
    c1, c2 = theorem2_constants(lipschitz, m1, m2, w_star)
    lr, steps = corollary_2_1(EPS, c1, c2)
    paper = full.row("lars-corollary-2.1")
    assert paper.lr == pytest.approx(lr, rel=1e-14) and paper.quantities["steps"] == steps
    assert paper.lr == pytest.approx(math.sqrt(EPS / (3 * lipschitz * (w_star + m1) ** 2 / 2)), rel=1e-12)
    assert theorem2_bound(steps, paper.lr, c1, c2) < EPS  # the paper's promise at its own step count
    rigorous = full.row("lars-corollary-2.1-rigorous")
    steps_r = rigorous.quantities["steps"]
    assert rigorous.lr == pytest.approx(EPS * m2 / (lipschitz * m1 * (w_star + m1) ** 2), rel=1e-12)
    bound = fixed_lr_bound(steps_r, rigorous.lr, lipschitz=lipschitz, m1=m1, m2=m2, w_star_norm=w_star, dist0=m1)
    assert (
        bound
        < EPS
        <= fixed_lr_bound(steps_r - 1, rigorous.lr, lipschitz=lipschitz, m1=m1, m2=m2, w_star_norm=w_star, dist0=m1)
        + 1e-12
    )


def test_corollary_uses_given_bounds_and_needs_a_target(problem) -> None:
    model, data = problem
    s = suggest(
        model,
        nn.CrossEntropyLoss(),
        data,
        total_steps=T,
        optimizer="lars",
        target_accuracy=0.1,
        w_star_norm=3.0,
        distance_bound=2.0,
        min_weight_norm=0.5,
    )
    k = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0).value
    assert s.row("lars-corollary-2.1").lr == corollary_2_1(0.1, *theorem2_constants(k, 2.0, 0.5, 3.0))[0]
    assert s.row("lars-corollary-2.1-rigorous").lr == pytest.approx(0.1 * 0.5 / (k * 2.0 * (3.0 + 2.0) ** 2), rel=1e-12)
    assert s.row("lars-corollary-2.1").quantities["assumed"] == "none"
    without = suggest(model, nn.CrossEntropyLoss(), data, total_steps=T, optimizer="lars")
    assert without.row("lars-corollary-2.1").lr is None
    assert "target_accuracy" in without.row("lars-corollary-2.1").message


def test_range_test_rows_equal_lr_range_test(problem, full: Suggestion) -> None:
    model, data = problem
    reference = lr_range_test(
        model, nn.CrossEntropyLoss(), [data], lambda p, lr: torch.optim.SGD(p, lr=lr), num_steps=8
    )
    assert full.row("range-test-sgd").lr == reference.suggestion
    assert full.range_tests["sgd"].losses == reference.losses
    assert set(full.range_tests) == {"sgd", "adam", "lars"}


def test_bce_and_mse_closed_forms_with_true_bounds() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 5, generator=gen, dtype=D)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        logreg = nn.Linear(5, 1).to(D)
        regression = nn.Linear(5, 4).to(D)
    yb = (torch.rand(30, 1, generator=gen) > 0.5).to(D)
    s = suggest(logreg, nn.BCEWithLogitsLoss(), (x, yb), total_steps=T)
    assert s.settings["loss"] == "bce"
    assert s.row("lipschitz-paper").lr == pytest.approx(2 * 30 / float(x.norm()), rel=1e-12)  # L = ||X||_F / (2m)
    assert s.row("lipschitz-rigorous").lr == 1.0 / float(gradient_norm_bound(x, "bce", targets=yb, bias=True))

    # nn.MSELoss = mean over m * p entries without the 1/2: s = 2 / p times the paper's (1/2m) convention.
    yr = torch.randn(30, 4, generator=gen, dtype=D)
    s = suggest(regression, nn.MSELoss(), (x, yr), total_steps=T)
    row = s.row("lipschitz-rigorous")
    assert row.quantities["s"] == 0.5 and row.quantities["bias"] is True
    k_last = row.quantities["K_last"]
    assert 1.0 / row.lr == 0.5 * float(
        gradient_norm_bound(x, "least_squares", targets=yr, weight_bound=k_last, bias=True)
    )
    # The paper's (K K_z - ||y||) K_z / m is negative here: no lr, and the row says why.
    paper = s.row("lipschitz-paper")
    assert paper.lr is None and "<= 0" in paper.message


def test_mse_rigorous_bound_holds_with_a_bias_where_the_bias_free_one_fails() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(30, 5, generator=gen, dtype=D) + 3.0  # off-centre inputs: the bias moves the residual
    y = torch.zeros(30, 4, dtype=D)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        regression = nn.Linear(5, 4).to(D)
    s = suggest(regression, nn.MSELoss(), (x, y), total_steps=T)
    row = s.row("lipschitz-rigorous")
    bound, k_last = 1.0 / row.lr, row.quantities["K_last"]
    # The worst point of the ball ||[W, b]||_F <= K_last: [W, b] = K_last u, u the top left singular vector of
    # [X, 1]^T X (first output only).
    u = torch.linalg.svd(torch.cat([x, torch.ones(30, 1, dtype=D)], dim=1).T @ x)[0][:, 0]
    wb = torch.zeros(4, 6, dtype=D)
    wb[0] = k_last * u
    wb.requires_grad_(True)
    grad = torch.autograd.grad(F.mse_loss(x @ wb[:, :5].T + wb[:, 5], y), wb)[0]
    bias_free = 0.5 * float(gradient_norm_bound(x, "least_squares", targets=y, weight_bound=k_last))
    assert bias_free < float(grad[:, :5].norm()) <= float(grad.norm()) <= bound
    # With y = 0 the paper's form is positive: L = s K K_z^2 / m.
    k_w = max(float(p.detach().norm()) for p in regression.parameters())
    kz = float(x.norm())
    assert s.row("lipschitz-paper").lr == pytest.approx(
        1.0 / (0.5 * least_squares_nn(k_w * kz, 0.0, kz, 30)), rel=1e-12
    )


def test_detect_loss() -> None:
    assert detect_loss(nn.CrossEntropyLoss()) == "softmax"
    assert detect_loss(F.cross_entropy) == "softmax"
    assert detect_loss(nn.BCEWithLogitsLoss()) == "bce"
    assert detect_loss(nn.MSELoss()) == "least_squares"
    assert detect_loss(nn.CrossEntropyLoss(label_smoothing=0.1)) is None
    assert detect_loss(nn.MSELoss(reduction="sum")) is None
    assert detect_loss(lambda out, t: F.cross_entropy(out, t)) is None
    from theorylr.lab.losses import get_loss

    assert detect_loss(get_loss("cross_entropy")) == "softmax" and detect_loss(get_loss("binary_hinge")) is None


def test_unknown_loss_gets_a_message_and_explicit_loss_works(problem, full: Suggestion) -> None:
    model, data = problem
    s = suggest(model, lambda out, t: F.cross_entropy(out, t), data, total_steps=T)
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        assert s.row(name).lr is None and "pass loss=" in s.row(name).message
    assert s.row("gd-descent").lr == full.row("gd-descent").lr
    explicit = suggest(model, lambda out, t: F.cross_entropy(out, t), data, total_steps=T, loss="softmax")
    assert explicit.row("lipschitz-paper").lr == full.row("lipschitz-paper").lr
    assert explicit.row("lipschitz-rigorous").lr == full.row("lipschitz-rigorous").lr


# ----------------------------------------------------------------------------------------------------------------
# Models the closed forms do not fit
# ----------------------------------------------------------------------------------------------------------------
def test_model_without_linear_gets_a_message() -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten()).to(D)
    data = (torch.randn(16, 1, 8, generator=gen, dtype=D), torch.randint(0, 3, (16,), generator=gen))
    s = suggest(model, nn.CrossEntropyLoss(), data, total_steps=T)
    for name in ("lipschitz-paper", "lipschitz-rigorous"):
        assert s.row(name).lr is None and "has no nn.Linear" in s.row(name).message
    assert s.row("gd-descent").lr == 1.0 / hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0).value
    assert "has no nn.Linear" in s.table()


def test_model_whose_last_linear_is_not_the_output_gets_a_message() -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softplus()).to(D)
    data = (torch.randn(16, 4, generator=gen, dtype=D), torch.randint(0, 3, (16,), generator=gen))
    s = suggest(model, nn.CrossEntropyLoss(), data, total_steps=T)
    assert (
        s.row("lipschitz-paper").lr is None
        and "not the output of its last nn.Linear" in s.row("lipschitz-paper").message
    )


# ----------------------------------------------------------------------------------------------------------------
# The model is untouched; the cost is what was spent
# ----------------------------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_is_left_exactly_as_it_was(mode: str) -> None:
    gen = torch.Generator().manual_seed(0)
    model = _Net().to(D)
    model.train()
    model.body[1].eval()  # a mixed state must come back as it was
    data = (torch.randn(32, 5, generator=gen, dtype=D), torch.randint(0, 3, (32,), generator=gen))
    model.head.weight.grad = torch.full_like(model.head.weight, 0.5)  # an existing grad stays as it is
    params = list(model.parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    s = suggest(
        model,
        nn.CrossEntropyLoss(),
        data,
        total_steps=T,
        optimizer="all",
        num_samples=2,
        mode=mode,
        target_accuracy=0.1,
        range_test=True,
        range_test_options={"num_steps": 4},
    )
    assert all(r.lr is not None for r in s.rows if r.name != "lars-trust-ratios"), [r.message for r in s.rows]
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert torch.equal(model.head.weight.grad, torch.full_like(model.head.weight, 0.5))
    assert all(p.grad is None for p in params if p is not model.head.weight)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_cost_counts_hvps_and_forward_passes(problem) -> None:
    model, data = problem
    calls = [0]

    def count(module: nn.Module, args: object, output: object) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(count)  # deep copies (the range test's) share it
    try:
        s = suggest(
            model,
            nn.CrossEntropyLoss(),
            data,
            total_steps=T,
            optimizer=["sgd", "adam"],
            num_samples=2,
            range_test=True,
            range_test_options={"num_steps": 5},
        )
    finally:
        handle.remove()
    k = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=0)
    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, seed=0)
    assert s.cost.hvps == k.matvecs + est.matvecs
    assert s.cost.forward_passes == calls[0] > 2 * 6  # two range tests of 6 passes each, and the estimates
    assert s.cost.seconds >= sum(s.cost.stages.values()) > 0
    assert set(s.cost.stages) == {"curvature", "lipschitz", "smoothness", "range_test"}


# ----------------------------------------------------------------------------------------------------------------
# Results as data, table, plot
# ----------------------------------------------------------------------------------------------------------------
def test_json_round_trip(full: Suggestion) -> None:
    text = full.to_json()
    _strict_json(text)
    again = Suggestion.from_json(text)
    assert again.to_dict() == full.to_dict()
    assert again.rows == full.rows and again.range_tests == full.range_tests and again.cost == full.cost


def test_json_round_trip_of_non_finite_values() -> None:
    row = SuggestionRow("x", "sgd", None, "f", {"K": math.inf, "v": [math.nan, 1.0]}, "ref", "cav", "why")
    curve = RangeTestResult(
        lrs=[1e-3, 1.0], losses=[0.5, math.inf], lr_at_min=1e-3, suggestion=1e-4, stopped_early=True
    )
    s = Suggestion(rows=(row,), cost=Cost(3, 4, 0.5, {"a": 0.5}), settings={"seed": 0}, range_tests={"sgd": curve})
    text = s.to_json()
    _strict_json(text)
    again = Suggestion.from_json(text)
    assert again.to_dict() == s.to_dict()
    assert again.rows[0].quantities["K"] == math.inf and math.isnan(again.rows[0].quantities["v"][0])
    assert again.range_tests["sgd"].losses == [0.5, math.inf]


def test_table_and_plot(full: Suggestion, tmp_path) -> None:
    table = full.table()
    for row in full.rows:
        assert row.name in table and row.caveat[:30] in table
        if row.lr is not None:
            assert f"{row.lr:.4g}" in table
    assert "Cost:" in table and "Hessian-vector products" in table
    path = full.plot(tmp_path / "sub" / "suggest.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = Suggestion(rows=(SuggestionRow("gd-descent", "sgd", 0.1, "1/K"),))
    assert bare.plot(tmp_path / "bare.png").stat().st_size > 0
    with pytest.raises(KeyError, match="gd-descent"):
        bare.row("nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0}, "total_steps"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"optimizer": []}, "optimizer"),
        ({"loss": "hinge"}, "loss"),
        ({"target_accuracy": 0.0}, "target_accuracy"),
        ({"distance_bound": -1.0}, "distance_bound"),
        ({"num_samples": 0}, "num_samples"),
        ({"mode": "test"}, "mode"),
        ({"range_test": 1}, "range_test"),
        ({"range_test_options": {"steps": 3}}, "range_test_options"),
        ({"seed": -1}, "seed"),
    ],
)
def test_argument_errors(problem, kwargs: dict, match: str) -> None:
    model, data = problem
    kwargs = {"total_steps": T, **kwargs}
    with pytest.raises(ValueError, match=match):
        suggest(model, nn.CrossEntropyLoss(), data, **kwargs)


def test_data_errors(problem) -> None:
    model, _ = problem
    with pytest.raises(ValueError, match="data"):
        suggest(model, nn.CrossEntropyLoss(), [], total_steps=T)
    with pytest.raises(ValueError, match="data"):
        suggest(model, nn.CrossEntropyLoss(), torch.zeros(3, 4), total_steps=T)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def test_cli_table(capsys) -> None:
    assert main(["suggest", "--workload", "iris-softmax", "--num-samples", "2", "--target-accuracy", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "iris-softmax" in out and "Cost:" in out
    for name in ("gd-descent", "lipschitz-paper", "lipschitz-rigorous", "exact-adam", "lars-corollary-2.1"):
        assert name in out


def test_cli_json_and_plot(capsys, tmp_path) -> None:
    plot = tmp_path / "s.png"
    argv = [
        "suggest",
        "--workload",
        "breast-cancer-logreg",
        "--optimizer",
        "sgd",
        "--json",
        "--range-test",
        "--range-test-steps",
        "5",
        "--plot",
        str(plot),
        "--total-steps",
        "7",
    ]
    assert main(argv) == 0
    data = _strict_json(capsys.readouterr().out)
    assert isinstance(data, dict)
    s = Suggestion.from_dict(data)
    assert s.settings["workload"] == "breast-cancer-logreg" and s.settings["loss"] == "bce"
    assert s.settings["total_steps"] == 7
    assert [r.name for r in s.rows] == [
        "gd-descent",
        "gd-stability",
        "lipschitz-paper",
        "lipschitz-rigorous",
        "range-test-sgd",
    ]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_error(capsys) -> None:
    assert main(["suggest", "--workload", "iris-softmax", "--optimizer", "rmsprop"]) == 2
    assert "optimizer" in capsys.readouterr().err


def test_the_rigorous_row_is_the_lr_lipschitz_lr_takes_on_the_same_batches(problem) -> None:
    """suggest's ``lipschitz-rigorous`` row and ``LipschitzLR(rigorous=True)`` bound the same gradient, ``[W, b]``
    of the last Linear: on the same batches at the same weights they give the same lr (the row used ``bias=False``
    for classification, an lr 11 % too large on docs/suggest.md's example)."""
    from theorylr.lipschitz import LipschitzLR

    model, (x, y) = problem
    model = copy.deepcopy(model)
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]
    s = suggest(model, nn.CrossEntropyLoss(), batches, total_steps=T)
    row = s.row("lipschitz-rigorous")
    assert row.quantities["bias"] is True and "bias" not in s.row("lipschitz-paper").quantities  # L has no bias term
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = LipschitzLR(opt, model, loss="softmax", rigorous=True)
    model.train()
    for xb, yb in batches:  # the epoch's training passes, no step: the weights stay those suggest saw
        model(xb)
        sched.observe_targets(yb)  # the bound given the labels, as suggest's (without: over every labelling)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "lr_scheduler.step() before optimizer.step()", meant here
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(row.lr, rel=1e-12)
    sched.close()
