"""`theorylr.suggest` at the edges: padded targets, ignore_index, dropout and the seed, an overflowing row."""

from __future__ import annotations

import math

import torch
from torch import nn

from theorylr.lab.suggest import suggest


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(32, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (32,), generator=gen)


def _net(dropout: bool = False) -> nn.Module:
    gen = torch.Generator().manual_seed(1)
    layers: list[nn.Module] = [nn.Linear(5, 6), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(0.3))
    layers.append(nn.Linear(6, 3))
    model = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    return model


def test_padding_targets_with_default_ignore_index_do_not_crash() -> None:
    # nn.CrossEntropyLoss() ignores targets equal to -100 (padding); the LipschitzLR rows used them as class indices
    # and suggest raised RuntimeError("index -100 is out of bounds") instead of giving rows without an lr.
    x, y = _data()
    y[20:] = -100
    s = suggest(_net(), nn.CrossEntropyLoss(), (x, y), total_steps=10)
    assert s.row("gd-descent").lr is not None


def test_ignore_index_rigorous_row_is_an_upper_bound() -> None:
    # With ignore_index the loss is the mean over the kept examples only, so the last-layer gradient can exceed the
    # bound computed as if every example counted (m = 32 instead of 2): the "true upper bound" B was violated.
    x, y = _data()
    crit = nn.CrossEntropyLoss(ignore_index=0)
    y[2:] = 0
    y[0], y[1] = 1, 2
    model = _net()
    s = suggest(model, crit, (x, y), total_steps=10)
    row = s.row("lipschitz-rigorous")
    if row.lr is None:  # declining to give a bound is fine
        return
    bound = row.quantities["B"]
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(300):
        with torch.no_grad():
            model[2].weight.copy_(torch.randn(3, 6, generator=gen, dtype=torch.float64) * 50)
        grad = torch.autograd.grad(crit(model(x), y), model[2].weight)[0]
        worst = max(worst, float(grad.norm()))
    assert worst <= bound * (1 + 1e-9), (worst, bound)


def test_range_test_reproducible_with_seed_whatever_the_global_rng() -> None:
    # The range test's dropout masks come from the caller's global RNG, so the same call with the same seed gives a
    # different range-test lr depending on unrelated RNG use before the call.
    x, y = _data()
    lrs, curves = [], []
    for global_seed in (0, 1):
        model = _net(dropout=True)
        torch.manual_seed(global_seed)
        s = suggest(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            total_steps=10,
            seed=0,
            range_test=True,
            range_test_options={"num_steps": 50, "end_lr": 100.0},
        )
        lrs.append(s.row("range-test-sgd").lr)
        curves.append(s.range_tests["sgd"].losses)
    assert curves[0] == curves[1]
    assert lrs[0] == lrs[1]


def test_train_mode_lipschitz_rows_reproducible_with_seed() -> None:
    # In mode="train" the LipschitzLR rows (and the trust ratios) draw dropout masks from the global RNG unseeded,
    # unlike the Hessian estimates (which seed them with `seed`).
    x, y = _data()
    results = []
    for global_seed in (0, 1):
        model = _net(dropout=True)
        torch.manual_seed(global_seed)
        s = suggest(model, nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="sgd", seed=0, mode="train")
        results.append((s.row("lipschitz-paper").lr, s.row("lipschitz-rigorous").lr))
    assert results[0] == results[1]


def test_paper_corollary_row_survives_rigorous_overflow() -> None:
    # eps small enough that only the rigorous O(1/eps^2) step count overflows: the paper's sqrt(eps / (3 C2)) is
    # still computable, but both rows came back without an lr, the paper row blaming corollary_2_1_rigorous.
    x, y = _data()
    eps = 1e-160
    s = suggest(_net(), nn.CrossEntropyLoss(), (x, y), total_steps=10, optimizer="lars", target_accuracy=eps)
    row = s.row("lars-corollary-2.1")
    q = row.quantities
    c2 = q["L"] * (q["||w*||"] + q["M1"]) ** 2 / 2
    assert row.lr is not None
    assert math.isclose(row.lr, math.sqrt(eps / (3 * c2)), rel_tol=1e-12)
