r"""The "exact" constant step size of Adam (the exact-step Adam paper, Theorems 1-2 and Section 4.2).

Theorems 1 (deterministic) and 2 (stochastic) give Adam (Algorithm 1: moments ``m_t``, ``v_t`` and the update
``w_{t+1} = w_t - alpha (V_t^{1/2} + rho I)^{-1} m_t``) a constant step

.. math::
    \alpha = \sqrt{\frac{2\,(L(w_0) - L(w^*))}{K\,\delta^2\,T}}, \qquad \delta^2 = \frac{\gamma^2}{\rho^2},

with ``K`` the smoothness of the loss (Lipschitz constant of its gradient), ``gamma`` a bound on the gradient
norm, ``rho`` the constant added to ``sqrt(v_t)`` in Adam's denominator, and ``T`` the number of steps. Under it,
``min_t ||grad L(w_t)|| <= epsilon`` for some ``t`` past a threshold ``T(beta_1, rho)``, at rate ``O(T^{-1/4})``.

Section 4.2 simplifies this for practice: drop ``delta^2`` (it needs a gradient oracle) and set ``L(w^*) = 0``,

.. math::
    \alpha \approx \sqrt{\frac{2\,L(w_0)}{\hat K\,T}},

with ``K_hat`` from Algorithm 2 (:func:`theorylr.estimate.smoothness`). That is the form the paper's experiments
use and :func:`constant_step`'s default.

.. note::
    The theorems also assume ``beta_1 < epsilon / (epsilon + gamma)`` (§4.1, restriction 1), that is
    ``epsilon > gamma beta_1 / (1 - beta_1)``: ``epsilon > 9 gamma`` at the usual ``beta_1 = 0.9``. As ``gamma``
    bounds the gradient norm everywhere, the conclusion ``min_t ||grad L(w_t)|| <= epsilon`` then holds trivially;
    the guarantee has content only for ``beta_1`` well below ``epsilon / gamma``. With the usual betas (the paper's
    experiments, and :func:`theorylr.optim.exact_adam.exact_step_adam`'s default) the step size is the paper's
    heuristic rather than a proven one. theorylr does not check the restriction (it needs ``gamma``).
"""

from __future__ import annotations

import math

from torch import Tensor

from theorylr._validation import check_int, check_number

__all__ = ["constant_step", "delta_squared"]


def delta_squared(gamma: float, rho: float) -> float:
    r"""Theorem 1's :math:`\delta^2 = \gamma^2 / \rho^2`.

    Args:
        gamma: an upper bound on the gradient norm, :math:`\|\nabla L(w)\|_2 \le \gamma` (> 0).
        rho: the constant in Adam's denominator :math:`(V_t^{1/2} + \rho I)` (> 0; ``eps`` in ``torch.optim.Adam``).

    Example:
        >>> delta_squared(2.0, 0.5)
        16.0
    """
    check_number("gamma", gamma, min_value=0.0, min_inclusive=False)
    check_number("rho", rho, min_value=0.0, min_inclusive=False)
    return (gamma / rho) ** 2


def constant_step(
    initial_loss: float | Tensor,
    smoothness: float | Tensor,
    total_steps: int,
    final_loss: float | Tensor = 0.0,
    *,
    gamma: float | None = None,
    rho: float | None = None,
) -> float:
    r"""Adam's constant step size from the exact-step Adam paper.

    .. math::
        \alpha = \sqrt{\frac{2\,(L(w_0) - L(w^*))}{K\,\delta^2\,T}}

    By default (``gamma`` and ``rho`` not given) :math:`\delta^2 = 1` and ``final_loss = 0``: the paper's
    practical form :math:`\sqrt{2 L(w_0) / (\hat K T)}` (Section 4.2). Given both ``gamma`` and ``rho``,
    :math:`\delta^2 = \gamma^2 / \rho^2` as in Theorems 1 and 2.

    Args:
        initial_loss: :math:`L(w_0)`, the loss at the initial weights (on the data the smoothness was estimated on);
            a float or a one-element tensor (read once), as are ``smoothness`` and ``final_loss``.
        smoothness: :math:`K` (or its estimate :math:`\hat K`), > 0.
        total_steps: :math:`T`, the number of Adam steps the step size is planned for (optimizer steps: epochs
            times batches per epoch in mini-batch training), >= 1.
        final_loss: :math:`L(w^*)`, the minimum loss (default 0, the paper's choice; must be < ``initial_loss``).
        gamma: gradient-norm bound :math:`\gamma` (> 0); give it together with ``rho``.
        rho: Adam's denominator constant :math:`\rho` (> 0; ``eps`` in ``torch.optim.Adam``).

    Returns:
        :math:`\alpha` as a float.

    Raises:
        ValueError: for a non-finite or out-of-range argument, ``initial_loss <= final_loss``, or only one of
            ``gamma``/``rho``.

    Example:
        >>> constant_step(2.3, 4.6, 100)  # sqrt(2 * 2.3 / (4.6 * 100)) = sqrt(0.01)
        0.1
        >>> constant_step(2.3, 4.6, 100, gamma=1.0, rho=0.5)  # delta^2 = 4 halves the step
        0.05

    Reference:
        the exact-step Adam paper: Theorem 1 and Theorem 2 (full form), Section 4.2 (simplified form).

    .. note::
        The paper's Remark 2 prints the step as :math:`\sqrt{2(L(w_0) - L(w^*))} / K\delta^2 T`, with the root over
        the numerator only; Theorems 1-2 and Section 4.2 put the whole fraction under the root, which is what we
        compute. With :math:`\rho` = Adam's usual ``eps`` (1e-8) the full form is tiny (:math:`\delta \approx
        10^8 \gamma`); the paper's experiments use the simplified form, which is the default here. Theorem 1's
        Adam has no bias correction, whereas ``torch.optim.Adam`` has; the step size is used unchanged. Section 4.2
        calls ``T`` "the total number of iterations/epochs"; Theorems 1-2 count Adam iterations, so ``T`` here is
        optimizer steps (in mini-batch training, epochs times batches per epoch).
    """
    check_number("initial_loss", initial_loss, allow_tensor=True)
    check_number("final_loss", final_loss, allow_tensor=True)
    check_number("smoothness", smoothness, min_value=0.0, min_inclusive=False, allow_tensor=True)
    check_int("total_steps", total_steps, min_value=1)
    gap = float(initial_loss) - float(final_loss)
    if not gap > 0.0:
        raise ValueError(
            f"initial_loss must be > final_loss (got initial_loss={float(initial_loss)!r}, "
            f"final_loss={float(final_loss)!r})"
        )
    if (gamma is None) != (rho is None):
        raise ValueError(f"gamma and rho must be given together or not at all (got gamma={gamma!r}, rho={rho!r})")
    delta2 = 1.0 if gamma is None or rho is None else delta_squared(gamma, rho)
    return math.sqrt(2.0 * gap / (float(smoothness) * delta2 * total_steps))
