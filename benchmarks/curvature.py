"""Curvature estimation: the cost of a Hessian-vector product, matvecs to converge, and PyHessian alongside.

Data: sklearn's digits (1797 x 64, standardised per feature), cross-entropy, full batch, one CPU thread.

1. Cost, on an MLP 64-128-128-10 (ReLU, float32, 26,122 parameters): one gradient (the baseline), then one HVP per
   backend as a multiple of it: double backward building its graph each call, double backward reusing the first
   backward's graph (what an estimate does: :class:`~theorylr.estimate.HessianOperator`), and torch.func
   forward-over-reverse. Then the data in 8 batches: a gradient over them (for reference; the unit stays the
   full-batch gradient), an HVP from the default operator (which keeps the batches' graphs when they fit the memory
   budget) and one rebuilding them each call (``cache_graph=False``). Then whole spectral-norm estimates at tol
   1e-4 (Lanczos and power iteration, ours) and PyHessian's ``eigenvalues()`` with its defaults: HVPs and wall time.
2. Accuracy, on an MLP 64-32-32-10 (ReLU, float32, 3,466 parameters, small enough for a dense Hessian) at several
   initialisations: the true spectral norm from ``eigvalsh`` of the dense float64 Hessian (plain autograd, batched
   over basis vectors), and for each method the HVPs spent and the true relative error of what it returns; for
   Lanczos also the first Krylov size whose estimate is within 1e-4 of the truth.

Targets (issue 4): an HVP costs at most 2 gradients; our estimate reaches a true relative error of 1e-4 within 25
HVPs on the small model. Run with ``python -m benchmarks.curvature``; ``main()`` returns the figures as a dict.
``--device cuda`` runs the cost part on a GPU (there the small MLP's figures count kernel launches more than
arithmetic).

PyHessian 0.1 needs two shims here, kept in this file: its HVP function is wrapped to count calls, and the
gradients it leaves in ``p.grad`` (with their graph) are cleared after each use. It draws its start vector from
the global RNG, seeded per run.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks._timing import machine_description, median_ms
from theorylr.estimate import HessianOperator, hessian_spectral_norm, lanczos

__all__ = ["main"]

TOL = 1e-4
BATCHES = 8  # the multi-batch rows: the 1797 samples in 8 batches of 224-225


def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    std = x.std(0)
    x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    return x, torch.tensor(data.target, dtype=torch.int64)


def _mlp(hidden: Sequence[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# PyHessian, with its shims
# ---------------------------------------------------------------------------------------------------------------
def _pyhessian_top(model: nn.Module, x: Tensor, y: Tensor, *, tol: float, max_iter: int, seed: int) -> dict[str, Any]:
    # PyHessian moves the data to the GPU itself when told the model is there (``cuda=True``).
    """PyHessian's top eigenvalue: its value, HVPs and wall time (None if the package is missing)."""
    try:  # the module, not the class of the same name that pyhessian/__init__.py re-exports
        ph = importlib.import_module("pyhessian.hessian")
    except ImportError:
        return {"available": False}
    calls = [0]
    original = ph.hessian_vector_product

    def counted(grads: Any, params: Any, v: Any) -> Any:
        calls[0] += 1
        return original(grads, params, v)

    setattr(ph, "hessian_vector_product", counted)  # noqa: B010 (a module attribute mypy cannot see)
    training = model.training
    try:
        torch.manual_seed(seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # backward(create_graph=True) reference-cycle warning
            h = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=x.is_cuda)
            values, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
        seconds = time.perf_counter() - start
    finally:
        setattr(ph, "hessian_vector_product", original)  # noqa: B010
        for p in model.parameters():
            p.grad = None
        model.train(training)
    return {"available": True, "eigenvalue": float(values[0]), "hvps": calls[0], "seconds": seconds}


# ---------------------------------------------------------------------------------------------------------------
# 1. cost
# ---------------------------------------------------------------------------------------------------------------
def _cost(x: Tensor, y: Tensor, repeats: int) -> dict[str, Any]:
    device = x.device
    model = _mlp((128, 128), seed=0).eval().to(device)
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    n = _n_params(model)
    v = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(device)

    def gradient() -> None:
        torch.autograd.grad(loss_fn(model(x), y), params)

    def fresh_graph() -> None:
        with HessianOperator(model, loss_fn, (x, y)) as op:
            op(v)

    batches = list(zip(x.tensor_split(BATCHES), y.tensor_split(BATCHES)))

    def gradient_batches() -> None:
        total = sum(len(yb) / len(y) * loss_fn(model(xb), yb) for xb, yb in batches)
        torch.autograd.grad(total, params)

    cached = HessianOperator(model, loss_fn, (x, y))
    forward_over_reverse = HessianOperator(model, loss_fn, (x, y), backend="forward_over_reverse")
    batches_default = HessianOperator(model, loss_fn, batches)
    batches_rebuilt = HessianOperator(model, loss_fn, batches, cache_graph=False)
    fns: dict[str, Callable[[], Any]] = {
        "gradient": gradient,
        "gradient_batches": gradient_batches,
        "double_backward_fresh": fresh_graph,
        "double_backward_reused": lambda: cached(v),
        "forward_over_reverse": lambda: forward_over_reverse(v),
        "batches_default": lambda: batches_default(v),
        "batches_rebuilt": lambda: batches_rebuilt(v),
    }
    for fn in fns.values():  # warm-up (the reused graph is built here)
        fn()
    # Round-robin, one call each per round, so that load from other processes hits every figure alike.
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_ms(fn, repeats=1, warmup=0, device=device))
    grad_ms = statistics.median(times["gradient"])
    out: dict[str, Any] = {
        "model": "MLP 64-128-128-10 ReLU float32",
        "device": str(device),
        "params": n,
        "gradient_ms": grad_ms,
    }
    for name in list(fns)[1:]:
        ms = statistics.median(times[name])
        key = name if name.startswith("gradient") else f"hvp_{name}"
        out[f"{key}_ms"] = ms
        out[f"{key}_x_gradient"] = ms / grad_ms
    out["batches"] = BATCHES
    out["batches_default_keeps_graphs"] = bool(batches_default.cache_graph)
    for op in (cached, batches_default, batches_rebuilt):
        op.close()

    estimates: dict[str, Any] = {}
    for method in ("lanczos", "power"):
        start = time.perf_counter()
        r = hessian_spectral_norm(model, loss_fn, (x, y), method=method, tol=TOL, max_matvecs=2000, seed=0)
        estimates[method] = {
            "value": r.value,
            "lambda_max": r.lambda_max,
            "lambda_min": r.lambda_min,
            "hvps": r.matvecs,
            "converged": r.converged,
            "seconds": time.perf_counter() - start,
        }
    estimates["pyhessian_default"] = _pyhessian_top(model, x, y, tol=1e-3, max_iter=100, seed=0)
    out["estimates"] = estimates
    return out


# ---------------------------------------------------------------------------------------------------------------
# 2. accuracy against the dense Hessian
# ---------------------------------------------------------------------------------------------------------------
def _dense_hessian(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 64) -> Tensor:
    """The dense Hessian with plain torch.func (no theorylr code): columns ``jvp(grad L, e_i)``, vmapped in chunks."""
    from torch.func import functional_call, grad, jvp, vmap

    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat: Tensor) -> Tensor:
        tensors = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, tensors, (x,)), y)

    gradient = grad(loss)
    n = w.numel()
    columns = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        basis = torch.zeros(m, n, dtype=w.dtype)
        basis[torch.arange(m), start + torch.arange(m)] = 1.0
        columns.append(vmap(lambda e: jvp(gradient, (w,), (e,))[1])(basis))
    h = torch.cat(columns)
    return (h + h.T) / 2


def _hvps_to_reach(op: Callable[[Tensor], Tensor], v0: Tensor, truth: float, target: float, cap: int) -> int | None:
    """The smallest Krylov size k whose Lanczos estimate max(|theta_min|, |theta_max|) is within target of truth."""
    for k in range(1, cap + 1):
        r = lanczos(op, v0, k=k, tol=0.0)
        if abs(max(abs(r.lambda_max), abs(r.lambda_min)) - truth) <= target * truth:
            return k
    return None


def _accuracy(x: Tensor, y: Tensor, seeds: Sequence[int]) -> dict[str, Any]:
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for seed in seeds:
        model = _mlp((32, 32), seed=seed).eval()
        reference = _mlp((32, 32), seed=seed).double().eval()
        ev = torch.linalg.eigvalsh(_dense_hessian(reference, x.double(), y))
        truth = float(ev.abs().max())
        row: dict[str, Any] = {"seed": seed, "lambda_max": float(ev[-1]), "lambda_min": float(ev[0]), "norm": truth}
        for method in ("lanczos", "power"):
            start = time.perf_counter()
            r = hessian_spectral_norm(model, loss_fn, (x, y), method=method, tol=TOL, max_matvecs=2000, seed=seed)
            row[method] = {
                "hvps": r.matvecs,
                "error": abs(r.value - truth) / truth,
                "converged": r.converged,
                "seconds": time.perf_counter() - start,
            }
        loose = hessian_spectral_norm(model, loss_fn, (x, y), tol=1e-2, seed=seed)
        row["lanczos_tol1e-2"] = {"hvps": loose.matvecs, "error": abs(loose.value - truth) / truth}
        with HessianOperator(model, loss_fn, (x, y)) as op:
            # the start vector hessian_spectral_norm(seed=seed) uses: float64 normals from that seed, cast
            v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
            row["lanczos"]["hvps_to_1e-4"] = _hvps_to_reach(op, v0, truth, 1e-4, cap=80)
        for name, tol, max_iter in (("pyhessian_default", 1e-3, 100), ("pyhessian_tol1e-5", 1e-5, 1000)):
            p = _pyhessian_top(model, x, y, tol=tol, max_iter=max_iter, seed=seed)
            if p["available"]:
                p["error"] = abs(abs(p["eigenvalue"]) - truth) / truth
            row[name] = p
        rows.append(row)
    return {"model": "MLP 64-32-32-10 ReLU float32", "params": _n_params(_mlp((32, 32), 0)), "seeds": rows}


# ---------------------------------------------------------------------------------------------------------------
def _report(cost: dict[str, Any], accuracy: dict[str, Any]) -> None:
    print(f"1. cost: {cost['model']} ({cost['params']} params) on {cost['device']}, digits 1797 x 64, full batch")
    print(f"   {'gradient':<40} {cost['gradient_ms']:8.2f} ms   1.00 x")
    kept = "graphs kept" if cost["batches_default_keeps_graphs"] else "graph rebuilt"
    labels = {
        "gradient_batches": f"gradient, {cost['batches']} batches",
        "double_backward_fresh": "HVP double_backward_fresh",
        "double_backward_reused": "HVP double_backward_reused",
        "forward_over_reverse": "HVP forward_over_reverse",
        "batches_default": f"HVP {cost['batches']} batches, default ({kept})",
        "batches_rebuilt": f"HVP {cost['batches']} batches, graph rebuilt",
    }
    for name, label in labels.items():
        key = name if name.startswith("gradient") else f"hvp_{name}"
        ms, ratio = cost[f"{key}_ms"], cost[f"{key}_x_gradient"]
        print(f"   {label:<40} {ms:8.2f} ms   {ratio:.2f} x")
    print(f"   spectral norm at tol {TOL:g}:")
    for name, e in cost["estimates"].items():
        if e.get("available", True):
            value = e.get("value", e.get("eigenvalue"))
            print(f"   {name:<20} value {value:.6g}  HVPs {e['hvps']:4d}  {e['seconds']:6.2f} s")
    print(f"2. accuracy: {accuracy['model']} ({accuracy['params']} params) vs eigvalsh of the dense float64 Hessian")
    print("   HVPs spent (true relative error); 'first 1e-4': first Lanczos step within 1e-4 of the truth")
    header = (
        "   seed  lambda_min  lambda_max | ours: lanczos tol 1e-4, tol 1e-2, first 1e-4; power tol 1e-4 | PyHessian"
    )
    print(header)
    for row in accuracy["seeds"]:
        lz, loose, pw = row["lanczos"], row["lanczos_tol1e-2"], row["power"]
        line = (
            f"   {row['seed']:4d}  {row['lambda_min']:10.5f}  {row['lambda_max']:10.5f} | "
            f"{lz['hvps']:3d} ({lz['error']:.1e})  {loose['hvps']:3d} ({loose['error']:.1e})  "
            f"{lz['hvps_to_1e-4']};  {pw['hvps']:4d} ({pw['error']:.1e}) |"
        )
        for name in ("pyhessian_default", "pyhessian_tol1e-5"):
            p = row[name]
            if p["available"]:
                line += f" {name[10:]} {p['hvps']:4d} ({p['error']:.1e})"
        print(line)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both parts, print a report, and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=30, help="timing rounds (medians over rounds)")
    parser.add_argument("--seeds", type=int, default=4, help="initialisations for the accuracy part")
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the cost part (default cpu; the accuracy part and its dense Hessians stay on the CPU)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    x, y = _digits()
    cost = _cost(x.to(args.device), y.to(args.device), args.repeats)
    accuracy = _accuracy(x, y, range(args.seeds))
    _report(cost, accuracy)
    return {"machine": machine_description(), "cost": cost, "accuracy": accuracy}


if __name__ == "__main__":
    main()
