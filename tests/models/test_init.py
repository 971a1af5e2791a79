"""init_weights: reproducible under a generator, faithful to torch's default, and the right variances."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from theorylr.models import INIT_SCHEMES, MLP, LeNet5, ResNet20, init_weights


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_reproducible_under_generator_whatever_the_global_rng(scheme: str) -> None:
    torch.manual_seed(1)
    a = state(init_weights(LeNet5(), scheme, torch.Generator().manual_seed(5)))
    torch.manual_seed(2)
    b = state(init_weights(LeNet5(), scheme, torch.Generator().manual_seed(5)))
    c = state(init_weights(LeNet5(), scheme, torch.Generator().manual_seed(6)))
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)


@pytest.mark.parametrize("make", [lambda: nn.Linear(30, 20), lambda: nn.Conv2d(4, 6, 3), lambda: nn.Conv1d(3, 5, 2)])
def test_default_with_generator_is_torch_default(make) -> None:
    # With a generator, "default" redraws exactly what reset_parameters() draws from the same seed.
    ours = init_weights(make(), "default", torch.Generator().manual_seed(11))
    reference = make()
    torch.manual_seed(11)
    reference.reset_parameters()
    assert ours.weight.equal(reference.weight) and ours.bias.equal(reference.bias)


def test_default_without_generator_uses_global_rng() -> None:
    """The models are built under other seeds, so only init_weights's own draws (from the global RNG, seeded the
    same before each call) can make them equal; a third draw, under another seed, differs."""
    torch.manual_seed(1)
    first = MLP(5, (4,))
    torch.manual_seed(2)
    second = MLP(5, (4,))
    built = state(first)
    torch.manual_seed(3)
    a = state(init_weights(first, "default"))
    torch.manual_seed(3)
    b = state(init_weights(second, "default"))
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(built[k]) for k in a)  # redrawn, not left as built
    torch.manual_seed(4)
    c = state(init_weights(MLP(5, (4,)), "default"))
    assert not all(a[k].equal(c[k]) for k in a)


# Layers with ~400k weights: the sample variance has relative standard deviation <= sqrt(2/n) ~ 0.2%, so a 3%
# tolerance is > 10 sigma (and the draws are seeded, so the test is deterministic anyway).
FAN_CASES = {"linear": (nn.Linear(800, 500), 800, 500), "conv": (nn.Conv2d(96, 48, 3), 96 * 9, 48 * 9)}


@pytest.mark.parametrize("layer", sorted(FAN_CASES))
@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_variance_and_support(layer: str, scheme: str) -> None:
    module, fan_in, fan_out = FAN_CASES[layer]
    init_weights(module, scheme, torch.Generator().manual_seed(0))
    w = module.weight.detach().double().flatten()
    expected_var = {
        "default": 1.0 / (3 * fan_in),
        "kaiming_uniform": 2.0 / fan_in,
        "kaiming_normal": 2.0 / fan_in,
        "xavier_uniform": 2.0 / (fan_in + fan_out),
        "xavier_normal": 2.0 / (fan_in + fan_out),
    }[scheme]
    assert abs(float(w.var()) / expected_var - 1) < 0.03
    assert abs(float(w.mean())) < 0.03 * math.sqrt(expected_var)
    bound = math.sqrt(3 * expected_var)  # support of the uniform with that variance
    beyond = float((w.abs() > bound).double().mean())
    if "uniform" in scheme or scheme == "default":
        assert beyond == 0.0
    else:  # normal: P(|z| > sqrt 3) = 0.0833
        assert abs(beyond - 0.0833) < 0.01
    if scheme == "default":
        assert 0 < float(module.bias.detach().abs().max()) <= 1 / math.sqrt(fan_in)
    else:
        assert module.bias.abs().max() == 0


@pytest.mark.parametrize("scheme", ["kaiming_normal", "kaiming_uniform"])
@pytest.mark.parametrize(("nonlinearity", "gain"), [("tanh", 5 / 3), ("relu", 2**0.5), ("linear", 1.0)])
def test_kaiming_gain_follows_nonlinearity(scheme: str, nonlinearity: str, gain: float) -> None:
    """Var(w) = gain^2 / fan_in for both Kaiming schemes (the uniform one ignored the nonlinearity unnoticed)."""
    m = init_weights(nn.Linear(1000, 400), scheme, torch.Generator().manual_seed(0), nonlinearity=nonlinearity)
    expected = gain**2 / 1000
    assert abs(float(m.weight.detach().var()) / expected - 1) < 0.03


def test_norm_layers_are_reset_and_all_layers_redrawn() -> None:
    model = ResNet20()
    before = state(model)
    with torch.no_grad():
        model[1].weight.fill_(5.0)
        model[1].running_mean.fill_(3.0)
    init_weights(model, "kaiming_normal", torch.Generator().manual_seed(0))
    assert model[1].weight.eq(1).all() and model[1].running_mean.eq(0).all()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert not module.weight.equal(before[f"{name}.weight"]), name


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="torch without nn.RMSNorm")
@pytest.mark.parametrize("norm", ["LayerNorm", "GroupNorm", "RMSNorm"])
def test_every_norm_layer_is_reset(norm: str) -> None:
    """RMSNorm's gain was left as trained: the "fresh initialisation of the whole network" that the exact-step
    smoothness sampler draws kept a trained transformer's norm gains."""
    layer = nn.GroupNorm(2, 4) if norm == "GroupNorm" else getattr(nn, norm)(4)
    model = nn.Sequential(nn.Linear(4, 4), layer)
    with torch.no_grad():
        layer.weight.fill_(5.0)
    init_weights(model, "kaiming_normal", torch.Generator().manual_seed(0))
    assert layer.weight.eq(1).all()


def test_generator_values_do_not_depend_on_param_dtype() -> None:
    a = init_weights(nn.Linear(8, 8).double(), "xavier_normal", torch.Generator().manual_seed(4))
    b = init_weights(nn.Linear(8, 8), "xavier_normal", torch.Generator().manual_seed(4))
    assert a.weight.float().equal(b.weight)  # drawn in float32 whatever the parameter's dtype


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"scheme": "orthogonal"}, "scheme"),
        ({"generator": 3}, "generator"),
        ({"nonlinearity": "swish"}, "nonlinearity"),
    ],
)
def test_invalid(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        init_weights(nn.Linear(2, 2), **kwargs)
