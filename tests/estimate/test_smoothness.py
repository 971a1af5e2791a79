"""Algorithm 2 (smoothness): the max over re-drawn weights, reproducible, and the model left exactly as it was."""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tests.estimate._reference import (
    F64,
    assert_same_state,
    classification_data,
    dense_hessian,
    mlp,
    spectral_norm,
    state_snapshot,
)
from theorylr.estimate import (
    hessian_spectral_norm,
    reset_parameters_sampler,
    smoothness,
)
from theorylr.optim import exact_step_adam


def _bn_dropout_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.4), nn.Linear(6, 3)).to(F64)


def test_k_hat_is_the_max_of_the_samples_and_each_matches_the_dense_hessian() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=4, seed=1)
    values = [s.value for s in est.samples]
    assert len(values) == 4 and len(set(values)) == 4  # four different weight draws
    assert est.k_hat == max(values) == est.samples[est.argmax].value
    assert est.current is None and est.converged
    assert est.matvecs == sum(s.result.matvecs for s in est.samples)
    # Every sample is the spectral norm at the weights reset_parameters() draws from its recorded seed.
    probe = mlp(nn.Tanh)
    for s in est.samples:
        reset_parameters_sampler(probe, torch.Generator().manual_seed(s.seed))
        assert s.value == pytest.approx(spectral_norm(dense_hessian(probe, nn.CrossEntropyLoss(), [data])), rel=1e-4)
        again = hessian_spectral_norm(probe, nn.CrossEntropyLoss(), data, seed=s.result.seed)
        assert again == s.result


def test_restores_weights_mode_buffers_grads_and_rng_exactly() -> None:
    model = _bn_dropout_model()
    x, y = classification_data()
    model.train()
    nn.CrossEntropyLoss()(model(x), y).backward()  # running stats moved, grads present
    model[3].eval()
    torch.manual_seed(5)
    before = state_snapshot(model)
    smoothness(model, nn.CrossEntropyLoss(), (x, y), num_samples=2, at_current=True, max_matvecs=15)
    smoothness(model, nn.CrossEntropyLoss(), (x, y), num_samples=2, mode="train", max_matvecs=15)
    assert_same_state(model, before)


def test_reproducible_under_a_seed() -> None:
    model, data = mlp(nn.Softplus), classification_data()
    a = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3, seed=4, tol=1e-3)
    b = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3, seed=4, tol=1e-3)
    c = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3, seed=5, tol=1e-3)
    assert a == b
    assert [s.seed for s in a.samples] != [s.seed for s in c.samples]
    assert a.k_hat != c.k_hat
    # More samples extend the same sequence: the first draws do not depend on num_samples.
    longer = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=4, seed=4, tol=1e-3)
    assert longer.samples[:3] == a.samples
    assert longer.k_hat >= a.k_hat


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batchnorm_and_dropout_models(mode: str) -> None:
    model = _bn_dropout_model()
    x, y = classification_data()
    a = smoothness(model, nn.CrossEntropyLoss(), (x, y), num_samples=2, mode=mode, max_matvecs=40)
    b = smoothness(model, nn.CrossEntropyLoss(), (x, y), num_samples=2, mode=mode, max_matvecs=40)
    assert a == b  # deterministic (eval: no dropout; train: masks fixed per estimate)
    assert all(s.value > 0 for s in a.samples)
    probe = _bn_dropout_model()
    reset_parameters_sampler(probe, torch.Generator().manual_seed(a.samples[0].seed))
    if mode == "eval":  # the eval-mode loss is what the dense reference differentiates
        ref = spectral_norm(dense_hessian(probe.eval(), nn.CrossEntropyLoss(), [(x, y)]))
        assert a.samples[0].value == pytest.approx(ref, rel=1e-4)
    else:  # the sample is the train-mode estimate at its weights (batch statistics, the estimate's dropout masks)
        sample = a.samples[0]
        seed = sample.result.seed
        train = hessian_spectral_norm(probe, nn.CrossEntropyLoss(), (x, y), mode="train", seed=seed, max_matvecs=40)
        evaluated = hessian_spectral_norm(probe, nn.CrossEntropyLoss(), (x, y), mode="eval", seed=seed, max_matvecs=40)
        assert sample.value == pytest.approx(train.value, rel=1e-9)
        assert abs(sample.value - evaluated.value) > 1e-6 * evaluated.value  # not the eval-mode curvature


def test_at_current_is_reported_apart() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # current weights far from the init distribution
    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, at_current=True)
    assert est.current is not None
    ref = spectral_norm(dense_hessian(model, nn.CrossEntropyLoss(), [data]))
    assert est.current.value == pytest.approx(ref, rel=1e-4)
    assert est.k_hat == max(s.value for s in est.samples)
    without = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2)
    assert without.samples == est.samples  # asking for the current weights does not change the draws
    assert est.matvecs == without.matvecs + est.current.matvecs


def test_user_sampler_gets_a_seeded_generator() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    seen: list[int] = []

    def gaussian(m: nn.Module, generator: torch.Generator) -> None:
        seen.append(generator.initial_seed())
        for p in m.parameters():
            p.normal_(0.0, 0.5, generator=generator)

    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=3, sampler=gaussian, seed=2)
    assert seen == [s.seed for s in est.samples]
    probe = mlp(nn.Tanh)
    with torch.no_grad():
        gaussian(probe, torch.Generator().manual_seed(est.samples[1].seed))
    ref = spectral_norm(dense_hessian(probe, nn.CrossEntropyLoss(), [data]))
    assert est.samples[1].value == pytest.approx(ref, rel=1e-4)


def test_default_sampler_warns_about_parameters_it_cannot_redraw() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x) * self.scale

    model = Scaled().to(F64)
    with pytest.warns(UserWarning, match="scale") as caught:
        smoothness(model, nn.CrossEntropyLoss(), classification_data(), num_samples=1)
    # attributed to this line, not to smoothness.py (stacklevel=3 named a line of the library)
    assert [w.filename for w in caught] == [__file__]
    with pytest.warns(UserWarning, match=r"estimate_kwargs=\{'sampler': ...\} for exact_step_adam") as caught:
        exact_step_adam(model, nn.CrossEntropyLoss(), classification_data(), total_steps=10, num_samples=1)
    assert [w.filename for w in caught] == [__file__]


def test_progress_bar_only_when_asked_or_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, tol=1e-2)  # stderr is captured: not a TTY
    assert capsys.readouterr().err == ""
    smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, tol=1e-2, progress=True)
    assert "smoothness" in capsys.readouterr().err


def test_to_dict_is_json() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=2, at_current=True, tol=1e-2)
    d = json.loads(json.dumps(est.to_dict()))
    assert d["k_hat"] == est.k_hat and d["argmax"] == est.argmax and len(d["samples"]) == 2
    assert d["samples"][0]["seed"] == est.samples[0].seed
    assert d["samples"][0]["vector_seed"] == est.samples[0].result.seed
    assert d["current"]["value"] == est.current.value  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"seed": -1}, "seed"),
        ({"at_current": 1}, "at_current"),
        ({"progress": "yes"}, "progress"),
        ({"sampler": 3}, "sampler"),
        ({"method": "qr"}, "method"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], name: str) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    with pytest.raises(ValueError, match=name):
        smoothness(model, nn.CrossEntropyLoss(), data, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.CrossEntropyLoss(reduction="sum"),
        functools.partial(nn.functional.cross_entropy, reduction="sum"),
        functools.partial(nn.CrossEntropyLoss(reduction="sum")),
    ],
)
def test_a_summed_loss_is_refused_before_any_sample(loss_fn: Any) -> None:
    model, data = mlp(nn.Tanh), classification_data()
    before = state_snapshot(model)
    with pytest.raises(ValueError, match="loss_fn must return the batch's mean loss"):
        smoothness(model, loss_fn, data, num_samples=2)
    assert_same_state(model, before)


def test_a_partial_with_mean_reduction_is_accepted() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    est = smoothness(model, functools.partial(nn.functional.cross_entropy, label_smoothing=0.0), data, num_samples=1)
    assert est.k_hat > 0


class _ZeroHead(nn.Module):
    """A model whose own initialisation zeroes its head, after the children drew theirs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.body(x)))


def test_default_sampler_resets_children_before_parents() -> None:
    """The parent's choice wins, as at construction: model.modules() order (parent first) drew a non-zero head."""
    torch.manual_seed(0)  # not the sampler's seed (1): with the global seed at 1 the re-draw equalled the weights
    model = _ZeroHead()
    body = model.body.weight.detach().clone()
    reset_parameters_sampler(model, torch.Generator().manual_seed(1))
    assert not torch.equal(model.body.weight, body)  # re-drawn
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0


def test_default_sampler_uses_the_attentions_own_initialiser() -> None:
    torch.manual_seed(0)  # not the sampler's seed (1), see above
    mha = nn.MultiheadAttention(8, 2)
    in_proj = mha.in_proj_weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every parameter is re-drawn: no "keep their current values" warning
        reset_parameters_sampler(mha, torch.Generator().manual_seed(1))
    assert not torch.equal(mha.in_proj_weight, in_proj)
    assert torch.count_nonzero(mha.in_proj_bias) == 0 and torch.count_nonzero(mha.out_proj.bias) == 0


def test_a_sampler_that_replaces_parameters_is_refused_and_the_model_restored() -> None:
    model, data = mlp(nn.Tanh), classification_data()
    originals = list(model.parameters())
    before = state_snapshot(model)

    def replacing(m: nn.Module, generator: torch.Generator) -> None:
        first = next(mod for mod in m.modules() if isinstance(mod, nn.Linear))
        first.weight = nn.Parameter(torch.randn_like(first.weight))  # a new object, not a write in place

    with pytest.raises(ValueError, match="sampler must write the model's parameters in place"):
        smoothness(model, nn.CrossEntropyLoss(), data, num_samples=1, sampler=replacing)
    assert all(p is q for p, q in zip(model.parameters(), originals, strict=True))
    assert_same_state(model, before)
