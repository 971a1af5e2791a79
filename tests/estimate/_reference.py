"""Numerical references and small float64 models for the curvature tests.

The dense Hessian here goes through ``torch.autograd.functional.hessian`` of a function of the flat parameter
vector (``torch.func.functional_call``), independent of ``theorylr.estimate``'s code paths.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

F64 = torch.float64


def dense_hessian(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
    params: Sequence[Tensor] | None = None,
) -> Tensor:
    """The dense Hessian of ``sum_b n_b/N * loss_fn(model(x_b), y_b)`` w.r.t. ``params`` (default: all)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        ids = {id(p) for p in params}
        named = [(n, p) for n, p in named if id(p) in ids]
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    total = sum(x.shape[0] for x, _ in batches)

    def loss_of(v: Tensor) -> Tensor:
        tensors = {n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes)}
        out = torch.zeros((), dtype=v.dtype)
        for x, y in batches:
            out = out + x.shape[0] / total * loss_fn(functional_call(model, tensors, (x,)), y)
        return out

    h = torch.autograd.functional.hessian(loss_of, flat, vectorize=True)
    return (h + h.T) / 2


def spectral_norm(h: Tensor) -> float:
    ev = torch.linalg.eigvalsh(h)
    return float(ev.abs().max())


def mlp(activation: type[nn.Module], seed: int = 0, sizes: Sequence[int] = (5, 8, 8, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).to(F64)


class SmallCNN(nn.Module):
    """Conv(1->3, 3x3) - tanh - Conv(3->2, 2x2) - softplus - Linear(18 -> 3), on 1x6x6 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.conv2 = nn.Conv2d(3, 2, 2)
        self.fc = nn.Linear(18, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.softplus(self.conv2(torch.tanh(self.conv1(x))))
        return self.fc(h.flatten(1))


def classification_data(n: int = 24, d: int = 5, classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


def image_data(n: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=F64), torch.randint(0, 3, (n,), generator=g)


def logistic_problem(n: int = 40, d: int = 4, seed: int = 0) -> tuple[nn.Linear, Tensor, Tensor]:
    """Logistic regression: ``nn.Linear(d, 1)`` with ``BCEWithLogitsLoss``, non-trivial weights."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(d, 1).to(F64)
    with torch.no_grad():
        model.weight.normal_(generator=g)
        model.bias.fill_(0.3)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = (torch.rand(n, 1, generator=g, dtype=F64) < 0.5).to(F64)
    return model, x, y


def logistic_hessian(model: nn.Linear, x: Tensor) -> Tensor:
    """Closed form: ``H = X1^T diag(p (1 - p)) X1 / n`` with ``X1 = [X, 1]`` (weights first, then the bias)."""
    with torch.no_grad():
        p = torch.sigmoid(model(x)).reshape(-1)
    x1 = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    return x1.T @ (x1 * (p * (1 - p))[:, None]) / x.shape[0]


def negative_dominant_problem(seed: int = 0) -> tuple[nn.Sequential, Tensor, Tensor]:
    """A tanh net far from its targets (residual -20 on positive pre-activations): |lambda_min| > lambda_max."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).to(F64)
    with torch.no_grad():
        model[0].bias.fill_(0.5)
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.rand(16, 3, generator=g, dtype=F64)
    y = torch.full((16, 1), -20.0, dtype=F64)
    return model, x, y


class Quadratic(nn.Module):
    """``f(w) = 0.5 w^T A w`` with ``A = Q diag(eigenvalues) Q^T``; the forward ignores its input."""

    def __init__(self, eigenvalues: Sequence[float], seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(eigenvalues)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ q.T)
        self.w = nn.Parameter(torch.randn(n, generator=g, dtype=F64))

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * self.w @ self.a @ self.w


def output_loss(out: Tensor, target: Any) -> Tensor:
    """A 'criterion' that returns the model output (for :class:`Quadratic`)."""
    return out


def state_snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything an estimator must leave unchanged."""
    return {
        "tensors": [t.detach().clone() for t in [*model.parameters(), *model.buffers()]],
        "ids": [id(t) for t in [*model.parameters(), *model.buffers()]],
        "flags": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "rng": torch.get_rng_state(),
    }


def assert_same_state(model: nn.Module, before: dict[str, Any]) -> None:
    after = state_snapshot(model)
    assert after["ids"] == before["ids"]
    assert len(after["tensors"]) == len(before["tensors"])
    for a, b in zip(after["tensors"], before["tensors"]):
        assert torch.equal(a, b)
    assert after["flags"] == before["flags"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
    assert torch.equal(after["rng"], before["rng"])
