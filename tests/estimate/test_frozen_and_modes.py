"""theorylr.estimate in less common settings.

Frozen parameters kept by smoothness's default sampler, a clear error for a per-sample loss, eigensolvers whose
starting vector has another dtype than the operator, and estimates requested under ``torch.inference_mode()``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian
from torch.func import functional_call

from theorylr.estimate import (
    HessianOperator,
    data_loss,
    hessian_spectral_norm,
    hvp,
    lanczos,
    power_iteration,
    smoothness,
)

F64 = torch.float64


def _model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(F64)


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=gen, dtype=F64), torch.randint(0, 3, (n,), generator=gen)


def _dense_norm(model: nn.Module, names: list[str], data: tuple[torch.Tensor, torch.Tensor]) -> float:
    """||H||_2 over the named parameters, eval mode, from torch.autograd.functional.hessian."""
    params = dict(model.named_parameters())
    x, y = data
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        named, offset = {}, 0
        for n in names:
            k = params[n].numel()
            named[n] = flat[offset : offset + k].view_as(params[n])
            offset += k
        return nn.functional.cross_entropy(functional_call(model, named, (x,)), y)

    was = model.training
    model.eval()
    h = hessian(loss, flat0)
    model.train(was)
    return float(torch.linalg.eigvalsh(h).abs().max())


def test_smoothness_keeps_frozen_parameters_and_their_batchnorm_statistics() -> None:
    """A frozen (pretrained) backbone is not part of the weights Algorithm 2 samples; it used to be re-drawn."""
    model = _model()
    with torch.no_grad():
        model[0].weight.mul_(5.0)
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    for p in [*model[0].parameters(), *model[1].parameters()]:
        p.requires_grad_(False)
    frozen = {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}
    seen: list[tuple[torch.Tensor, ...]] = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append((model[0].weight.detach().clone(), model[1].running_var.detach().clone()))
        return nn.functional.cross_entropy(out, y)

    data = _data()
    est = smoothness(model, loss_fn, data, num_samples=3, tol=1e-10, max_matvecs=50)
    assert seen and all(torch.equal(w, frozen["0.weight"]) and torch.equal(v, frozen["1.running_var"]) for w, v in seen)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(t, frozen[name])  # and the model comes back as it was
    # Each sample is the head's Hessian norm at the frozen backbone and a fresh head.
    for sample in est.samples:
        torch.manual_seed(sample.seed)
        model[0].reset_parameters()  # draws from the RNG first, as the sampler does, ...
        model[3].reset_parameters()
        with torch.no_grad():
            for name, t in [*model[0].named_parameters(prefix="0"), *model[1].named_buffers(prefix="1")]:
                t.copy_(frozen[name])  # ... then gets its values back
        expected = _dense_norm(model, ["3.weight", "3.bias"], data)
        assert sample.value == pytest.approx(expected, rel=1e-8)


def test_smoothness_with_a_params_subset_draws_only_that_subset() -> None:
    model = _model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    drawn: set[str] = set()

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        drawn.update(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
        return nn.functional.cross_entropy(out, y)

    smoothness(model, loss_fn, _data(), num_samples=2, params=list(model[3].parameters()), max_matvecs=5)
    assert drawn == {"3.weight", "3.bias"}


def test_smoothness_user_sampler_still_draws_what_it_likes() -> None:
    model = _model()
    for p in model[0].parameters():
        p.requires_grad_(False)
    weights: list[torch.Tensor] = []

    def sampler(m: nn.Module, gen: torch.Generator) -> None:
        m[0].weight.normal_(generator=gen)  # type: ignore[index,operator]
        weights.append(m[0].weight.detach().clone())  # type: ignore[index]

    smoothness(model, nn.CrossEntropyLoss(), _data(), num_samples=2, sampler=sampler, max_matvecs=5)
    assert not torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("call", ["spectral", "data_loss", "hvp", "forward_over_reverse"])
def test_a_per_sample_loss_is_a_clear_value_error(call: str) -> None:
    model = _model()
    data = _data()

    def per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y, reduction="none")

    with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor.*shape \(32,\)"):
        if call == "spectral":
            hessian_spectral_norm(model, per_sample, data)
        elif call == "data_loss":
            data_loss(model, per_sample, data)
        else:
            backend = "forward_over_reverse" if call == "forward_over_reverse" else "double_backward"
            dim = sum(p.numel() for p in model.parameters())
            hvp(model, per_sample, data, torch.ones(dim, dtype=F64), backend=backend)


@pytest.mark.parametrize("solver", ["lanczos", "power"])
def test_eigensolvers_cast_the_products_to_the_starting_vectors_dtype(solver: str) -> None:
    """A float32 model's operator with a float64 starting vector used to fail in torch.dot."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = _data()
    with HessianOperator(model, nn.CrossEntropyLoss(), (x.float(), y)) as op:
        v0 = torch.randn(op.dim, dtype=F64)
        if solver == "lanczos":
            r = lanczos(op, v0, k=op.dim, tol=1e-4)
        else:
            r = power_iteration(op, v0, max_iters=500, tol=1e-4)
    assert r.vector.dtype == F64
    twin = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    twin.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    reference = hessian_spectral_norm(twin, nn.CrossEntropyLoss(), (x, y), tol=1e-10, max_matvecs=200, seed=0)
    if solver == "lanczos":
        assert abs(r.eigenvalue) == pytest.approx(reference.value, rel=1e-4)
    else:  # power iteration finds the dominant eigenvalue, of magnitude ||H||_2
        assert abs(r.eigenvalue) == pytest.approx(reference.value, rel=1e-3)


def test_a_matvec_of_the_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="matvec must return a vector shaped like its input"):
        lanczos(lambda v: v[:-1], torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="matvec must return a vector shaped like its input"):
        power_iteration(lambda v: v.sum(), torch.ones(4, dtype=F64))


def test_estimates_work_inside_inference_mode() -> None:
    """An evaluation loop under torch.inference_mode() used to get 'element 0 of tensors does not require grad'."""
    model = _model()
    data = _data()
    expected = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=3)
    dim = sum(p.numel() for p in model.parameters())
    v = torch.ones(dim, dtype=F64)
    hv = hvp(model, nn.CrossEntropyLoss(), data, v)
    with torch.inference_mode():
        got = hessian_spectral_norm(model, nn.CrossEntropyLoss(), data, seed=3)
        hv_inference = hvp(model, nn.CrossEntropyLoss(), data, v)
        est = smoothness(model, nn.CrossEntropyLoss(), data, num_samples=1, max_matvecs=5)
    assert got == expected
    torch.testing.assert_close(hv_inference, hv, rtol=0, atol=0)
    assert est.k_hat > 0
