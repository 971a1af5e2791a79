r"""``suggest``: every theory's learning rate for a model, in one call, beside the LR range test.

:func:`suggest` looks at a model at its current weights on the user's data and returns a :class:`Suggestion`: one
:class:`SuggestionRow` per rule that applies to the chosen optimizer(s), each with its learning rate, the formula,
the quantities that went into it, the paper reference and a one-line caveat.

=================================  =========  ======================================================================
row                                optimizer  learning rate
=================================  =========  ======================================================================
``gd-descent``                     sgd        :math:`1/K`, :math:`K = \|\nabla^2 L(w)\|_2` at the current weights
``gd-stability``                   sgd        :math:`2/K`: the largest stable step on the local quadratic (a limit)
``lipschitz-paper``                sgd        LipschitzLR's :math:`1/L` with the paper's closed form (Yedida & Saha)
``lipschitz-rigorous``             sgd        :math:`1/B`, ``B`` a true bound on the last-layer gradient norm
``exact-adam``                     adam       :math:`\alpha = \sqrt{2 L(w_0) / (\hat K T)}` (exact-step Adam paper §4.2)
``lars-trust-ratios``              lars       :math:`\|w_l\| / (\|g_l\| + \epsilon)` per tensor (not an lr)
``lars-corollary-2.1``             lars       :math:`\eta = \sqrt{\epsilon / (3 C_2)}` (Gitman et al. Corollary 2.1)
``lars-corollary-2.1-rigorous``    lars       :math:`\eta = \epsilon / (2 C_2')` from the bound the proof supports
``range-test-<optimizer>``         any        ``lr_at_min / 10`` of an LR range test on a copy (``range_test=True``)
=================================  =========  ======================================================================

The model comes back exactly as it was (parameter and buffer values, every module's train/eval flag, the global
RNG state; ``.grad`` is never touched), and the suggestion records its own cost (Hessian-vector products, forward
passes, seconds). ``docs/suggest.md`` explains how to read the table.

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> data = (torch.randn(64, 4, dtype=torch.float64), torch.randint(0, 3, (64,)))
    >>> s = suggest(model, nn.CrossEntropyLoss(), data, total_steps=100, optimizer="all", num_samples=2)
    >>> [row.name for row in s.rows][:4]
    ['gd-descent', 'gd-stability', 'lipschitz-paper', 'lipschitz-rigorous']
    >>> s.row("gd-stability").lr == 2 * s.row("gd-descent").lr
    True
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from theorylr._validation import SEED_MAX, check_bool, check_choice, check_int, check_module, check_number
from theorylr.estimate import Sampler, SpectralNormResult, data_loss, hessian_spectral_norm, smoothness
from theorylr.estimate._state import (
    MODES,
    Batch,
    as_batches,
    batch_size,
    forward_context,
    preserved,
    seed_global,
    to_device,
)
from theorylr.lab._files import decode_non_finite, encode_non_finite
from theorylr.lab.range_test import RangeTestResult, check_range_test_options, lr_range_test
from theorylr.lipschitz.bounds import LOSSES as LIPSCHITZ_LOSSES
from theorylr.lipschitz.bounds import gradient_norm_bound
from theorylr.lipschitz.closed_form import (
    activation_norm,
    binary_cross_entropy,
    least_squares_nn,
    softmax_cross_entropy,
)
from theorylr.lipschitz.tracker import find_last_linear
from theorylr.optim.lars import LARS, lars
from theorylr.theory.adam import constant_step
from theorylr.theory.lars import corollary_2_1, corollary_2_1_rigorous, theorem2_constants

__all__ = ["LIPSCHITZ_LOSSES", "OPTIMIZERS", "Cost", "Suggestion", "SuggestionRow", "detect_loss", "suggest"]

#: The optimizers :func:`suggest` has rules for (``"all"`` selects the three).
OPTIMIZERS = ("sgd", "adam", "lars")
_RANGE_OPTIONS = ("start_lr", "end_lr", "num_steps", "smoothing", "diverge_factor")

LossFn = Callable[[Any, Any], Tensor]


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SuggestionRow:
    """One rule's learning rate and how it was obtained.

    Attributes:
        name: the rule (``"gd-descent"``, ``"exact-adam"``, ...; see the module table).
        optimizer: the optimizer the lr is meant for: ``"sgd"``, ``"adam"`` or ``"lars"``.
        lr: the learning rate, or ``None`` when the rule gives none here (``message`` says why) or its result is
            not a learning rate (``lars-trust-ratios``).
        formula: the rule as a formula.
        quantities: the numbers that went into it (``{"K": 8.1, "hvps": 24, ...}``).
        reference: the paper and section.
        caveat: what the number does not promise, in one line.
        message: a note on this particular result (why ``lr`` is ``None``, a non-converged estimate); ``""`` if none.
    """

    name: str
    optimizer: str
    lr: float | None
    formula: str
    quantities: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    caveat: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats as ``"nan"``/``"inf"``/``"-inf"``)."""
        return encode_non_finite(
            {
                "name": self.name,
                "optimizer": self.optimizer,
                "lr": self.lr,
                "formula": self.formula,
                "quantities": dict(self.quantities),
                "reference": self.reference,
                "caveat": self.caveat,
                "message": self.message,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuggestionRow:
        """The row :meth:`to_dict` described."""
        data = decode_non_finite(dict(data))
        return cls(
            name=data["name"],
            optimizer=data["optimizer"],
            lr=None if data.get("lr") is None else float(data["lr"]),
            formula=data.get("formula", ""),
            quantities=dict(data.get("quantities", {})),
            reference=data.get("reference", ""),
            caveat=data.get("caveat", ""),
            message=data.get("message", ""),
        )


@dataclass(frozen=True)
class Cost:
    """What :func:`suggest` spent.

    Attributes:
        hvps: Hessian-vector products (all spectral-norm estimates together).
        forward_passes: calls of the model's ``forward`` (range-test copies included).
        seconds: wall-clock time of the whole call.
        stages: seconds per stage (``"curvature"``, ``"smoothness"``, ``"lipschitz"``, ``"gradient"``,
            ``"range_test"``), for the stages that ran.
    """

    hvps: int = 0
    forward_passes: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "hvps": self.hvps,
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
            "stages": dict(self.stages),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        """The cost :meth:`to_dict` described."""
        return cls(
            hvps=int(data.get("hvps", 0)),
            forward_passes=int(data.get("forward_passes", 0)),
            seconds=float(data.get("seconds", 0.0)),
            stages={str(k): float(v) for k, v in dict(data.get("stages", {})).items()},
        )


def _range_from_dict(data: Mapping[str, Any]) -> RangeTestResult:
    data = decode_non_finite(dict(data))
    return RangeTestResult(
        lrs=[float(v) for v in data.get("lrs", [])],
        losses=[float(v) for v in data.get("losses", [])],
        lr_at_min=float(data.get("lr_at_min", math.nan)),
        suggestion=float(data.get("suggestion", math.nan)),
        stopped_early=bool(data.get("stopped_early", False)),
    )


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` found: the rows, the range-test curves, the settings and the cost.

    Attributes:
        rows: one :class:`SuggestionRow` per rule, grouped by optimizer.
        cost: a :class:`Cost`.
        settings: the call's settings and what was detected (model, parameter count, examples, batches, loss,
            total steps, optimizers, seed, ...).
        range_tests: the range test's :class:`~theorylr.lab.range_test.RangeTestResult` per optimizer (empty
            without ``range_test=True``); the curves :meth:`plot` draws.

    Example:
        >>> row = SuggestionRow("gd-descent", "sgd", 0.5, "1/K", {"K": 2.0})
        >>> s = Suggestion(rows=(row,))
        >>> Suggestion.from_json(s.to_json()) == s
        True
        >>> s.lrs()
        {'gd-descent': 0.5}
    """

    rows: tuple[SuggestionRow, ...] = ()
    cost: Cost = field(default_factory=Cost)
    settings: dict[str, Any] = field(default_factory=dict)
    range_tests: dict[str, RangeTestResult] = field(default_factory=dict)

    def row(self, name: str) -> SuggestionRow:
        """The row called ``name`` (``KeyError`` listing the names otherwise)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; the rows are {', '.join(r.name for r in self.rows)}")

    def lrs(self) -> dict[str, float]:
        """``{row name: lr}`` for the rows that give a learning rate."""
        return {row.name: row.lr for row in self.rows if row.lr is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats as ``"nan"``/``"inf"``/``"-inf"``, so the JSON is strict)."""
        return {
            "rows": [row.to_dict() for row in self.rows],
            "cost": self.cost.to_dict(),
            "settings": encode_non_finite(dict(self.settings)),
            "range_tests": {name: encode_non_finite(result.to_dict()) for name, result in self.range_tests.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suggestion:
        """The suggestion :meth:`to_dict` described."""
        return cls(
            rows=tuple(SuggestionRow.from_dict(row) for row in data.get("rows", [])),
            cost=Cost.from_dict(data.get("cost", {})),
            settings=decode_non_finite(dict(data.get("settings", {}))),
            range_tests={str(k): _range_from_dict(v) for k, v in dict(data.get("range_tests", {})).items()},
        )

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON (no ``NaN``/``Infinity`` tokens)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Suggestion:
        """The suggestion :meth:`to_json` wrote."""
        return cls.from_dict(json.loads(text))

    def table(self) -> str:
        """A readable table: one line per row, then each row's quantities, caveat and reference, then the cost."""
        return _format_table(self)

    def plot(self, path: str | Path) -> Path:
        """Draw the range-test loss curve(s) with each suggested lr as a vertical line; write ``path`` (PNG).

        Without a range test the figure has the vertical lines only. matplotlib is imported here.

        Returns:
            ``path`` as a :class:`~pathlib.Path`.
        """
        return _plot(self, Path(path))


# ----------------------------------------------------------------------------------------------------------------
# Model state and data
# ----------------------------------------------------------------------------------------------------------------
class _ForwardCounter:
    """A forward hook that counts calls (deep copies of the model share it, so range-test passes count too)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.calls += 1

    def __deepcopy__(self, memo: dict[int, Any]) -> _ForwardCounter:
        return self  # the range test's deep copy keeps counting into this counter


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[_ForwardCounter]:
    """Count forward passes, and restore on exit (errors included) values, train/eval flags and the global RNG."""
    counter = _ForwardCounter()
    handle = model.register_forward_hook(counter)
    try:
        with preserved(model):
            yield counter
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------------------------
# The loss: which closed form, and how the criterion scales relative to the paper's convention
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LossInfo:
    kind: str | None  # "softmax", "bce", "least_squares" or None
    source: str  # what the criterion was recognised as
    scale: str = "paper"  # least squares: "paper" (1/2m sum), "mse" (mean, no 1/2), "half_mean" (1/2 mean)
    reason: str = ""  # why kind is None
    ignore_index: int | None = None  # cross-entropy: the target value the criterion leaves out of its mean


def _mean_reduced(loss_fn: Any) -> bool:
    return getattr(loss_fn, "reduction", "mean") == "mean"


def _inspect_loss(loss_fn: Any) -> _LossInfo:
    name = type(loss_fn).__name__
    spec_kind = getattr(loss_fn, "lipschitz", None)  # theorylr.lab.losses.LossSpec
    if hasattr(loss_fn, "lipschitz") and hasattr(loss_fn, "target_kind"):
        source = f"LossSpec {getattr(loss_fn, 'name', '?')!r}"
        if spec_kind in LIPSCHITZ_LOSSES:
            return _LossInfo(spec_kind, source, "half_mean" if spec_kind == "least_squares" else "paper")
        return _LossInfo(None, source, reason="LipschitzLR has no closed form for it")
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        if not _mean_reduced(loss_fn) or loss_fn.weight is not None or loss_fn.label_smoothing:
            return _LossInfo(None, name, reason="class weights, label smoothing or a non-mean reduction")
        return _LossInfo("softmax", "nn.CrossEntropyLoss", ignore_index=loss_fn.ignore_index)
    if isinstance(loss_fn, nn.BCEWithLogitsLoss):
        if not _mean_reduced(loss_fn) or loss_fn.weight is not None or loss_fn.pos_weight is not None:
            return _LossInfo(None, name, reason="weights or a non-mean reduction")
        return _LossInfo("bce", "nn.BCEWithLogitsLoss")
    if isinstance(loss_fn, nn.MSELoss):
        if not _mean_reduced(loss_fn):
            return _LossInfo(None, name, reason="a non-mean reduction")
        return _LossInfo("least_squares", "nn.MSELoss", "mse")
    functions = {F.cross_entropy: "softmax", F.binary_cross_entropy_with_logits: "bce", F.mse_loss: "least_squares"}
    for fn, kind in functions.items():
        if loss_fn is fn:
            ignore = -100 if kind == "softmax" else None  # F.cross_entropy's default ignore_index
            return _LossInfo(
                kind, f"F.{fn.__name__}", "mse" if kind == "least_squares" else "paper", ignore_index=ignore
            )
    return _LossInfo(None, getattr(loss_fn, "__name__", name), reason="not a criterion theorylr recognises")


def detect_loss(loss_fn: Any) -> str | None:
    """The LipschitzLR closed form that fits ``loss_fn``: ``"softmax"``, ``"bce"``, ``"least_squares"`` or ``None``.

    Recognised: ``nn.CrossEntropyLoss`` and ``F.cross_entropy`` (softmax), ``nn.BCEWithLogitsLoss`` and
    ``F.binary_cross_entropy_with_logits`` (bce), ``nn.MSELoss`` and ``F.mse_loss`` (least squares), each with the
    mean reduction and without class weights or label smoothing, and the lab's loss specs
    (:mod:`theorylr.lab.losses`). Anything else gives ``None``: pass ``loss=`` to :func:`suggest`.

    Example:
        >>> detect_loss(nn.CrossEntropyLoss()), detect_loss(nn.MSELoss(reduction="sum")), detect_loss(abs)
        ('softmax', None, None)
    """
    return _inspect_loss(loss_fn).kind


# ----------------------------------------------------------------------------------------------------------------
# The rules
# ----------------------------------------------------------------------------------------------------------------
_REF_GD = (
    "descent lemma for a K-smooth loss (Nesterov 2004, Lemma 1.2.3); K as in the exact-step Adam paper's Algorithm 2"
    " step 5"
)
_REF_LIPSCHITZ = {
    "softmax": "Yedida & Saha (LipschitzLR) §5.2 eq. 23",
    "bce": "Yedida & Saha (LipschitzLR) §5.1 eq. 18",
    "least_squares": "Yedida & Saha (LipschitzLR) §4.2 eq. 9 with K_a = K K_z (eq. 12)",
}
_FORMULA_PAPER = {
    "softmax": "1/L, L = s (k-1) K_z / (k m)",
    "bce": "1/L, L = s K_z / (2m)",
    "least_squares": "1/L, L = s (K K_z - ||y||) K_z / m",
}


def _spectral_quantities(result: SpectralNormResult) -> dict[str, Any]:
    return {
        "K": result.value,
        "lambda_max": result.lambda_max,
        "lambda_min": result.lambda_min,
        "hvps": result.matvecs,
        "residual": result.residual,
        "converged": result.converged,
        "L(w)": result.loss,
    }


def _gd_rows(result: SpectralNormResult) -> list[SuggestionRow]:
    k = result.value
    quantities = _spectral_quantities(result)
    usable = math.isfinite(k) and k > 0
    message = "" if usable else f"K = {k!r}: no finite positive curvature, so no step size"
    if usable and not result.converged:
        message = (
            "Lanczos stopped before converging, at max_matvecs or (16-bit model) at the residual its dtype resolves: "
            "K may be underestimated (raise max_matvecs; for a 16-bit model, a tol above its eps)"
        )
    return [
        SuggestionRow(
            "gd-descent",
            "sgd",
            1.0 / k if usable else None,
            "1/K, K = ||H(w)||_2",
            quantities,
            _REF_GD,
            "local: K is the curvature at the current weights only; it usually grows early in training",
            message,
        ),
        SuggestionRow(
            "gd-stability",
            "sgd",
            2.0 / k if usable else None,
            "2/K (stability limit of full-batch GD)",
            quantities,
            _REF_GD,
            "a limit, not a recommendation; mini-batch noise and curvature growth make it unsafe to train at",
            message,
        ),
    ]


def _capture_last_layer(
    model: nn.Module, last: nn.Linear, batches: list[Batch], device: torch.device, mode: str, seed: int
) -> tuple[list[Tensor], str]:
    """The last ``nn.Linear``'s input per batch, and a reason (non-empty) when it does not produce the output. Batch
    ``b`` draws its dropout masks from ``seed + b``, as the curvature estimates do."""
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []

    def keep_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs.get("input")  # head(h) or head(input=h), as the tracker reads it
        if isinstance(x, Tensor):
            inputs.append(x.detach())

    def keep_output(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if isinstance(out, Tensor):
            outputs.append(out.detach())

    pre = last.register_forward_pre_hook(keep_input, with_kwargs=True)
    post = last.register_forward_hook(keep_output)
    captured: list[Tensor] = []
    try:
        with torch.no_grad():
            for b, (x, _) in enumerate(batches):
                inputs.clear()
                outputs.clear()
                with forward_context(model, mode, seed + b):
                    out = model(to_device(x, device))
                if not inputs or not outputs or not isinstance(out, Tensor):
                    return [], "the model's output does not come from its last nn.Linear"
                last_out = outputs[-1]
                if last_out.numel() != out.numel() or not torch.equal(last_out.reshape(out.shape), out):
                    return [], (
                        "the model's output is not the output of its last nn.Linear (something follows it): the "
                        "closed forms need the logits of a linear last layer"
                    )
                a = inputs[-1]
                a = a.reshape(-1, a.shape[-1])
                captured.append(a.float() if a.dtype in (torch.float16, torch.bfloat16) else a)
    finally:
        pre.remove()
        post.remove()
    return captured, ""


def _least_squares_scale(info: _LossInfo, y: Tensor, m: int) -> float:
    outputs = max(1, y.numel() // max(m, 1))
    return {"paper": 1.0, "mse": 2.0 / outputs, "half_mean": 1.0 / outputs}[info.scale]


_LIPSCHITZ_REF_RIGOROUS = "Yedida & Saha §3.1 (L = sup ||grad_W E||) made a true bound: theorylr.lipschitz.bounds"
_LIPSCHITZ_CAVEAT_PAPER = "the paper's L is not an upper bound on the gradient norm (see the rigorous row)"
_LIPSCHITZ_CAVEAT_RIGOROUS = "bounds the last layer's gradient only; conservative (up to ~2 sqrt(m) below the paper's)"
_FORMULA_RIGOROUS = "1/B, B = s * gradient_norm_bound(A, y)"


def _lipschitz_pair(
    kind: str | None,
    paper: tuple[float | None, dict[str, Any], str],
    rigorous: tuple[float | None, dict[str, Any], str],
) -> list[SuggestionRow]:
    """The two LipschitzLR rows from ``(constant or None, quantities, message)`` each."""
    rows = []
    for name, (value, quantities, message) in (("lipschitz-paper", paper), ("lipschitz-rigorous", rigorous)):
        symbol = "L" if name == "lipschitz-paper" else "B"
        if value is not None and not value > 0:
            message = message or f"{symbol} = {value!r} (zero activations?): no step size"
        lr = 1.0 / value if value is not None and value > 0 else None
        paper_row = name == "lipschitz-paper"
        formula = (_FORMULA_PAPER.get(kind or "", "1/L (the paper's closed form)")) if paper_row else _FORMULA_RIGOROUS
        reference = (
            _REF_LIPSCHITZ.get(kind or "", "Yedida & Saha (LipschitzLR)") if paper_row else _LIPSCHITZ_REF_RIGOROUS
        )
        caveat = _LIPSCHITZ_CAVEAT_PAPER if paper_row else _LIPSCHITZ_CAVEAT_RIGOROUS
        rows.append(SuggestionRow(name, "sgd", lr, formula, quantities, reference, caveat, message))
    return rows


def _lipschitz_failure(kind: str | None, reason: str) -> list[SuggestionRow]:
    return _lipschitz_pair(kind, (None, {}, reason), (None, {}, reason))


def _last_layer_norm(last: nn.Linear) -> float:
    """``||[W, b]||_F`` of the last layer: the weight bound of the rigorous least-squares constant."""
    tensors = [last.weight] + ([last.bias] if last.bias is not None else [])
    return math.sqrt(sum(float(t.detach().double().square().sum()) for t in tensors))


def _batch_constants(
    a: Tensor, y: Any, info: _LossInfo, last: nn.Linear, weight_bound: float
) -> tuple[float | None, str, float, dict[str, Any]]:
    """One batch: the paper's ``L`` (or ``None`` and why), the rigorous ``B`` and the batch's ``K_z``, ``m``, ``s``.

    The paper's least-squares ``L`` uses ``weight_bound`` (the largest parameter norm, §7.4). The rigorous ``B``
    bounds the joint gradient of ``[W, b]`` (``W`` alone for a layer without bias), as ``LipschitzLR(rigorous=True)``
    does: for softmax and BCE at every weight, for least squares over the ball ``||[W, b]||_F <= ||[W0, b0]||_F``
    (a bias shifts the residual, so it must be inside the bound).

    Raises:
        ValueError: when the rigorous bound cannot use the targets.
    """
    kind = info.kind
    assert kind is not None
    k = last.out_features
    m = a.shape[0]
    k_z = float(activation_norm(a, "fro"))
    scale = _least_squares_scale(info, y, m) if kind == "least_squares" else 1.0
    stats: dict[str, Any] = {"K_z": k_z, "m": m, "s": scale}
    paper: float | None = None
    error = ""
    try:
        if kind == "softmax":
            paper = softmax_cross_entropy(k_z, m, k) * scale
        elif kind == "bce":
            paper = binary_cross_entropy(k_z, m) * scale
        else:
            y_norm = float(torch.linalg.vector_norm(y.detach().double()))
            stats["||y||"] = y_norm
            paper = least_squares_nn(weight_bound * k_z, y_norm, k_z, m) * scale
    except ValueError as exc:
        error = str(exc)
    least_squares = kind == "least_squares"
    bound = gradient_norm_bound(
        a,
        kind,
        num_classes=k if kind == "softmax" else None,
        targets=y,
        weight_bound=_last_layer_norm(last) if least_squares else None,
        bias=last.bias is not None,  # as LipschitzLR(rigorous=True): a step moves [W, b], the bias included
    )
    return paper, error, float(bound) * scale, stats


def _lipschitz_rows(
    model: nn.Module, batches: list[Batch], device: torch.device, info: _LossInfo, mode: str, seed: int
) -> list[SuggestionRow]:
    kind = info.kind
    if info.ignore_index is not None and any(
        isinstance(y, Tensor) and not y.is_floating_point() and bool((y == info.ignore_index).any()) for _, y in batches
    ):
        return _lipschitz_failure(
            kind,
            f"targets hold the criterion's ignore_index ({info.ignore_index}, padding): it averages over the kept "
            "examples only, where the closed forms take m = the batch size (the rigorous bound would not hold); "
            "leave the padded examples out of data",
        )
    if kind is None:
        reason = (
            f"cannot tell the loss from {info.source} ({info.reason}): pass loss='softmax', 'bce' or 'least_squares'"
        )
        return _lipschitz_failure(kind, reason)
    try:
        name, last = find_last_linear(model)
    except ValueError:
        reason = (
            f"LipschitzLR needs a model whose output is the output of an nn.Linear; {type(model).__name__} has no "
            "nn.Linear (the closed forms bound the last linear layer's gradient)"
        )
        return _lipschitz_failure(kind, reason)
    activations, reason = _capture_last_layer(model, last, batches, device, mode, seed)
    if reason:
        return _lipschitz_failure(kind, f"{reason} (last nn.Linear: {name!r})")
    k = last.out_features
    if kind == "softmax" and k < 2:
        return _lipschitz_failure(kind, f"softmax needs k >= 2 outputs; the last nn.Linear {name!r} has {k}")
    weight_bound = max(float(torch.linalg.vector_norm(p.detach())) for p in model.parameters())
    common: dict[str, Any] = {"loss": kind, "criterion": info.source, "last_linear": name, "batches": len(batches)}
    if kind == "softmax":
        common["k"] = k
    elif kind == "least_squares":
        common.update({"K": weight_bound, "K_last": _last_layer_norm(last), "bias": last.bias is not None})
    paper: tuple[float | None, dict[str, Any], str] = (-math.inf, common, "")
    rigorous: tuple[float | None, dict[str, Any], str] = (-math.inf, common, "")
    for a, (_, y) in zip(activations, batches):
        try:
            value, error, bound, stats = _batch_constants(a, to_device(y, a.device), info, last, weight_bound)
        except (ValueError, RuntimeError, IndexError) as exc:  # targets the closed forms cannot read
            return _lipschitz_failure(kind, f"the rigorous bound cannot use these targets: {exc}")
        if error or value is None:
            paper = (None, common, error)
        elif paper[0] is not None and value > paper[0]:
            paper = (value, {**common, "L": value, **stats}, "")
        if bound > (rigorous[0] or -math.inf):  # B bounds the bias's gradient too, where there is one
            rigorous = (bound, {**common, "B": bound, "bias": last.bias is not None, **stats}, "")
    return _lipschitz_pair(kind, paper, rigorous)


def _adam_row(
    model: nn.Module,
    loss_fn: LossFn,
    batches: list[Batch],
    total_steps: int,
    *,
    num_samples: int,
    seed: int,
    mode: str,
    sampler: Sampler | None,
    options: dict[str, Any],
) -> tuple[SuggestionRow, int]:
    initial_loss = data_loss(model, loss_fn, batches, mode=mode)
    estimate = smoothness(
        model, loss_fn, batches, num_samples=num_samples, seed=seed, sampler=sampler, mode=mode, **options
    )
    quantities: dict[str, Any] = {
        "L(w0)": initial_loss,
        "K_hat": estimate.k_hat,
        "T": total_steps,
        "N": num_samples,
        "argmax": estimate.argmax,
        "samples": [s.value for s in estimate.samples],
        "hvps": estimate.matvecs,
        "converged": estimate.converged,
    }
    message = "" if estimate.converged else "some Lanczos runs stopped before converging: K_hat may be low"
    try:
        alpha: float | None = constant_step(initial_loss, estimate.k_hat, total_steps)
    except ValueError as exc:
        alpha, message = None, str(exc)
    row = SuggestionRow(
        "exact-adam",
        "adam",
        alpha,
        "sqrt(2 L(w0) / (K_hat T)), K_hat = max_j ||H(w_j)||_2",
        quantities,
        "exact-step Adam paper §4.2 (simplified step), Algorithm 2 (K_hat), Theorems 1-2",
        "assumes L(w*) = 0 and drops delta^2 = gamma^2/rho^2 (§4.2); keep lr constant for the T steps",
        message,
    )
    return row, estimate.matvecs


def _full_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batches: list[Batch],
    params: Sequence[Tensor],
    device: torch.device,
    mode: str,
    seed: int,
) -> list[Tensor]:
    """The gradient of the batch-size-weighted mean loss, by ``torch.autograd.grad`` (``.grad`` is not touched);
    batch ``b`` draws its dropout masks from ``seed + b``."""
    sizes = [batch_size(x, y) for x, y in batches]
    total = sum(sizes)
    grads = [torch.zeros_like(p) for p in params]
    for b, ((x, y), n) in enumerate(zip(batches, sizes)):
        with torch.enable_grad(), forward_context(model, mode, seed + b):
            loss = loss_fn(model(to_device(x, device)), to_device(y, device)) * (n / total)
            parts = torch.autograd.grad(loss, params, allow_unused=True)
        for g, part in zip(grads, parts):
            if part is not None:
                g.add_(part)
    return grads


def _trust_ratio_row(
    model: nn.Module, loss_fn: LossFn, batches: list[Batch], device: torch.device, mode: str, seed: int
) -> tuple[SuggestionRow, float, float]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    grads = _full_gradient(model, loss_fn, batches, params, device, mode, seed)
    # The ratio LARS's first step would use (defaults: l2 norm, eps 1e-8, min_norm 0.01), from its own functional
    # core run on copies with lr = 0.
    ratios = [p.new_zeros(()) for p in params]
    copies = [p.detach().clone() for p in params]
    buffers: list[Tensor | None] = [None] * len(params)
    lars(copies, grads, buffers, ratios, lr=0.0, foreach=False)
    w_norm = math.sqrt(sum(float(p.detach().double().square().sum()) for p in params))
    g_norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
    per_layer = {f"ratio/{n}": float(r) for (n, _), r in zip(named, ratios)}
    values = list(per_layer.values())
    quantities: dict[str, Any] = {
        "||w||": w_norm,
        "||g||": g_norm,
        "global_ratio": w_norm / g_norm if g_norm > 0 else math.inf,
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        **per_layer,
    }
    row = SuggestionRow(
        "lars-trust-ratios",
        "lars",
        None,
        "||w_l|| / (||g_l|| + eps) per tensor l",
        quantities,
        "Gitman et al. eq. (1) and §6.1 (eps, SGD fallback near the origin)",
        "at the current weights only; a ratio multiplies the global lr, so it is not an lr itself",
        "per-tensor trust ratios (not an lr): the step of tensor l is lr * ratio_l * ||g_l|| = lr * ||w_l||",
    )
    return row, w_norm, g_norm


@dataclass(frozen=True)
class _LarsBounds:
    w_star_norm: float
    m1: float
    m2: float
    assumed: tuple[str, ...]


def _lars_bounds(
    w_norm: float, w_star_norm: float | None, distance_bound: float | None, min_weight_norm: float | None
) -> _LarsBounds:
    assumed: list[str] = []
    if w_star_norm is None:
        w_star_norm, assumed = w_norm, [*assumed, "||w*|| = ||w0||"]
    if distance_bound is None:
        distance_bound, assumed = w_norm + w_star_norm, [*assumed, "M1 = ||w0|| + ||w*||"]
    if min_weight_norm is None:
        min_weight_norm, assumed = w_norm / 2, [*assumed, "M2 = ||w0|| / 2"]
    return _LarsBounds(w_star_norm, distance_bound, min_weight_norm, tuple(assumed))


def _corollary_rows(
    target_accuracy: float | None, curvature: SpectralNormResult, bounds: _LarsBounds
) -> list[SuggestionRow]:
    formula_paper = "sqrt(eps / (3 C2)), C2 = L (||w*|| + M1)^2 / 2"
    formula_rigorous = "eps / (2 C2'), C2' = L M1 (||w*|| + M1)^2 / (2 M2)"
    reference = "Gitman et al. Theorem 2, Corollary 2.1 (§4.2); theorylr.theory.lars"
    if target_accuracy is None:
        reason = "name target_accuracy (eps: the target gap min_k f(w_k) - f(w*), in loss units) for this lr"
        return [
            SuggestionRow("lars-corollary-2.1", "lars", None, formula_paper, {}, reference, "", reason),
            SuggestionRow("lars-corollary-2.1-rigorous", "lars", None, formula_rigorous, {}, reference, "", reason),
        ]
    lipschitz = curvature.value
    inputs: dict[str, Any] = {
        "eps": target_accuracy,
        "L": lipschitz,
        "||w*||": bounds.w_star_norm,
        "M1": bounds.m1,
        "M2": bounds.m2,
        "assumed": ", ".join(bounds.assumed) or "none",
    }
    assumption = "; stand-ins: " + ", ".join(bounds.assumed) if bounds.assumed else ""
    hint = " (pass w_star_norm, distance_bound and min_weight_norm)"
    rows = []
    try:  # each form on its own: one overflowing leaves the other's lr
        c1, c2 = theorem2_constants(lipschitz, bounds.m1, bounds.m2, bounds.w_star_norm)
        lr, steps = corollary_2_1(target_accuracy, c1, c2)
    except ValueError as exc:
        rows.append(
            SuggestionRow("lars-corollary-2.1", "lars", None, formula_paper, inputs, reference, "", f"{exc}{hint}")
        )
    else:
        rows.append(
            SuggestionRow(
                "lars-corollary-2.1",
                "lars",
                lr,
                formula_paper,
                {**inputs, "C1": c1, "C2": c2, "steps": steps},
                reference,
                "the paper's form: Theorem 2 as stated is not a bound (its C1 drops ||w0 - w*||^2), so neither is this "
                "step count (convex f assumed)" + assumption,
                "lr >= 1: outside eq. (1)'s useful range" if lr >= 1 else "",
            )
        )
    try:
        c1r = lipschitz * bounds.m1 * bounds.m1**2 / (2 * bounds.m2)  # ||w0 - w*|| <= M1
        c2r = lipschitz * bounds.m1 * (bounds.w_star_norm + bounds.m1) ** 2 / (2 * bounds.m2)
        lr_r, steps_r = corollary_2_1_rigorous(target_accuracy, c1r, c2r)
    except ValueError as exc:
        rows.append(
            SuggestionRow(
                "lars-corollary-2.1-rigorous", "lars", None, formula_rigorous, inputs, reference, "", f"{exc}{hint}"
            )
        )
    else:
        rows.append(
            SuggestionRow(
                "lars-corollary-2.1-rigorous",
                "lars",
                lr_r,
                formula_rigorous,
                {**inputs, "C1'": c1r, "C2'": c2r, "steps": steps_r},
                reference + " (fixed_lr_bound: the bound the proof's steps give)",
                "the rigorous form (O(1/eps^2) steps); convex f assumed, L local" + assumption,
                "lr >= 1: outside eq. (1)'s useful range" if lr_r >= 1 else "",
            )
        )
    return rows


def _optimizer_factory(name: str) -> Callable[[Any, float], torch.optim.Optimizer]:
    if name == "sgd":
        return lambda params, lr: torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return lambda params, lr: torch.optim.Adam(params, lr=lr)
    return lambda params, lr: LARS(params, lr=lr)


def _range_row(name: str, result: RangeTestResult, options: Mapping[str, Any]) -> SuggestionRow:
    finite = math.isfinite(result.suggestion) and result.suggestion > 0
    return SuggestionRow(
        f"range-test-{name}",
        name,
        result.suggestion if finite else None,
        "lr_at_min / 10",
        {
            "lr_at_min": result.lr_at_min,
            "steps": len(result.lrs),
            "stopped_early": result.stopped_early,
            **{k: v for k, v in options.items()},
        },
        "Smith 2017 (Cyclical learning rates) §3.3; torch-lr-finder, fastai",
        "a rule of thumb, sensitive to the sweep's range, length and smoothing; measured on a copy in train mode",
        (
            "the range test found no usable lr"
            if not finite
            else "the loss was still falling at the sweep's last lr: the minimum may lie beyond end_lr, so this is "
            "a floor (raise end_lr)"
            if result.min_at_end
            else ""
        ),
    )


# ----------------------------------------------------------------------------------------------------------------
# suggest
# ----------------------------------------------------------------------------------------------------------------
def _estimate_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``estimate_options`` checked against what the spectral-norm estimates take (``seed`` and ``mode`` are
    :func:`suggest`'s own arguments)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"estimate_options must be a mapping or None (got {type(options).__name__})")
    import inspect

    from theorylr.estimate import hessian_spectral_norm

    own = {"seed", "mode"}
    allowed = sorted(set(inspect.signature(hessian_spectral_norm).parameters) - {"model", "loss_fn", "data"} - own)
    for key in options:
        if key in own:
            raise ValueError(f"estimate_options: {key!r} is suggest()'s own argument: pass {key}= to suggest()")
        if key not in allowed:
            raise ValueError(f"estimate_options: unknown key {key!r} (allowed: {', '.join(allowed)})")
    return dict(options)


def _optimizers(optimizer: str | Sequence[str]) -> tuple[str, ...]:
    if not isinstance(optimizer, (str, Sequence)):
        raise ValueError(
            f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, 'all', or a list of them (got {optimizer!r})"
        )
    names = [optimizer] if isinstance(optimizer, str) else list(optimizer)
    if names == ["all"]:
        return OPTIMIZERS
    if not names:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} or 'all' (got none)")
    for name in names:
        check_choice("optimizer", name, (*OPTIMIZERS, "all"))
    return tuple(o for o in OPTIMIZERS if o in names or "all" in names)


def _check_arguments(
    model: Any,
    total_steps: int,
    loss: str | None,
    target_accuracy: float | None,
    bounds: Mapping[str, float | None],
    num_samples: int,
    range_test: bool,
    range_test_options: Mapping[str, Any],
    mode: str,
    seed: int,
) -> None:
    check_module("model", model)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must have at least one parameter that requires grad")
    check_int("total_steps", total_steps, min_value=1)
    if loss is not None:
        check_choice("loss", loss, LIPSCHITZ_LOSSES)
    if target_accuracy is not None:
        check_number("target_accuracy", target_accuracy, min_value=0.0, min_inclusive=False)
    for name, value in bounds.items():
        if value is not None:
            check_number(name, value, min_value=0.0, min_inclusive=name == "w_star_norm")
    check_int("num_samples", num_samples, min_value=1)
    check_bool("range_test", range_test)
    for key in range_test_options:
        check_choice("range_test_options key", key, _RANGE_OPTIONS)
    check_range_test_options(**range_test_options)
    check_choice("mode", mode, MODES)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)


def suggest(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    total_steps: int,
    optimizer: str | Sequence[str] = "sgd",
    loss: str | None = None,
    target_accuracy: float | None = None,
    w_star_norm: float | None = None,
    distance_bound: float | None = None,
    min_weight_norm: float | None = None,
    num_samples: int = 10,
    sampler: Sampler | None = None,
    range_test: bool = False,
    range_test_options: Mapping[str, Any] | None = None,
    mode: str = "eval",
    seed: int = 0,
    estimate_options: Mapping[str, Any] | None = None,
) -> Suggestion:
    r"""Every theory's learning rate for ``model`` on ``data``, at its current weights, in one call.

    Rows by optimizer (see the module table and ``docs/suggest.md``):

    * ``"sgd"``: ``gd-descent`` :math:`1/K` and ``gd-stability`` :math:`2/K` with
      :math:`K = \|\nabla^2 L(w)\|_2` (:func:`~theorylr.estimate.hessian_spectral_norm`); LipschitzLR's
      ``lipschitz-paper`` :math:`1/L` (:mod:`~theorylr.lipschitz.closed_form`) and ``lipschitz-rigorous``
      :math:`1/B` (:func:`~theorylr.lipschitz.bounds.gradient_norm_bound`), from the input of the last
      ``nn.Linear``, ``L`` and ``B`` the largest over the batches;
    * ``"adam"``: ``exact-adam`` :math:`\alpha = \sqrt{2 L(w_0)/(\hat K T)}`
      (:func:`~theorylr.theory.adam.constant_step` of :func:`~theorylr.estimate.data_loss` and
      :func:`~theorylr.estimate.smoothness`; equal to :func:`~theorylr.optim.exact_adam.exact_step_adam`'s
      ``alpha`` for the same ``num_samples``, ``seed`` and ``mode``);
    * ``"lars"``: ``lars-trust-ratios`` (LARS's per-tensor ratio at the current weights, from
      :func:`~theorylr.optim.lars.lars` itself) and, with ``target_accuracy`` named, Corollary 2.1's
      :math:`\eta = \sqrt{\epsilon/(3 C_2)}` (``lars-corollary-2.1``, the paper's) and the rigorous
      :math:`\eta = \epsilon/(2 C_2')` (``lars-corollary-2.1-rigorous``), with ``L = K``;
    * ``range_test=True`` adds ``range-test-<optimizer>``: :func:`~theorylr.lab.range_test.lr_range_test` with
      SGD, Adam or :class:`~theorylr.optim.lars.LARS` on a deep copy, its curve kept for :meth:`Suggestion.plot`.

    A rule that cannot apply gives a row with ``lr=None`` and a message instead of an error (no ``nn.Linear``
    last layer, an unrecognised loss, a non-positive paper constant, no ``target_accuracy``).

    The model comes back exactly as it was: parameter and buffer values, every module's train/eval flag and the
    global RNG state (CPU and the model's CUDA devices) are restored, also on error; ``.grad`` is never touched
    (gradients come from ``torch.autograd.grad``).

    Args:
        model: the network at the weights to examine (typically its initialisation).
        loss_fn: a mean-reduced criterion ``loss_fn(outputs, targets)``.
        data: an ``(inputs, targets)`` pair or an iterable of such pairs (read once; every estimate uses the same
            batches, weighted by size). ``m`` in LipschitzLR's formulas is each batch's size.
        total_steps: ``T``, the optimizer steps you plan (epochs times batches per epoch), for ``exact-adam``.
        optimizer: ``"sgd"`` (default), ``"adam"``, ``"lars"``, ``"all"`` or a sequence of them.
        loss: LipschitzLR's closed form, ``"softmax"``, ``"bce"`` or ``"least_squares"``; ``None`` (default)
            detects it from ``loss_fn`` (:func:`detect_loss`). For least squares the constants are scaled by
            ``s = 2/p`` for ``nn.MSELoss`` (``p`` outputs per example) and ``1/p`` for the lab's
            ``0.5 * mean``, so that ``1/L`` refers to ``loss_fn`` itself; an unrecognised callable with
            ``loss="least_squares"`` is taken to be the paper's :math:`\frac{1}{2m}\sum_i\|f(x_i) - y_i\|^2`.
        target_accuracy: :math:`\epsilon` of Corollary 2.1, the target gap :math:`\min_k f(w_k) - f(w^*)` in loss
            units (not a classification accuracy); ``None`` (default) leaves the corollary rows without an lr.
        w_star_norm, distance_bound, min_weight_norm: :math:`\|w^*\|`, Theorem 1's :math:`M_1 \ge
            \|w_k - w^*\|` and Theorem 2's :math:`M_2 \le \min_k \|w_k\|` for the corollary rows; unknown for a
            real model, so the defaults are stand-ins recorded in the rows: :math:`\|w_0\|`,
            :math:`\|w_0\| + \|w^*\|` (the paper's eq. (5) with :math:`M_0 = \|w_0\|`) and :math:`\|w_0\|/2`.
        num_samples: ``N`` of Algorithm 2 for ``K_hat`` (default 10).
        sampler: re-draws the weights for ``K_hat`` (default: each module's ``reset_parameters()``; see
            :func:`~theorylr.estimate.smoothness`).
        range_test: also run the LR range test (default ``False``).
        range_test_options: ``start_lr``, ``end_lr``, ``num_steps``, ``smoothing``, ``diverge_factor`` for it.
        mode: ``"eval"`` (default), ``"train"`` or ``"current"``: the modules' mode for every estimate.
        seed: seeds the Lanczos start vectors and the ``K_hat`` samples (default 0).
        estimate_options: ``method``, ``tol``, ``max_matvecs``, ``backend``, ... for the spectral-norm estimates.

    Returns:
        A :class:`Suggestion`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Linear(3, 2).double()
        >>> data = (torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 2, (32,)))
        >>> s = suggest(model, nn.CrossEntropyLoss(), data, total_steps=50)
        >>> row = s.row("lipschitz-paper")  # softmax regression: L = (k-1) ||X||_F / (k m), eq. 23
        >>> abs(row.lr - 2 * 32 / data[0].norm().item()) < 1e-9
        True

    Reference:
        the exact-step Adam paper §4.2 and Algorithm 2, Yedida & Saha §3-§5, Gitman et al. eq. (1), Theorem 2 and
        Corollary 2.1; the classical :math:`1/K` (descent lemma) and :math:`2/K` (stability) bounds.

    .. note::
        Departures from the papers: the LipschitzLR rows use ``K_z = ||A||_F`` of the batch (the reading that
        reproduces the paper's figures) and the largest batch constant, as :class:`~theorylr.lipschitz.scheduler.
        LipschitzLR` does per epoch; Corollary 2.1 is stated for one weight vector and a convex loss, and its
        ``L``, ``||w*||``, ``M1``, ``M2`` are here the local curvature and stand-ins; LARS applies its lr per
        tensor. The ``gd-*`` rows use the local ``K``, not a global smoothness constant.
    """
    if range_test_options is not None and not isinstance(range_test_options, Mapping):
        raise ValueError(f"range_test_options must be a mapping of option to value (got {range_test_options!r})")
    if sampler is not None and not callable(sampler):
        raise ValueError(f"sampler must be None or a callable (model, generator) -> None (got {sampler!r})")
    range_options = dict(range_test_options or {})
    bounds_args = {"w_star_norm": w_star_norm, "distance_bound": distance_bound, "min_weight_norm": min_weight_norm}
    _check_arguments(
        model, total_steps, loss, target_accuracy, bounds_args, num_samples, range_test, range_options, mode, seed
    )
    optimizers = _optimizers(optimizer)
    options = _estimate_options(estimate_options)
    batches = as_batches(data)
    info = _inspect_loss(loss_fn)
    if loss is not None:
        ignore = getattr(loss_fn, "ignore_index", info.ignore_index) if loss == "softmax" else None
        info = _LossInfo(loss, info.source, info.scale if info.kind == loss else "paper", ignore_index=ignore)
    device = next(p for p in model.parameters()).device
    begin = time.perf_counter()
    stages: dict[str, float] = {}
    rows: list[SuggestionRow] = []
    hvps = 0
    range_tests: dict[str, RangeTestResult] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start

    with _untouched(model) as counter:
        curvature = None
        if "sgd" in optimizers or "lars" in optimizers:
            with stage("curvature"):
                curvature = hessian_spectral_norm(model, loss_fn, batches, seed=seed, mode=mode, **options)
            hvps += curvature.matvecs
        if "sgd" in optimizers:
            assert curvature is not None
            rows += _gd_rows(curvature)
            with stage("lipschitz"):
                rows += _lipschitz_rows(model, batches, device, info, mode, seed)
        if "adam" in optimizers:
            with stage("smoothness"):
                row, spent = _adam_row(
                    model,
                    loss_fn,
                    batches,
                    total_steps,
                    num_samples=num_samples,
                    seed=seed,
                    mode=mode,
                    sampler=sampler,
                    options=options,
                )
            rows.append(row)
            hvps += spent
        if "lars" in optimizers:
            assert curvature is not None
            with stage("gradient"):
                ratio_row, w_norm, _ = _trust_ratio_row(model, loss_fn, batches, device, mode, seed)
            rows.append(ratio_row)
            bounds = _lars_bounds(w_norm, w_star_norm, distance_bound, min_weight_norm)
            rows += _corollary_rows(target_accuracy, curvature, bounds)
        if range_test:
            with stage("range_test"):
                for name in optimizers:
                    seed_global(seed, model)  # the copy's dropout masks: a function of seed, not of the caller's RNG
                    result = lr_range_test(model, loss_fn, batches, _optimizer_factory(name), **range_options)
                    range_tests[name] = result
                    rows.append(_range_row(name, result, range_options))
        forward_passes = counter.calls
    order = {name: i for i, name in enumerate(optimizers)}
    rows.sort(key=lambda r: order[r.optimizer])  # stable: rule order kept within an optimizer
    settings = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "examples": sum(batch_size(x, y) for x, y in batches),
        "batches": len(batches),
        "loss": info.kind,
        "criterion": info.source,
        "total_steps": total_steps,
        "optimizers": list(optimizers),
        "num_samples": num_samples,
        "target_accuracy": target_accuracy,
        "mode": mode,
        "seed": seed,
        "range_test": range_test,
        "dtype": str(next(p for p in model.parameters()).dtype).replace("torch.", ""),
        "device": str(device),
    }
    cost = Cost(hvps=hvps, forward_passes=forward_passes, seconds=time.perf_counter() - begin, stages=stages)
    return Suggestion(rows=tuple(rows), cost=cost, settings=settings, range_tests=range_tests)


# ----------------------------------------------------------------------------------------------------------------
# Table and plot
# ----------------------------------------------------------------------------------------------------------------
def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


_HIDDEN = ("loss", "criterion", "assumed")  # in the header, or in the caveat


def _details(row: SuggestionRow, limit: int = 10) -> str:
    items = [(k, v) for k, v in row.quantities.items() if k not in _HIDDEN and not isinstance(v, (list, dict))]
    text = ", ".join(f"{k} = {_number(v)}" for k, v in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items) - limit} more in the JSON)"
    return text or "(no quantities)"


def _wrapped(label: str, text: str, width: int = 118) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=f"     {label:<8} ", subsequent_indent=" " * 14)


def _format_table(s: Suggestion) -> str:
    st = s.settings
    what = f"{st['workload']}: " if "workload" in st else ""
    head = [
        f"theorylr suggest: {what}{st.get('model', '?')} ({st.get('parameters', '?')} parameters), "
        f"{st.get('examples', '?')} examples in {st.get('batches', '?')} batch(es)",
        f"loss {st.get('loss') or '?'} ({st.get('criterion', '?')}), T = {st.get('total_steps', '?')} steps, "
        f"mode {st.get('mode', '?')}, seed {st.get('seed', '?')}",
    ]
    name_w = max([len(r.name) for r in s.rows] + [4])
    lines = [*head, "", f"  #  {'optimizer':<9}  {'rule':<{name_w}}  {'lr':>10}  formula"]
    for i, row in enumerate(s.rows, 1):
        lr = f"{row.lr:.4g}" if row.lr is not None else "-"
        lines.append(f"{i:>3}  {row.optimizer:<9}  {row.name:<{name_w}}  {lr:>10}  {row.formula}")
    lines += ["", "Details:"]
    for i, row in enumerate(s.rows, 1):
        lines.append(f"{i:>3}. {row.name}")
        lines += _wrapped("values:", _details(row))
        for label, text in (("note:", row.message), ("caveat:", row.caveat), ("ref:", row.reference)):
            if text:
                lines += _wrapped(label, text)
    c = s.cost
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in c.stages.items())
    cost = f"Cost: {c.hvps} Hessian-vector products, {c.forward_passes} forward passes, {c.seconds:.2f} s"
    lines += ["", *textwrap.wrap(cost + (f" ({stages})" if stages else ""), width=118)]
    return "\n".join(lines) + "\n"


def _plot(s: Suggestion, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    styles = {"sgd": "-", "adam": "--", "lars": ":"}
    lrs: list[float] = []
    for name, result in s.range_tests.items():
        pairs = [(lr, loss) for lr, loss in zip(result.lrs, result.losses) if math.isfinite(loss)]
        if pairs:
            ax.plot(*zip(*pairs), color="black", linestyle=styles.get(name, "-"), label=f"range test ({name})")
            lrs += [pairs[0][0], pairs[-1][0]]
    colors = [f"C{i % 10}" for i in range(len(s.rows))]
    for row, color in zip(s.rows, colors):
        if row.lr is not None and row.lr > 0 and math.isfinite(row.lr):
            ax.axvline(row.lr, color=color, linestyle=styles.get(row.optimizer, "-"), label=f"{row.name}: {row.lr:.3g}")
            lrs.append(row.lr)
    ax.set_xscale("log")
    if lrs:
        ax.set_xlim(min(lrs) / 3, max(lrs) * 3)
    else:
        ax.text(0.5, 0.5, "no learning rate to draw", transform=ax.transAxes, ha="center")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss" if s.range_tests else "")
    title = f"theorylr suggest: {s.settings.get('workload', s.settings.get('model', ''))}"
    if not s.range_tests:
        title += " (no range test)"
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
