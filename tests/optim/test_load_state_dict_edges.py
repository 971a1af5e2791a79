"""``load_state_dict`` of the library's optimizers against checkpoints a user may hand them: another optimizer's,
an older one that lacks a key, and with ``register_load_state_dict_post_hook`` hooks that look at the result."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.optim import Optimizer

from theorylr.optim import LARS, AdaMo, AdaptiveRMSprop, AutoAdam


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _step(opt: Optimizer, model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    opt.zero_grad()
    x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize(
    ("make_saver", "make_loader", "foreign"),
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3), lambda p: LARS(p, lr=0.5, momentum=0.9), "exp_avg"),
        (lambda p: AutoAdam(p, lr=1e-3), lambda p: AdaptiveRMSprop(p, lr=1e-3), "exp_avg"),
        (lambda p: AutoAdam(p, lr=1e-3), lambda p: AdaMo(p, lr=1e-3), "exp_avg_sq"),
        (lambda p: torch.optim.Adam(p, lr=1e-3), lambda p: AdaMo(p, lr=1e-3), "exp_avg_sq"),
    ],
    ids=["adam-into-lars", "autoadam-into-rmsprop", "autoadam-into-adamo", "adam-into-adamo"],
)
def test_another_optimizers_checkpoint_is_refused_and_nothing_changes(
    make_saver: Callable[[list[nn.Parameter]], Optimizer],
    make_loader: Callable[[list[nn.Parameter]], Optimizer],
    foreign: str,
) -> None:
    model = _model()
    saver = make_saver(list(model.parameters()))
    _step(saver, model)
    loader = make_loader(list(model.parameters()))
    before = loader.state_dict()
    with pytest.raises(ValueError, match=f"{foreign}.*not a checkpoint of {type(loader).__name__}"):
        loader.load_state_dict(saver.state_dict())
    assert loader.state_dict() == before


def test_an_own_checkpoint_with_every_state_key_loads() -> None:
    """The allowed keys are every key LARS writes: factored (scale, growth) and plain buffers, trust ratios."""
    for factored in (True, False):
        model = _model()
        opt = LARS(model.parameters(), lr=0.5, momentum=0.9, factored_momentum=factored)
        for _ in range(2):
            _step(opt, model)
        keys = {k for state in opt.state.values() for k in state}
        assert {"momentum_buffer", "trust_ratio"} <= keys
        LARS(model.parameters(), lr=0.5, momentum=0.9, factored_momentum=factored).load_state_dict(opt.state_dict())


def test_a_checkpoint_that_lacks_a_key_gets_this_optimizers_default() -> None:
    """AdaMo with ``model=`` defaults to ``lipschitz="closed_form"``; a checkpoint without the key (older, or saved
    by hand) keeps that, and the constructor's ``weight_decay``, instead of falling back to ``observed`` and 0."""
    model = _model()
    saver = AdaMo(model.parameters(), model=model, weight_decay=1e-3)
    _step(saver, model)
    state = saver.state_dict()
    for group in state["param_groups"]:
        del group["lipschitz"], group["weight_decay"]
    loader = AdaMo(model.parameters(), model=model, weight_decay=1e-3)
    loader.load_state_dict(state)
    assert loader.param_groups[0]["lipschitz"] == "closed_form" == loader.defaults["lipschitz"]
    assert loader.param_groups[0]["weight_decay"] == 1e-3
    saver.close()
    loader.close()


@pytest.mark.parametrize(
    ("make", "key"),
    [(lambda p: LARS(p, lr=0.01, momentum=0.9), "trust_ratio"), (lambda p: AdaMo(p, lr=0.01), "lipschitz_avg")],
    ids=["lars", "adamo"],
)
def test_load_state_dict_post_hooks_run_after_the_scalar_states_are_restored(
    make: Callable[[list[nn.Parameter]], Optimizer], key: str
) -> None:
    """A post-hook sees the scalar states as the next step will (float32 for a bfloat16 parameter, not torch's
    cast), and what it sets stays."""
    w = nn.Parameter(torch.randn(3, 4, dtype=torch.bfloat16))
    opt = make([w])
    w.grad = torch.randn_like(w)
    opt.step()
    seen = []

    def post(o: Optimizer) -> None:
        seen.append(o.state[w][key].dtype)
        o.state[w][key] = torch.tensor(123.0)

    fresh = make([w])
    fresh.register_load_state_dict_post_hook(post)
    fresh.load_state_dict(opt.state_dict())
    assert seen == [torch.float32]
    assert float(fresh.state[w][key]) == 123.0
