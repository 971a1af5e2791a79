"""smoothness's weight draws: reproducibility of a sampler on the global RNG, and which BatchNorm statistics the
default sampler keeps.

The documented rules (:func:`theorylr.estimate.smoothness`): sample ``j`` seeds the global RNG with its weight seed
before the sampler runs; the default sampler keeps the parameters the Hessian is not taken over and the buffers of
modules *all* of whose parameters are kept, and a module without parameters of its own follows the nearest
enclosing module that has some.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from theorylr.estimate import hessian_spectral_norm, reset_parameters_sampler, smoothness

F64 = torch.float64


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 4, generator=gen, dtype=F64), torch.randint(0, 3, (n,), generator=gen)


def _global_rng_sampler(model: nn.Module, generator: torch.Generator) -> None:
    """Draws from the global RNG (as ``nn.init`` does), ignoring ``generator``."""
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)


def test_a_sampler_on_the_global_rng_gives_the_same_estimate_whatever_the_callers_seed() -> None:
    """The global RNG is seeded with each sample's weight seed, so the caller's RNG state does not matter."""
    data = _data()
    values = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
        est = smoothness(
            model, nn.CrossEntropyLoss(), data, num_samples=2, sampler=_global_rng_sampler, seed=0, max_matvecs=20
        )
        values.append([s.value for s in est.samples])
    assert values[0] == values[1]


def test_one_sample_repeats_alone_from_its_recorded_seeds_with_a_global_rng_sampler() -> None:
    """``SmoothnessSample``'s recipe: seed the global RNG with ``sample.seed``, run the sampler, take the norm."""
    data = _data()
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    est = smoothness(
        model, nn.CrossEntropyLoss(), data, num_samples=2, sampler=_global_rng_sampler, seed=4, max_matvecs=20
    )
    torch.manual_seed(123)  # some other state first: the recipe must not depend on it
    for sample in est.samples:
        torch.manual_seed(sample.seed)
        with torch.no_grad():
            _global_rng_sampler(model, torch.Generator().manual_seed(sample.seed))
        again = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=sample.result.seed, max_matvecs=20)
        assert again.value == sample.value


def _bn_with_frozen_scale() -> nn.Sequential:
    """A BatchNorm whose scale is frozen and whose shift is trained, with non-trivial running statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).to(F64)
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(9.0)
        model[1].weight.fill_(2.0)
    model[1].weight.requires_grad_(False)
    return model


def test_batchnorm_with_some_parameters_trained_has_its_statistics_reset_in_each_sample() -> None:
    """Only a module *all* of whose parameters are kept keeps its buffers: a trained shift means fresh statistics.

    Each sample must therefore see ``running_mean = 0`` and ``running_var = 1`` (``reset_parameters`` of a
    BatchNorm), the frozen scale 2, and the estimate must equal one from an explicit sampler that draws everything
    with ``reset_parameters_sampler`` and puts back only the frozen scale.
    """
    data = _data()
    model = _bn_with_frozen_scale()
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bn = model[1]
        seen.append((bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach().clone()))
        return nn.functional.cross_entropy(out, y)

    est = smoothness(model, loss_fn, data, num_samples=2, seed=0, max_matvecs=30)
    assert seen
    for mean, var, scale in seen:
        assert torch.equal(mean, torch.zeros(4, dtype=F64))
        assert torch.equal(var, torch.ones(4, dtype=F64))
        assert torch.equal(scale, torch.full((4,), 2.0, dtype=F64))
    assert torch.equal(model[1].running_mean, torch.full((4,), 3.0, dtype=F64))  # and the model comes back

    reference_model = _bn_with_frozen_scale()

    def reference_sampler(m: nn.Module, gen: torch.Generator) -> None:
        reset_parameters_sampler(m, gen)  # every parameter and buffer drawn afresh (statistics to 0 / 1) ...
        m[1].weight.fill_(2.0)  # type: ignore[index,union-attr]  # ... then the frozen scale back

    ref = smoothness(
        reference_model, nn.CrossEntropyLoss(), data, num_samples=2, seed=0, max_matvecs=30, sampler=reference_sampler
    )
    assert [s.seed for s in est.samples] == [s.seed for s in ref.samples]
    for got, want in zip(est.samples, ref.samples):
        assert got.value == pytest.approx(want.value, rel=1e-10)
    assert est.k_hat == pytest.approx(ref.k_hat, rel=1e-10)


def _nested_frozen_backbone() -> nn.Sequential:
    """``affine=False`` BatchNorm in a parameter-less ``nn.Sequential`` in a frozen backbone, and a trained head."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.BatchNorm1d(4, affine=False)))
    with torch.no_grad():
        backbone[1][0].running_mean.fill_(3.0)
        backbone[1][0].running_var.fill_(9.0)
    for p in backbone.parameters():
        p.requires_grad_(False)
    return nn.Sequential(backbone, nn.Tanh(), nn.Linear(4, 3)).to(F64)


def test_statistics_of_a_batchnorm_nested_in_a_parameterless_container_of_a_frozen_backbone_are_kept() -> None:
    """The BatchNorm has no parameters, nor has its container: the nearest enclosing module with parameters is the
    frozen backbone, so its statistics (3 and 9) are kept in every sample, as are the backbone's weights.

    The estimate equals one from an explicit sampler that draws everything with ``reset_parameters_sampler`` (which
    resets the statistics to 0 / 1) and then puts the whole backbone back.
    """
    data = _data()
    model = _nested_frozen_backbone()
    saved_backbone = {k: v.clone() for k, v in model[0].state_dict().items()}
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bn = model[0][1][0]
        seen.append((bn.running_mean.clone(), bn.running_var.clone()))
        return nn.functional.cross_entropy(out, y)

    est = smoothness(model, loss_fn, data, num_samples=2, seed=0, max_matvecs=30)
    assert seen
    for mean, var in seen:
        assert torch.equal(mean, torch.full((4,), 3.0, dtype=F64))
        assert torch.equal(var, torch.full((4,), 9.0, dtype=F64))

    reference_model = _nested_frozen_backbone()

    def reference_sampler(m: nn.Module, gen: torch.Generator) -> None:
        reset_parameters_sampler(m, gen)
        m[0].load_state_dict(saved_backbone)  # type: ignore[index,operator]  # in place: parameters and statistics

    ref = smoothness(
        reference_model, nn.CrossEntropyLoss(), data, num_samples=2, seed=0, max_matvecs=30, sampler=reference_sampler
    )
    for got, want in zip(est.samples, ref.samples):
        assert got.value == pytest.approx(want.value, rel=1e-10)
    assert est.k_hat == pytest.approx(ref.k_hat, rel=1e-10)
