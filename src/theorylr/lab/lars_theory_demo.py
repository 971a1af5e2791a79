"""The LARS theory demonstration: the paper's 1-D and 2-D predictions beside the real optimizer.

:func:`run_lars_theory_demo` runs :class:`~theorylr.optim.lars.LARS` (no momentum, ``eps=0``: the paper's eq. (1))
on the cases of Gitman, Dilipkumar & Parr §3 and §5 and writes a figure and a plain-text table of predicted against
measured numbers, all computed by :mod:`theorylr.theory.lars`:

* 1-D, a convex ``f`` with a unique minimiser ``a`` (§3.1, §3.3): steps to reach ``[a(1-lr), a(1+lr)]`` and whether the
  iterates stay in it, for a quadratic, log-cosh and a quartic, from below and from above;
* 1-D, opposite signs (§3.2): the geometric attraction to the origin and the step at which the SGD fallback
  (``||w|| < min_norm``) takes over;
* 2-D quadratic (§5, Fig. 1): the region fixed-lr LARS ends in, per lr, between the lower bound
  ``lr ||w*|| / (2 + lr)`` and the derived radius :func:`~theorylr.theory.lars.region_radius`; gradient descent
  converges on the same problem.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from theorylr.lab._files import atomic_write_bytes
from theorylr.optim.lars import LARS
from theorylr.theory import lars as theory

__all__ = ["ONE_D_CASES", "ORIGIN_CASE", "TWO_D_LRS", "run_lars_theory_demo"]

Loss = Callable[[torch.Tensor], torch.Tensor]

#: The 1-D functions (minimiser ``a``); LARS's iterates do not depend on which one (§3.3).
FUNCTIONS_1D: dict[str, Callable[[float], Loss]] = {
    "quadratic": lambda a: lambda w: (w - a) ** 2 / 2,
    "log-cosh": lambda a: lambda w: torch.log(torch.cosh(w - a)),
    "quartic": lambda a: lambda w: (w - a) ** 4 / 4,
}
#: ``(function, w0, a, lr)`` for the interval experiment.
ONE_D_CASES: tuple[tuple[str, float, float, float], ...] = tuple(
    (name, w0, 2.0, lr) for name in FUNCTIONS_1D for w0 in (0.1, 7.0) for lr in (0.05, 0.2)
)
#: ``(w0, a, lr, min_norm)`` for origin attraction (opposite signs) with the paper's SGD fallback at 0.01.
ORIGIN_CASE: tuple[float, float, float, float] = (-3.0, 2.0, 0.1, 0.01)
#: Learning rates of the 2-D experiment (fixed-lr LARS on a quadratic, Fig. 1).
TWO_D_LRS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
_KAPPA = 5.0
_W_STAR = (1.0, 2.0)
_W_INIT = (-3.0, 5.0)
_STEPS_2D = 600


@dataclass(frozen=True)
class _Quadratic2D:
    """``f(w) = (w - w*)^T H (w - w*) / 2`` with ``H`` of eigenvalues 1 and ``kappa``, rotated by 0.5 rad."""

    hessian: torch.Tensor
    w_star: torch.Tensor

    @classmethod
    def make(cls) -> _Quadratic2D:
        c, s = math.cos(0.5), math.sin(0.5)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        hessian = rot @ torch.diag(torch.tensor([1.0, _KAPPA], dtype=torch.float64)) @ rot.T
        return cls(hessian, torch.tensor(_W_STAR, dtype=torch.float64))

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        e = w - self.w_star
        return 0.5 * e @ self.hessian @ e


def _run_1d(loss: Loss, w0: float, lr: float, steps: int, min_norm: float = 0.0) -> list[float]:
    w = torch.nn.Parameter(torch.tensor([w0], dtype=torch.float64))
    opt = LARS([w], lr=lr, momentum=0.0, eps=0.0, min_norm=min_norm)
    out = [w0]
    for _ in range(steps):
        opt.zero_grad()
        loss(w).sum().backward()
        opt.step()
        out.append(float(w.detach()))
    return out


def _run_2d(problem: _Quadratic2D, make_opt: Callable[[list[torch.nn.Parameter]], Any], steps: int) -> torch.Tensor:
    w = torch.nn.Parameter(torch.tensor(_W_INIT, dtype=torch.float64))
    opt = make_opt([w])
    path = [w.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        problem(w).backward()
        opt.step()
        path.append(w.detach().clone())
    return torch.stack(path)


def _one_d_rows() -> tuple[list[dict[str, Any]], dict[tuple[float, float], list[float]]]:
    rows, trajectories = [], {}
    for name, w0, a, lr in ONE_D_CASES:
        predicted = theory.steps_to_interval(w0, a, lr)
        low, high = theory.invariant_interval(a, lr)
        traj = _run_1d(FUNCTIONS_1D[name](a), w0, lr, predicted + 100)
        inside = [low <= w <= high for w in traj]
        measured = inside.index(True) if any(inside) else -1
        rows.append(
            {
                "function": name,
                "w0": w0,
                "a": a,
                "lr": lr,
                "predicted": predicted,
                "approx": theory.steps_to_interval_approx(w0, a, lr),
                "measured": measured,
                "stays": measured >= 0 and all(inside[measured:]),
            }
        )
        if name == "quadratic":
            trajectories[(w0, lr)] = traj
    return rows, trajectories


def _origin_row() -> tuple[dict[str, Any], list[float]]:
    w0, a, lr, min_norm = ORIGIN_CASE
    predicted = theory.steps_to_fallback(w0, lr, min_norm)
    traj = _run_1d(FUNCTIONS_1D["quadratic"](a), w0, lr, predicted + 60, min_norm=min_norm)
    measured = next(k for k, w in enumerate(traj) if abs(w) < min_norm)
    rate_error = max(
        abs(traj[k] - theory.origin_attraction(w0, lr, k)) / abs(theory.origin_attraction(w0, lr, k))
        for k in range(predicted + 1)
    )
    row = {
        "w0": w0,
        "a": a,
        "lr": lr,
        "min_norm": min_norm,
        "predicted": predicted,
        "measured": measured,
        "rate_error": rate_error,
        "final": traj[-1],
    }
    return row, traj


def _two_d_rows(problem: _Quadratic2D) -> tuple[list[dict[str, Any]], dict[float, torch.Tensor], torch.Tensor]:
    w_star = float(problem.w_star.norm())
    cosine = theory.quadratic_cosine_bound(_KAPPA)
    rows, paths = [], {}
    for lr in TWO_D_LRS:
        path = _run_2d(problem, functools.partial(LARS, lr=lr, eps=0.0, min_norm=0.0), _STEPS_2D)
        dist = (path - problem.w_star).norm(dim=1)
        radius = theory.region_radius(lr, w_star, cosine)
        rows.append(
            {
                "lr": lr,
                "lower": theory.region_lower_bound(lr, w_star),
                "measured": float(dist[_STEPS_2D // 2 :].max()),
                "radius": radius,
                "constant": radius / (lr * w_star),
                "entered": int(torch.nonzero(dist <= radius)[0]),
            }
        )
        paths[lr] = path
    gd = _run_2d(problem, lambda ps: torch.optim.SGD(ps, lr=1.0 / _KAPPA), _STEPS_2D)
    return rows, paths, gd


def _summary(
    one_d: Sequence[dict[str, Any]], origin: dict[str, Any], two_d: Sequence[dict[str, Any]], gd_dist: float
) -> str:
    lines = [
        "# LARS theory demonstration: Gitman, Dilipkumar & Parr, Convergence Analysis of Gradient Descent",
        "# Algorithms with Proportional Updates (§3, §5). Real theorylr.LARS, momentum 0, eps 0, float64.",
        "",
        "## one_d: steps to enter [a(1-lr), a(1+lr)] (§3.1, §3.3; approx = |log(a/w0)|/lr)",
        f"{'function':<10} {'w0':>6} {'a':>5} {'lr':>5} {'predicted':>9} {'approx':>8} {'measured':>8} stays_inside",
    ]
    for r in one_d:
        lines.append(
            f"{r['function']:<10} {r['w0']:>6g} {r['a']:>5g} {r['lr']:>5g} {r['predicted']:>9d} {r['approx']:>8.2f} "
            f"{r['measured']:>8d} {'yes' if r['stays'] else 'no'}"
        )
    lines += [
        "",
        "## origin: opposite signs, w_k = (1-lr)^k w0 until |w| < min_norm, then SGD (§3.2)",
        f"{'w0':>6} {'a':>5} {'lr':>5} {'min_norm':>8} {'predicted':>9} {'measured':>8} {'rate_error':>10} final_w",
        f"{origin['w0']:>6g} {origin['a']:>5g} {origin['lr']:>5g} {origin['min_norm']:>8g} {origin['predicted']:>9d} "
        f"{origin['measured']:>8d} {origin['rate_error']:>10.2e} {origin['final']:.6g}",
        "",
        f"## two_d: fixed-lr LARS on a 2-D quadratic (kappa {_KAPPA:g}, ||w*|| = {math.hypot(*_W_STAR):.12g}), "
        f"max |w - w*| over steps {_STEPS_2D // 2}-{_STEPS_2D}",
        "## lower = lr||w*||/(2+lr) <= region <= radius = constant * lr * ||w*|| (theorylr.theory.lars.region_radius)",
        f"{'lr':>6} {'lower':>12} {'measured':>12} {'radius':>12} {'constant':>9} {'entered':>7} within",
    ]
    for r in two_d:
        within = r["lower"] <= r["measured"] <= r["radius"]
        lines.append(
            f"{r['lr']:>6g} {r['lower']:>12.6e} {r['measured']:>12.6e} {r['radius']:>12.6e} {r['constant']:>9.4f} "
            f"{r['entered']:>7d} {'yes' if within else 'no'}"
        )
    lines += ["", f"gradient_descent lr=1/L: |w - w*| after {_STEPS_2D} steps = {gd_dist:.3e}", ""]
    return "\n".join(lines)


def _figure(
    trajectories: dict[tuple[float, float], list[float]],
    origin: dict[str, Any],
    origin_traj: list[float],
    problem: _Quadratic2D,
    two_d: Sequence[dict[str, Any]],
    paths: dict[float, torch.Tensor],
    gd: torch.Tensor,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    a = ONE_D_CASES[0][2]
    for (w0, lr), traj in trajectories.items():
        (line,) = ax.plot(traj, lw=1.2, label=f"w0={w0:g}, lr={lr:g}")
        low, high = theory.invariant_interval(a, lr)
        ax.axhspan(low, high, color=line.get_color(), alpha=0.12)
        ax.axvline(theory.steps_to_interval(w0, a, lr), color=line.get_color(), ls=":", lw=0.8)
    ax.axhline(a, color="k", lw=0.6)
    ax.set(title="(a) 1-D: interval [a(1-lr), a(1+lr)], predicted entry (dotted)", xlabel="step", ylabel="w")
    ax.set_yscale("log")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    w0, lr, min_norm = origin["w0"], origin["lr"], origin["min_norm"]
    ks = range(len(origin_traj))
    ax.semilogy(ks, [abs(w) for w in origin_traj], lw=1.2, label="|w_k| (LARS)")
    ax.semilogy(ks, [abs(theory.origin_attraction(w0, lr, k)) for k in ks], "k--", lw=0.8, label="(1-lr)^k |w0|")
    ax.axhline(min_norm, color="r", lw=0.8, label="min_norm (SGD fallback)")
    ax.axvline(origin["predicted"], color="r", ls=":", lw=0.8)
    ax.set(title=f"(b) opposite signs: origin attraction, w0={w0:g}, a={origin['a']:g}", xlabel="step")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    ws = problem.w_star
    grid = torch.linspace(-4.0, 6.0, 121, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1) - ws
    ff = 0.5 * ((pts @ problem.hessian) * pts).sum(1).reshape(xx.shape)
    ax.contour(xx.numpy(), yy.numpy(), ff.numpy(), levels=15, linewidths=0.4, colors="0.7")
    for lr in (TWO_D_LRS[1], TWO_D_LRS[-1]):
        p = paths[lr].numpy()
        ax.plot(p[:, 0], p[:, 1], ".-", ms=2, lw=0.6, label=f"LARS lr={lr:g}")
    g = gd.numpy()
    ax.plot(g[:, 0], g[:, 1], "k.-", ms=2, lw=0.6, label="GD lr=1/L")
    ax.plot([float(ws[0])], [float(ws[1])], "r*", ms=10)
    ax.set(title="(c) 2-D quadratic (Fig. 1): LARS ends near w*, GD converges", aspect="equal")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    lrs = [r["lr"] for r in two_d]
    ax.loglog(lrs, [r["measured"] for r in two_d], "o-", label="measured region (max |w - w*|)")
    ax.loglog(lrs, [r["radius"] for r in two_d], "k--", label="derived radius (upper)")
    ax.loglog(lrs, [r["lower"] for r in two_d], "k:", label="lr ||w*|| / (2 + lr) (lower)")
    ax.set(title="(d) region size grows with lr", xlabel="lr", ylabel="distance to w*")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def run_lars_theory_demo(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Run the 1-D and 2-D LARS theory demonstration and write ``lars_theory.png`` and ``lars_theory.txt``.

    Both files are written atomically into ``out_dir`` (created if needed). The text file has three sections,
    ``one_d`` (steps to the invariant interval, predicted by
    :func:`~theorylr.theory.lars.steps_to_interval` and measured), ``origin`` (origin attraction and the SGD
    fallback step) and ``two_d`` (region size per lr against :func:`~theorylr.theory.lars.region_lower_bound` and
    :func:`~theorylr.theory.lars.region_radius`), each a header line and whitespace-separated rows. Runs in a few
    seconds on one CPU core.

    Args:
        out_dir: the directory to write into.

    Returns:
        ``{"plot": <png path>, "summary": <txt path>}``.

    Example:
        >>> import tempfile
        >>> paths = run_lars_theory_demo(tempfile.mkdtemp())
        >>> sorted(p.name for p in paths.values())
        ['lars_theory.png', 'lars_theory.txt']

    Reference: Gitman, Dilipkumar & Parr, *Convergence Analysis of Gradient Descent Algorithms with Proportional
    Updates*, §3.1-§3.3 and §5 (Fig. 1).
    """
    out = Path(out_dir)
    one_d, trajectories = _one_d_rows()
    origin, origin_traj = _origin_row()
    problem = _Quadratic2D.make()
    two_d, paths, gd = _two_d_rows(problem)
    gd_dist = float((gd[-1] - problem.w_star).norm())
    text = _summary(one_d, origin, two_d, gd_dist)
    png = _figure(trajectories, origin, origin_traj, problem, two_d, paths, gd)
    summary_path, plot_path = out / "lars_theory.txt", out / "lars_theory.png"
    atomic_write_bytes(plot_path, png)
    atomic_write_bytes(summary_path, text.encode("utf-8"))
    return {"plot": plot_path, "summary": summary_path}
