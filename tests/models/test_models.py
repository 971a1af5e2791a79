"""Model shapes, parameter counts against the published ones, and the final-Linear contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.models import (
    ACTIVATIONS,
    MLP,
    MODELS,
    VGG9,
    LeNet5,
    LinearModel,
    LipschitzCNN,
    ResNet20,
    build_model,
    final_linear,
)

# name -> (tiny constructor kwargs, input shape, output size): every registered model must appear here.
CASES = {
    "linear": ({"in_features": 12, "out_features": 1}, (3, 4), 1),
    "mlp": ({"in_features": 64, "hidden": (8, 8)}, (64,), 10),
    "lenet5": ({}, (1, 28, 28), 10),
    "vgg9": ({"width": 4}, (3, 32, 32), 10),
    "resnet20": ({}, (3, 32, 32), 10),
    "lipschitz_cnn": ({}, (1, 28, 28), 10),
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def dense(fin: int, fout: int) -> int:
    return fin * fout + fout


def test_registry_is_covered() -> None:
    assert set(MODELS) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_final_linear_and_gradients(name: str) -> None:
    kwargs, shape, out = CASES[name]
    model = build_model(name, **kwargs)
    modules = list(model.modules())
    assert isinstance(modules[-1], nn.Linear) and model[-1] is modules[-1] is final_linear(model)
    seen = {}
    final_linear(model).register_forward_hook(lambda m, i, o: seen.update(out=o))
    x = torch.randn(2, *shape)
    y = model(x)
    assert y.shape == (2, out)
    assert seen["out"] is y  # the model's output is the final Linear's output (no activation after it)
    y.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CASES))
def test_slices_are_plain_sequentials_of_the_same_modules(name: str) -> None:
    # nn.Sequential builds a slice with self.__class__(OrderedDict(...)), which a model class with its own
    # constructor arguments cannot take: model[:-1] (the features) failed for every model here before.
    kwargs, shape, _ = CASES[name]
    model = build_model(name, **kwargs).eval()
    features = model[:-1]
    assert type(features) is nn.Sequential
    assert list(features.named_children()) == list(model.named_children())[:-1]  # same names, same objects
    assert isinstance(model[-1], nn.Linear) and model[len(model) - 1] is model[-1]
    seen = {}
    final_linear(model).register_forward_pre_hook(lambda m, args: seen.update(a=args[0]))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        model(x)
        assert torch.equal(features(x), seen["a"])
        assert torch.equal(model[-1:](features(x)), model(x))
        assert torch.equal(model[::1](x), model(x))


def test_linear_model() -> None:
    m = LinearModel(6, 2)
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(m(x), x.reshape(4, 6) @ m[-1].weight.T + m[-1].bias)
    assert count(LinearModel(6, 2, bias=False)) == 12


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_variants(activation: str) -> None:
    m = MLP(10, hidden=(7, 5), out_features=3, activation=activation, dropout=0.5, batch_norm=True)
    kinds = [type(layer).__name__ for layer in m]
    act = type(ACTIVATIONS[activation]()).__name__
    assert kinds == [
        "Flatten",
        "Linear",
        "BatchNorm1d",
        act,
        "Dropout",
        "Linear",
        "BatchNorm1d",
        act,
        "Dropout",
        "Linear",
    ]
    assert m(torch.randn(4, 10)).shape == (4, 3)
    assert count(MLP(10, hidden=(7, 5), out_features=3)) == dense(10, 7) + dense(7, 5) + dense(5, 3)
    assert count(MLP(10, hidden=(), out_features=3)) == dense(10, 3)
    assert count(MLP(10, hidden=4)) == dense(10, 4) + dense(4, 10)


def test_lenet5_published_count_and_sizes() -> None:
    # C1 156, C3 2416 (full connection table), C5 48120, F6 10164, output 850: 61,706 (LeCun et al. report ~60k
    # with C3's partial table, 1,516 weights, and an RBF output; see the class docstring).
    expected = conv(1, 6, 5) + conv(6, 16, 5) + dense(400, 120) + dense(120, 84) + dense(84, 10)
    assert expected == 61706
    assert count(LeNet5()) == count(LeNet5(image_size=32)) == expected
    assert LeNet5(in_channels=3, image_size=32)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert LeNet5(image_size=12)(torch.zeros(2, 1, 12, 12)).shape == (2, 10)
    with pytest.raises(ValueError, match="image_size"):
        LeNet5(image_size=8)


def test_resnet20_published_count() -> None:
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters. Counted by hand (convs have no bias; BN has 2C):
    bn = lambda c: 2 * c  # noqa: E731
    stem = conv(3, 16, 3, False) + bn(16)
    stage1 = 3 * (2 * conv(16, 16, 3, False) + 2 * bn(16))
    stage2 = (
        conv(16, 32, 3, False) + conv(32, 32, 3, False) + 2 * bn(32) + 2 * (2 * conv(32, 32, 3, False) + 2 * bn(32))
    )
    stage3 = (
        conv(32, 64, 3, False) + conv(64, 64, 3, False) + 2 * bn(64) + 2 * (2 * conv(64, 64, 3, False) + 2 * bn(64))
    )
    option_a = stem + stage1 + stage2 + stage3 + dense(64, 10)
    projections = conv(16, 32, 1, False) + bn(32) + conv(32, 64, 1, False) + bn(64)
    assert count(ResNet20()) == option_a == 269722
    assert count(ResNet20(shortcut="B")) == option_a + projections == 272474
    assert round(count(ResNet20()) / 1e6, 2) == 0.27
    convs = [m for m in ResNet20().modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # + the final Linear: 20 weight layers
    assert ResNet20(shortcut="B")(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_option_a_shortcut_pads_with_zeros() -> None:
    block = ResNet20()[4][0]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert s[:, :8].abs().max() == 0 and s[:, 24:].abs().max() == 0
    assert s[:, 8:24].equal(x[:, :, ::2, ::2])


def test_vgg9_count_by_hand() -> None:
    w = 64
    convs = conv(3, w, 3, False) + conv(w, w, 3, False) + conv(w, 2 * w, 3, False) + conv(2 * w, 2 * w, 3, False)
    convs += conv(2 * w, 4 * w, 3, False) + conv(4 * w, 4 * w, 3, False)
    bns = 2 * (w + w + 2 * w + 2 * w + 4 * w + 4 * w)
    fcs = dense(4 * w * 16, 8 * w) + dense(8 * w, 8 * w) + dense(8 * w, 10)
    assert count(VGG9()) == convs + bns + fcs
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in VGG9(width=2).modules()) == 9
    plain = VGG9(width=2, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_lipschitz_cnn_matches_table_4() -> None:
    # Table 4 of Yedida & Saha: conv32 valid, conv32 valid, pool, conv64 same x2, pool, conv128 same, dense 128, BN,
    # dense 10 on 28x28 MNIST: 6x6x128 features; "the model has 730K parameters".
    expected = conv(1, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3)
    expected += dense(6 * 6 * 128, 128) + 2 * 128 + dense(128, 10)
    m = LipschitzCNN()
    assert count(m) == expected == 730346
    kinds = [type(layer).__name__ for layer in m]
    assert kinds.count("Conv2d") == 5 and kinds.count("Dropout") == 4 and kinds.count("MaxPool2d") == 2
    assert [d.p for d in m if isinstance(d, nn.Dropout)] == [0.2, 0.25, 0.25, 0.25]
    assert kinds[-5:] == ["Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]


def test_eval_mode_is_deterministic() -> None:
    m = LipschitzCNN().eval()
    x = torch.randn(2, 1, 28, 28)
    assert m(x).equal(m(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("transformer", {}, "'mlp'"),
        ("mlp", {"in_features": 4, "activation": "swish"}, "activation"),
        ("mlp", {"in_features": 4, "dropout": 1.0}, "dropout"),
        ("mlp", {"in_features": 4, "hidden": (4, 0)}, r"hidden\[1\]"),
        ("mlp", {"in_features": 4, "hidden": 8.0}, "hidden must be an int or a sequence"),
        ("mlp", {"in_features": 4, "hidden": -3}, r"hidden must be an integer >= 1 \(got -3\)"),
        ("mlp", {"in_features": 0}, "in_features"),
        ("linear", {"in_features": 4, "out_features": 0}, "out_features"),
        ("vgg9", {"width": 0}, "width"),
        ("vgg9", {"batch_norm": 1}, "batch_norm"),
        ("resnet20", {"shortcut": "C"}, "shortcut"),
        ("lipschitz_cnn", {"image_size": 4}, "image_size"),
        ("lenet5", {"num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_arguments_are_named(name: str, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        build_model(name, **kwargs)


def test_final_linear_requires_a_linear() -> None:
    with pytest.raises(ValueError, match=r"no torch\.nn\.Linear"):
        final_linear(nn.Sequential(nn.ReLU()))
