"""What our LipschitzLR formulas give for the paper's sanity targets on the embedded sklearn data.

The paper (Yedida & Saha, Tables 1-2) reports ``1/L = 4280.23`` for breast cancer (logistic regression, each feature
scaled to sum to 1), ``1/L ~ 1.9`` for iris and ``1/L = 0.635`` for digits (softmax regression, unscaled). This
prints ``1/L`` under each reading of the ambiguous definitions (which norm of ``X``, whether an intercept column is
included, whether ``m`` is the whole set or a 70 % training split), and the rigorous ``1/B`` of
:func:`theorylr.lipschitz.bounds.gradient_norm_bound` beside it. Nothing here is timed.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.lipschitz_paper_targets``
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.model_selection import train_test_split

from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import logistic_regression, softmax_regression

SPLIT_SEEDS = range(200)


def _with_ones(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def _inverse(value: torch.Tensor) -> float:
    return 1.0 / float(value)


def breast_cancer_rows() -> list[tuple[str, str, str]]:
    """Logistic regression, features scaled to sum to 1 (paper: 4280.23)."""
    x, y = load_breast_cancer(return_X_y=True)
    rows = []
    for label, data in (("30 features", x), ("30 features + ones column", _with_ones(x))):
        scaled = torch.tensor(data / data.sum(axis=0))
        for kind in ("fro", "spectral"):
            rows.append((f"{label}, m = 569", kind, f"{_inverse(logistic_regression(scaled, kind=kind)):.2f}"))
        bound = gradient_norm_bound(scaled, "bce", targets=torch.tensor(y, dtype=torch.float64))
        rows.append((f"{label}, m = 569", "1/B rigorous", f"{_inverse(bound):.2f}"))
    split = []
    for seed in SPLIT_SEEDS:
        train, _ = train_test_split(_with_ones(x), train_size=0.7, random_state=seed)
        split.append(_inverse(logistic_regression(torch.tensor(train / train.sum(axis=0)))))
    rows.append(("+ ones column, 70 % split (m = 398)", "fro", _summary(split)))
    return rows


def softmax_rows(name: str, loader: object, k: int) -> list[tuple[str, str, str]]:
    """Softmax regression on raw features: the whole set and 70 % training splits."""
    x, y = loader(return_X_y=True)  # type: ignore[operator]
    m = x.shape[0]
    rows = []
    whole = torch.tensor(x)
    for kind in ("fro", "spectral"):
        rows.append((f"{name}, whole set (m = {m})", kind, f"{_inverse(softmax_regression(whole, k, kind=kind)):.4f}"))
    bound = gradient_norm_bound(whole, "softmax", num_classes=k, targets=torch.tensor(y))
    rows.append((f"{name}, whole set (m = {m})", "1/B rigorous", f"{_inverse(bound):.5f}"))
    for kind in ("fro", "spectral"):
        values = []
        for seed in SPLIT_SEEDS:
            train, _ = train_test_split(x, train_size=0.7, random_state=seed)
            values.append(_inverse(softmax_regression(torch.tensor(train), k, kind=kind)))
        rows.append((f"{name}, 70 % split (m = {train.shape[0]})", kind, _summary(values)))
    return rows


def _summary(values: list[float]) -> str:
    return f"{min(values):.4g} / {statistics.median(values):.4g} / {max(values):.4g} (min/median/max, 200 splits)"


def main() -> None:
    torch.set_num_threads(1)
    sections = [
        ("breast cancer, logistic regression, features scaled to sum to 1 -- paper 4280.23", breast_cancer_rows()),
        (
            "iris, softmax regression (k = 3), unscaled -- paper 1.902 (Table 1), 1.936 (Table 2)",
            softmax_rows("iris", load_iris, 3),
        ),
        (
            "digits, softmax regression (k = 10), unscaled -- paper 0.635 (Table 2)",
            softmax_rows("digits", load_digits, 10),
        ),
    ]
    for title, rows in sections:
        print(title)
        width = max(len(r[0]) for r in rows)
        for setting, kind, value in rows:
            label = kind if kind.startswith("1/B") else f"1/L {kind}"
            print(f"  {setting:<{width}}  {label:<14}  {value}")
        print()


if __name__ == "__main__":
    main()
