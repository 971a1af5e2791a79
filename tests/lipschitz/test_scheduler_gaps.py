"""LipschitzLR at the cases a mutation-testing pass found unchecked: a resume inside the first epoch and the lazy
first lr with weight decay (a checkpoint loaded over an lr the user set: test_scheduler.py's resume test)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn

from theorylr.lipschitz.scheduler import LipschitzLR

F64 = torch.float64
K = 4  # classes


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, K)).to(F64)


def _batches(n: int = 40, size: int = 12, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=F64)
    y = torch.randint(0, K, (n,), generator=gen)
    return list(zip(x.split(size), y.split(size)))  # 12, 12, 12, 4


def _paper_softmax(model: nn.Sequential, x: Tensor) -> float:
    with torch.no_grad():
        a = torch.tanh(model[0](x))
    return (K - 1) / (K * a.shape[0]) * float(torch.sqrt((a * a).sum()))  # eq. 23, K_z = ||A||_F


def _max_param_norm(model: nn.Module) -> float:
    return max(float(torch.sqrt((p.detach() ** 2).sum())) for p in model.parameters())


def _train(model: nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[Tensor, Tensor]]) -> list[float]:
    """Train on ``batches``; returns the lr of each step (read after it, when the lazy first lr is in force)."""
    lrs = []
    for xb, yb in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    return lrs


def test_resuming_inside_the_first_epoch_keeps_the_lazy_first_lr() -> None:
    """A checkpoint taken after the first-batch lr was set, in the middle of epoch 0: the new scheduler's first-step
    hook must neither recompute that lr from the next batch nor record it again."""
    batches = _batches()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.7, momentum=0.5)
    sched = LipschitzLR(opt, model, weight_decay=1e-3)
    first = _train(model, opt, batches[:2])
    assert [h["source"] for h in sched.history] == ["first_batch"]

    buffer = io.BytesIO()
    torch.save({"sched": sched.state_dict(), "opt": opt.state_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = _mlp(seed=1)
    twin.load_state_dict(saved["model"])
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.7, momentum=0.5)
    twin_sched = LipschitzLR(twin_opt, twin, weight_decay=1e-3)  # its first-step hook is registered
    twin_opt.load_state_dict(saved["opt"])
    twin_sched.load_state_dict(saved["sched"])

    lrs = {}
    for name, net, o, s in (("run", model, opt, sched), ("resumed", twin, twin_opt, twin_sched)):
        lrs[name] = _train(net, o, batches[2:])  # the rest of epoch 0: the first-batch lr still
        s.step()
        lrs[name] += _train(net, o, batches)
        s.step()
    assert lrs["resumed"] == lrs["run"]
    assert lrs["run"][:2] == [first[0]] * 2
    assert twin_sched.history == sched.history
    assert [h["source"] for h in twin_sched.history] == ["first_batch", "epoch", "epoch"]
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    sched.close()
    twin_sched.close()


def test_the_lazy_first_lr_includes_weight_decay() -> None:
    batches = _batches()
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.05)
    with LipschitzLR(opt, model, weight_decay=0.05) as sched:
        data = _paper_softmax(model, batches[0][0])
        expected = data + 0.05 * _max_param_norm(model)  # §5.3: lambda K, K read before the first update
        assert 0.05 * _max_param_norm(model) > 1e-3 * data  # the L2 term is not negligible here
        (lr,) = _train(model, opt, batches[:1])
        assert lr == pytest.approx(0.5 / expected, rel=1e-12)
        entry = sched.history[-1]
        assert entry["source"] == "first_batch"
        assert entry["lipschitz"] == pytest.approx(expected, rel=1e-12)
        assert entry["data_lipschitz"] == pytest.approx(data, rel=1e-12)
