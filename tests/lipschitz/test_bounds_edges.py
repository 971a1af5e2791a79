"""gradient_norm_bound at the edges: activations far from 1 (underflow, overflow), 16-bit activations.

Each test builds a weight value at which the true last-layer gradient norm (computed by autograd in float64 from
the exact input values) exceeded the returned bound ``B``, or ``B`` was not a number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from theorylr.lipschitz.bounds import gradient_norm_bound

F64 = torch.float64


def _bce_grad_norm(a: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> float:
    w = w.to(F64).clone().requires_grad_(True)
    z = (a.to(F64) @ w.T).squeeze(1)
    F.binary_cross_entropy_with_logits(z, y.to(F64)).backward()
    return float(torch.linalg.vector_norm(w.grad / w.grad.abs().max()) * w.grad.abs().max())


def _softmax_grad_norm(a: torch.Tensor, w: torch.Tensor, labels: torch.Tensor) -> float:
    w = w.to(F64).clone().requires_grad_(True)
    F.cross_entropy(a.to(F64) @ w.T, labels).backward()
    scale = w.grad.abs().max()
    return float(torch.linalg.vector_norm(w.grad / scale) * scale)


def test_tiny_float32_activations_do_not_underflow_the_bound() -> None:
    # Per-row norms are computed as sqrt(sum of squares): 1e-23 ** 2 underflows float32 to 0, so B = 0.
    a = torch.full((1, 2), 1e-23)
    w = torch.full((1, 2), 1e25)  # z = 200: sigmoid(z) - 0 = 1, gradient = a
    true = _bce_grad_norm(a, w, torch.zeros(1))
    bound = gradient_norm_bound(a, "bce")
    assert true > 1e-23
    assert float(bound) >= true * (1 - 1e-5), (float(bound), true)


def test_tiny_float64_activations_do_not_underflow_the_bound() -> None:
    a = torch.full((1, 2), 1e-170, dtype=F64)
    w = torch.full((1, 2), 1e172, dtype=F64)
    true = _bce_grad_norm(a, w, torch.zeros(1))
    for loss in ("bce", "softmax"):
        bound = gradient_norm_bound(a, loss)
        assert float(bound) >= true * (1 - 1e-9), (loss, float(bound), true)


def test_tiny_activations_partial_underflow_softmax_with_targets() -> None:
    # 1e-22: squares are subnormal, the norms lose precision and B falls ~1 % below the supremum.
    a = torch.full((4, 8), 1e-22)
    labels = torch.zeros(4, dtype=torch.long)
    w = torch.zeros(2, 8, dtype=F64)
    w[1] = 1e24  # all mass on the wrong class 1 for every example
    true = _softmax_grad_norm(a, w, labels)
    bound = gradient_norm_bound(a, "softmax", targets=labels, num_classes=2)
    assert float(bound) >= true * (1 - 1e-5), (float(bound), true)


def test_huge_float32_activations_softmax_with_targets_is_not_nan() -> None:
    # The centre term ||sum(a)/k - Y^T A|| overflows to inf; the alpha = 0 candidate is then 0 * inf = nan.
    a = torch.tensor([[1e20]])
    labels = torch.tensor([0])
    bound = gradient_norm_bound(a, "softmax", targets=labels, num_classes=2)
    true = _softmax_grad_norm(a, torch.tensor([[0.0], [1e-18]]), labels)
    assert torch.isfinite(bound), bound
    assert float(bound) >= true * (1 - 1e-5), (float(bound), true)


def test_huge_float32_activations_bce_with_targets_is_finite() -> None:
    # The true supremum ||a|| = 7.07e19 is representable; ||A^T (1/2 - y)|| overflows, B = inf (lr = 1/B = 0).
    a = torch.tensor([[5e19, 5e19]])
    bound = gradient_norm_bound(a, "bce", targets=torch.tensor([0.0]))
    assert torch.isfinite(bound), bound


def test_bfloat16_activations_bound_is_not_rounded_below_the_supremum() -> None:
    # m = 1, y = 0: sup over W of the gradient norm is ||a|| = sqrt(74) = 8.6023 (attained in floating point for
    # a large margin); B is computed in bfloat16 and comes out as 8.5625.
    a = torch.tensor([[5.0, 7.0]], dtype=torch.bfloat16)
    true = _bce_grad_norm(a, torch.full((1, 2), 100.0), torch.zeros(1))
    bound = gradient_norm_bound(a, "bce")
    assert float(bound) >= true, (float(bound), true)
