"""AdaMo, AutoAdam and AdaptiveRMSprop against a line-by-line reference of LipschitzLR Algorithms 1 and 3.

The reference below is written from the paper's pseudo-code with plain float64 tensors, independently of
``theorylr.optim.adaptive``'s functional core; every optimizer, mode and option is compared with it step by step.
"""

from __future__ import annotations

import copy
import gc
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from theorylr.lipschitz.tracker import ActivationTracker
from theorylr.optim.adaptive import AdaMo, AdaptiveRMSprop, AutoAdam, squared_lipschitz_estimate

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# Reference: the paper's algorithms, one parameter list, float64, no foreach, no shortcuts.
# ----------------------------------------------------------------------------------------------------------------
def _estimate_l2(d: float, r: float, kind: str) -> float:
    return {"square": (d + r) ** 2, "no_cross": d * d + r * r, "no_weight": d * d + 2 * d * r}[kind]


def reference_run(
    kind: str,
    weights: list[Tensor],
    grad_fn: Callable[[list[Tensor]], list[Tensor]],
    steps: int,
    *,
    lr: float = 1.0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    bias_correction: bool = False,
    initial_step_size: float | None = None,
    initial_steps: int = 0,
    l2_estimate: str = "no_cross",
    lipschitz_fn: Callable[[list[Tensor], list[Tensor]], float] | None = None,
) -> list[Tensor]:
    """Run Algorithm 1 (``"adamo"``), 3 (``"autoadam"``) or 3 with b1 = 0 (``"rmsprop"``); return the weights.

    ``lipschitz_fn(weights, grads)`` gives the data term D_t (default: the largest per-tensor gradient norm).
    """
    w = [t.clone() for t in weights]
    v = [torch.zeros_like(t) for t in w]
    s = [torch.zeros_like(t) for t in w]
    k1 = k2 = 0.0
    if kind == "rmsprop":
        beta1 = 0.0
    for t in range(1, steps + 1):
        raw = grad_fn(w)
        d = lipschitz_fn(w, raw) if lipschitz_fn else max(float(g.norm()) for g in raw)
        r = weight_decay * max(float(x.norm()) for x in w)
        lt, l2t = d + r, _estimate_l2(d, r, l2_estimate)
        g = [gi + weight_decay * wi for gi, wi in zip(raw, w)]
        k1 = beta1 * k1 + (1 - beta1) * lt
        k2 = beta2 * k2 + (1 - beta2) * l2t
        v = [beta1 * vi + (1 - beta1) * gi for vi, gi in zip(v, g)] if kind != "rmsprop" else g
        s = [beta2 * si + (1 - beta2) * gi * gi for si, gi in zip(s, g)]
        c1 = 1 - beta1**t if bias_correction else 1.0
        c2 = 1 - beta2**t if bias_correction else 1.0
        k1h, k2h = k1 / c1, k2 / c2
        vh = [vi / c1 for vi in v]
        sh = [si / c2 for si in s]
        if kind == "adamo":
            factor = 1.0 / k1h
            direction = vh
        else:
            factor = (math.sqrt(k2h) + eps) / k1h
            direction = [vi / torch.sqrt(si + eps) for vi, si in zip(vh, sh)]
        if initial_step_size is not None and t <= initial_steps:
            factor = initial_step_size
        w = [wi - lr * factor * di for wi, di in zip(w, direction)]
    return w


def _quadratic() -> tuple[list[Tensor], Callable[[list[Tensor]], list[Tensor]]]:
    gen = torch.Generator().manual_seed(1)
    w0 = [torch.randn(3, 4, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)]
    scales = [torch.rand(3, 4, generator=gen, dtype=F64) + 0.5, torch.rand(5, generator=gen, dtype=F64) + 0.5]
    targets = [torch.randn(3, 4, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)]

    def grad_fn(ws: list[Tensor]) -> list[Tensor]:  # loss = sum_i 0.5 * scale_i (w_i - target_i)^2
        return [c * (w - t) for w, c, t in zip(ws, scales, targets)]

    return w0, grad_fn


def _run(cls: type, kwargs: dict[str, Any], steps: int) -> list[Tensor]:
    w0, grad_fn = _quadratic()
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = cls(params, **kwargs)
    for _ in range(steps):
        for p, g in zip(params, grad_fn([p.detach() for p in params])):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def _reference_kwargs(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's keyword arguments in the reference's names (beta -> beta1 or beta2, betas -> both)."""
    out = {key: value for key, value in kwargs.items() if key not in ("beta", "betas")}
    if kind == "rmsprop":
        out["beta2"] = kwargs.get("beta", 0.9)
    elif kind == "adamo":
        out["beta1"] = kwargs.get("beta", 0.9)
    else:
        out["beta1"], out["beta2"] = kwargs.get("betas", (0.9, 0.999))
    return out


CASES = [
    ("adamo", AdaMo, {}),
    ("adamo", AdaMo, {"beta": 0.5, "lr": 0.3}),
    ("adamo", AdaMo, {"weight_decay": 0.1}),
    ("adamo", AdaMo, {"initial_step_size": 0.05, "initial_steps": 3}),
    ("autoadam", AutoAdam, {"lr": 0.2}),
    ("autoadam", AutoAdam, {"lr": 0.2, "betas": (0.8, 0.9), "eps": 1e-3}),
    ("autoadam", AutoAdam, {"lr": 0.2, "bias_correction": True, "eps": 1e-3}),
    ("autoadam", AutoAdam, {"lr": 0.2, "weight_decay": 0.3, "l2_estimate": "square"}),
    ("autoadam", AutoAdam, {"lr": 0.2, "weight_decay": 0.3}),  # default "no_cross"
    ("autoadam", AutoAdam, {"lr": 0.2, "weight_decay": 0.3, "l2_estimate": "no_weight"}),
    ("autoadam", AutoAdam, {"initial_step_size": 1e-2, "initial_steps": 2}),
    ("rmsprop", AdaptiveRMSprop, {"lr": 0.1}),
    ("rmsprop", AdaptiveRMSprop, {"lr": 0.1, "beta": 0.5, "bias_correction": True, "weight_decay": 0.2}),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("kind", "cls", "kwargs"), CASES)
def test_observed_mode_matches_the_papers_algorithm_step_by_step(
    kind: str, cls: type, kwargs: dict[str, Any], foreach: bool
) -> None:
    w0, grad_fn = _quadratic()
    ref_kwargs = _reference_kwargs(kind, kwargs)
    for steps in (1, 2, 7):
        got = _run(cls, {**kwargs, "foreach": foreach}, steps)
        expected = reference_run(kind, w0, grad_fn, steps, **ref_kwargs)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_first_steps_by_hand() -> None:
    """One step of each, computed on paper: g = (6, -8), ||g|| = 10 (a single tensor)."""
    for cls, kwargs, expected in (
        (AdaMo, {}, [3 - 0.6, -4 + 0.8]),  # V/K = 0.1 g / (0.1 * 10)
        (AdaMo, {"lr": 0.5}, [3 - 0.3, -4 + 0.4]),
        (AutoAdam, {"eps": 0.0}, [2.0, -3.0]),  # sqrt(0.001 * 100) / 1 * 0.1 g / sqrt(0.001 g^2) = sign(g)
        (AdaptiveRMSprop, {"eps": 0.0}, [2.0, -3.0]),  # sqrt(0.1 * 100) / 10 * g / sqrt(0.1 g^2) = sign(g)
    ):
        w = nn.Parameter(torch.tensor([3.0, -4.0], dtype=F64))
        opt = cls([w], **kwargs)
        w.grad = 2 * w.detach()
        opt.step()
        torch.testing.assert_close(w.detach(), torch.tensor(expected, dtype=F64), rtol=1e-14, atol=1e-14)


def test_adaptive_rmsprop_is_auto_adam_without_first_moment() -> None:
    a = _run(AdaptiveRMSprop, {"lr": 0.1, "beta": 0.7, "eps": 1e-6}, 6)
    b = _run(AutoAdam, {"lr": 0.1, "betas": (0.0, 0.7), "eps": 1e-6}, 6)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-13)


def test_bias_correction_cancels_for_adamo_and_acts_only_through_eps_for_auto_adam() -> None:
    """§6.4 divides V and K (and S and K2) by the same factors, so the ratios that make the update cancel them."""
    for steps in (1, 3, 8):
        plain = _run(AdaMo, {"beta": 0.8}, steps)
        corrected = _run(AdaMo, {"beta": 0.8, "bias_correction": True}, steps)
        for x, y in zip(plain, corrected):
            torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-13)
        plain = _run(AutoAdam, {"lr": 0.1, "eps": 0.0}, steps)
        corrected = _run(AutoAdam, {"lr": 0.1, "eps": 0.0, "bias_correction": True}, steps)
        for x, y in zip(plain, corrected):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    plain = _run(AutoAdam, {"lr": 0.1, "eps": 1e-2}, 3)
    corrected = _run(AutoAdam, {"lr": 0.1, "eps": 1e-2, "bias_correction": True}, 3)
    assert max(float((x - y).abs().max()) for x, y in zip(plain, corrected)) > 1e-4


def test_initial_step_size_override_then_lipschitz_step() -> None:
    """During the override AdaMo is momentum SGD at ``lr * initial_step_size``; K keeps averaging meanwhile."""
    w = nn.Parameter(torch.tensor([3.0, -4.0], dtype=F64))
    opt = AdaMo([w], lr=2.0, beta=0.5, initial_step_size=0.01, initial_steps=2)
    v, k = torch.zeros(2, dtype=F64), 0.0
    for t in range(1, 5):
        g = 2 * w.detach().clone()
        w.grad = g
        before = w.detach().clone()
        opt.step()
        v = 0.5 * v + 0.5 * g
        k = 0.5 * k + 0.5 * float(g.norm())
        step = 0.01 if t <= 2 else 1.0 / k
        torch.testing.assert_close(w.detach(), before - 2.0 * step * v, rtol=1e-14, atol=1e-14)
        assert float(opt.state[w]["lipschitz_avg"]) == pytest.approx(k, rel=1e-14)


def test_observed_adamo_moves_no_coordinate_more_than_lr() -> None:
    """|V_i| <= K in observed mode (K averages the largest gradient norm): the paper's Delta w <= 1."""
    gen = torch.Generator().manual_seed(3)
    params = [nn.Parameter(torch.randn(4, 5, generator=gen, dtype=F64)), nn.Parameter(torch.randn(7, dtype=F64))]
    opt = AdaMo(params, lr=0.7, beta=0.9)
    for _ in range(30):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=F64) * 10 ** float(torch.randn((), generator=gen))
        before = [p.detach().clone() for p in params]
        opt.step()
        moved = max(float((p.detach() - b).abs().max()) for p, b in zip(params, before))
        assert moved <= 0.7 * (1 + 1e-12)


@pytest.mark.parametrize("foreach", [False, True])
def test_adamo_with_float16_parameters_takes_a_step_size_beyond_float16s_range(foreach: bool) -> None:
    """Gradients of norm 1e-5 make 1/K = 1e5 > 65,504 (float16's largest value); the step, lr * V / K, is small."""
    gen = torch.Generator().manual_seed(5)
    w0 = torch.randn(32, generator=gen).half()
    half, single = nn.Parameter(w0.clone()), nn.Parameter(w0.float())
    opts = [AdaMo([q], lr=0.1, foreach=foreach) for q in (half, single)]
    drift = torch.randn(32, generator=gen)
    for _ in range(20):
        g = drift + 0.3 * torch.randn(32, generator=gen)
        g = (g / g.norm() * 1e-5).half()
        half.grad, single.grad = g, g.float()
        for opt in opts:
            opt.step()
    assert 1.0 / float(opts[0].state[half]["lipschitz_avg"]) > 65504
    assert torch.isfinite(half).all()
    moved, ref = half.detach().float() - w0.float(), single.detach() - w0.float()
    assert float(ref.norm()) > 1.0  # steps of up to lr = 0.1 per entry, well above float16's spacing here
    assert float((moved - ref).norm()) <= 0.03 * float(ref.norm())


def test_closed_form_mode_refuses_a_closed_tracker() -> None:
    model = _mlp()
    opt = AdaMo(model.parameters(), model=model)
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.close()
    with pytest.raises(RuntimeError, match="tracker is closed"):
        opt.step()


def test_a_rejected_argument_leaves_no_hook_on_the_model() -> None:
    model = _mlp()
    for bad in ({"beta": 2.0}, {"lr": -1.0}):
        with pytest.raises(ValueError):
            AdaMo(model.parameters(), model=model, **bad)
    with pytest.raises(ValueError, match="empty"):
        AdaMo([], model=model)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_squared_lipschitz_estimate_forms() -> None:
    d, r = torch.tensor(3.0, dtype=F64), 2.0
    assert float(squared_lipschitz_estimate(d, r, "square")) == 25.0
    assert float(squared_lipschitz_estimate(d, r, "no_cross")) == 13.0
    assert float(squared_lipschitz_estimate(d, r, "no_weight")) == 21.0
    for kind in ("square", "no_cross", "no_weight"):  # no weight decay: all are D^2
        assert float(squared_lipschitz_estimate(d, 0.0, kind)) == 9.0
    with pytest.raises(ValueError, match="estimate"):
        squared_lipschitz_estimate(d, r, "cube")


# ----------------------------------------------------------------------------------------------------------------
# Closed-form mode: L_t from the model's penultimate activations
# ----------------------------------------------------------------------------------------------------------------
def _mlp(out: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, out)).to(F64)


def _batch(m: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, 5, generator=gen, dtype=F64), torch.randint(0, 4, (m,), generator=gen)


@pytest.mark.parametrize("cls", [AdaMo, AutoAdam, AdaptiveRMSprop])
def test_closed_form_lipschitz_is_the_closed_form_of_the_batch(cls: type) -> None:
    model = _mlp()
    weight_decay = 0.05
    opt = cls(model.parameters(), model=model, loss="softmax", num_classes=4, weight_decay=weight_decay)
    assert opt.param_groups[0]["lipschitz"] == "closed_form"
    twin = copy.deepcopy(model)
    x, y = _batch()
    a = torch.tanh(twin[0](x)).detach()  # the input of the last Linear, recomputed without hooks
    d = (4 - 1) / (4 * 12) * float(torch.linalg.matrix_norm(a))  # eq. 23, K_z = ||A||_F, m = 12, k = 4
    r = weight_decay * max(
        float(p.detach().norm()) for p in twin.parameters()
    )  # lambda * max ||w|| (weights before step)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    state = opt.state[model[2].weight]
    beta1, beta2 = (0.0, opt.param_groups[0]["beta"]) if cls is AdaptiveRMSprop else (0.9, 0.999)
    if cls is AdaMo:
        beta1 = opt.param_groups[0]["beta"]
    assert float(state["lipschitz_avg"]) == pytest.approx((1 - beta1) * (d + r), rel=1e-12)
    if cls is not AdaMo:
        assert float(state["lipschitz_sq_avg"]) == pytest.approx((1 - beta2) * (d * d + r * r), rel=1e-12)
    opt.close()


def test_closed_form_step_equals_reference_with_that_lipschitz() -> None:
    """Several steps with a model: the update is the paper's with L_t = (k-1) ||A_t||_F / (k m) of each batch."""
    model = _mlp()
    twin = copy.deepcopy(model)
    batches = [_batch(12, s) for s in range(4)]
    with AdaMo(model.parameters(), model=model, loss="softmax", beta=0.8) as opt:
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    params = list(twin.parameters())
    it = iter(batches)

    def grad_fn(ws: list[Tensor]) -> list[Tensor]:
        with torch.no_grad():
            for p, w in zip(params, ws):
                p.copy_(w)
        x, y = next(it)
        twin.zero_grad()
        nn.functional.cross_entropy(twin(x), y).backward()
        grad_fn.last = torch.tanh(twin[0](x)).detach()  # type: ignore[attr-defined]
        return [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]

    def lipschitz_fn(ws: list[Tensor], gs: list[Tensor]) -> float:
        a = grad_fn.last  # type: ignore[attr-defined]
        return 3 / (4 * a.shape[0]) * float(torch.linalg.matrix_norm(a))

    expected = reference_run("adamo", [p.detach() for p in params], grad_fn, 4, beta1=0.8, lipschitz_fn=lipschitz_fn)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)


def test_closed_form_least_squares_and_rigorous_via_the_tracker() -> None:
    model = _mlp(out=1)
    x, _ = _batch()
    y = torch.randn(12, 1, dtype=torch.float64)
    opt = AutoAdam(model.parameters(), model=model, loss="least_squares", rigorous=True)
    nn.functional.mse_loss(model(x), y).backward()
    with pytest.raises(RuntimeError, match="observe_targets"):
        opt.step()
    assert opt.tracker is not None
    opt.tracker.observe_targets(y)
    from theorylr.lipschitz.bounds import gradient_norm_bound

    a = torch.tanh(model[0](x)).detach()
    last = model[2]
    joint = float(torch.cat([last.weight.detach().flatten(), last.bias.detach()]).norm())
    bound = max(joint, *(float(p.detach().norm()) for p in model.parameters()))
    # The last layer has a bias: the bound covers [W, b] together, with K >= ||[W, b]||_F.
    expected = float(gradient_norm_bound(a, "least_squares", targets=y, weight_bound=bound, bias=True))
    opt.step()
    assert float(opt.state[model[2].weight]["lipschitz_avg"]) == pytest.approx(0.1 * expected, rel=1e-12)
    opt.close()


def test_closed_form_needs_a_forward_pass_and_a_model() -> None:
    model = _mlp()
    opt = AdaMo(model.parameters(), model=model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="forward pass"):
        opt.step()
    with pytest.raises(ValueError, match="lipschitz"):
        AdaMo(model.parameters(), lipschitz="closed_form")
    with pytest.raises(ValueError, match="either model"):
        AdaMo(model.parameters(), model=model, tracker=opt.tracker)
    opt.close()


def test_closed_form_step_makes_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _mlp()
    opts = [
        cls(model.parameters(), model=model, weight_decay=0.01, foreach=f)
        for cls in (AdaMo, AutoAdam, AdaptiveRMSprop)
        for f in (False, True)
    ]
    x, y = _batch()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host sync")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        for opt in opts:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for opt in opts:
        opt.close()


def test_tracker_coupling_life_cycle() -> None:
    """A built tracker is removed by close()/with/GC; a shared tracker is left to its owner; neither is state."""
    model = _mlp()
    last = model[2]
    opt = AdaMo(model.parameters(), model=model)
    assert len(last._forward_pre_hooks) == 1
    assert "tracker" not in opt.defaults and "model" not in opt.defaults
    assert set(opt.state_dict()) == {"state", "param_groups"}
    opt.close()
    assert len(last._forward_pre_hooks) == 0

    with AutoAdam(model.parameters(), model=model):
        assert len(last._forward_pre_hooks) == 1
    assert len(last._forward_pre_hooks) == 0

    opt = AdaptiveRMSprop(model.parameters(), model=model)
    del opt
    gc.collect()
    assert len(last._forward_pre_hooks) == 0

    shared = ActivationTracker(model, "softmax")
    first = AdaMo(model.parameters(), tracker=shared)
    second = AutoAdam(model.parameters(), tracker=shared, lr=0.1)
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    first.step()
    second.step()
    first.close()
    del second
    gc.collect()
    assert not shared.closed and len(last._forward_pre_hooks) == 1
    shared.close()
    assert len(last._forward_pre_hooks) == 0


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (AdaMo, {"initial_step_size": 0.1}, "initial_steps"),
        (AdaMo, {"initial_steps": 3}, "initial_steps"),
        (AdaMo, {"initial_step_size": -1.0, "initial_steps": 1}, "initial_step_size"),
        (AdaMo, {"weight_decay": -0.1}, "weight_decay"),
        (AdaMo, {"lipschitz": "guess"}, "lipschitz"),
        (AutoAdam, {"betas": (0.9,)}, "betas"),
        (AutoAdam, {"l2_estimate": "cube"}, "l2_estimate"),
        (AdaptiveRMSprop, {"l2_estimate": "cube"}, "l2_estimate"),
        (AdaMo, {"bias_correction": 1}, "bias_correction"),
        (AdaMo, {"model": "net"}, "model"),
        (AdaMo, {"tracker": "net"}, "tracker"),
    ],
)
def test_invalid_arguments(cls: type, kwargs: dict[str, Any], name: str) -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=name):
        cls(model.parameters(), **kwargs)


def test_state_dict_has_the_ewas_as_tensors_and_round_trips_in_closed_form() -> None:
    model = _mlp()
    twin = copy.deepcopy(model)
    opt = AutoAdam(model.parameters(), model=model, lr=0.1)
    batches = [_batch(12, s) for s in range(6)]
    for x, y in batches[:3]:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    state = opt.state[model[2].weight]
    assert set(state) == {"step", "lipschitz_avg", "lipschitz_sq_avg", "exp_avg", "exp_avg_sq"}
    assert all(isinstance(v, Tensor) for v in state.values())
    other = AutoAdam(twin.parameters(), model=twin, lr=0.1)
    twin.load_state_dict(model.state_dict())
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    for net, o in ((model, opt), (twin, other)):
        for x, y in batches[3:]:
            o.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    opt.close()
    other.close()


@pytest.mark.parametrize("cls", [AdaMo, AutoAdam, AdaptiveRMSprop])
def test_a_coupled_optimizer_refuses_to_be_copied_and_says_what_to_do(cls: type) -> None:
    """torch's copy would drop the tracker (its hook is bound to the live model) and fail at the first step with
    "build the optimizer with model=": refused at copy time, as the tracker itself is."""
    import pickle

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = cls(model.parameters(), model=model)
    for copier in (copy.deepcopy, pickle.dumps, lambda o: copy.deepcopy((model, o))):
        with pytest.raises(TypeError, match=r"cannot be pickled or copied.*state_dict\(\)"):
            copier(opt)
    plain = cls(model.parameters())  # observed mode: nothing bound to the model
    assert copy.deepcopy(plain).param_groups[0]["lr"] == plain.param_groups[0]["lr"]


def test_a_step_with_no_new_training_batch_warns_once_that_it_reuses_the_last_l() -> None:
    """With model= and the model in eval() (frozen-BatchNorm fine-tuning) every step silently reused the last
    training batch's L."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    opt = AdaMo(model.parameters(), model=model)
    x, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    caught = []
    for i in range(3):
        if i == 1:
            model.eval()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            opt.step()
        caught.append([str(m.message) for m in w if issubclass(m.category, RuntimeWarning)])
    assert caught[0] == [] and caught[2] == []  # a training batch, then warned once only
    assert len(caught[1]) == 1 and "reuses the previous batch's L" in caught[1][0]


@pytest.mark.parametrize("scheduler", [False, True])
def test_the_reused_l_warning_names_the_users_line(scheduler: bool) -> None:
    """It named torch/optim/optimizer.py (a fixed stacklevel=4 cannot see through torch's step wrappers, one more
    with a scheduler attached), so a filter on the user's module did not match it."""
    import warnings

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    opt = AdaMo(model.parameters(), model=model)
    if scheduler:
        torch.optim.lr_scheduler.StepLR(opt, 1)
    x, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()  # no forward pass since the last step
    assert [w.filename for w in caught if issubclass(w.category, RuntimeWarning)] == [__file__]
