"""Rules as data: how a run gets its optimizer and learning-rate schedule, one registry row each.

A :class:`Rule` is a name, a kind, a factory and the factory's default options. The factory receives a
:class:`RuleContext` (the freshly initialised model, the loss, the training data, the budget, the trial's lr and the
merged options) and returns a :class:`RuleSetup` (the optimizer, an optional scheduler stepped per step or per
epoch, and hooks for evaluation and logging). Factories import their optimizer lazily, so a rule whose code or peer
package is missing fails only when it is used -- :meth:`Rule.available` tells the runner to skip a missing peer with
a message instead of crashing.

Kinds:

* ``theory`` -- the learning rate comes from a convergence theory (LARS/PercentDelta with the paper's lr, the exact
  constant step for Adam, LipschitzLR's 1/L, AdaMo / Auto-Adam / adaptive RMSprop);
* ``lr-free`` -- peers that adapt the step size themselves (Prodigy, D-Adapt Adam, schedule-free AdamW, DoG);
* ``tuned`` -- SGD / momentum / Adam at a constant lr or with a torch schedule, given a :class:`LogGrid` search;
* ``baseline`` -- fixed settings that are neither (the LR range test, ``adam@1e-3``-style fixed-lr variants).

Example:
    >>> rule = get_rule("adam-cosine")
    >>> rule.kind, rule.trial_lrs(3)
    ('tuned', [0.0001, 0.00316228, 0.1])
    >>> resolve_rule("adam@1e-3").defaults["lr"], resolve_rule("adam@1e-3").kind
    (0.001, 'baseline')
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from theorylr._validation import check_choice, check_number, did_you_mean
from theorylr.lab._files import check_config_values
from theorylr.lab.losses import LossSpec
from theorylr.lab.tuning import LogGrid
from theorylr.lab.workloads import Workload

__all__ = [
    "KINDS",
    "RULES",
    "Rule",
    "RuleContext",
    "RuleSetup",
    "RuleUnavailableError",
    "get_rule",
    "lr_text",
    "register_rule",
    "resolve_rule",
]

KINDS = ("theory", "lr-free", "tuned", "baseline")


class RuleUnavailableError(RuntimeError):
    """A rule's optimizer or scheduler cannot be imported (missing peer package or unfinished module)."""


def lr_text(lr: float) -> str:
    """How a fixed lr is written in a rule's name (``NAME@LR``, a run directory): ``%g`` (``0.001``, ``1e-05``)
    where that is the same number, else the shortest exact form, so that two different lrs never share a name
    (``%g`` alone wrote both 0.0012345678 and 0.00123457 as ``0.00123457``).

    Example:
        >>> lr_text(1e-3), lr_text(0.0012345678), lr_text(0.00123457)
        ('0.001', '0.0012345678', '0.00123457')
    """
    text = f"{lr:g}"
    return text if float(text) == lr else repr(float(lr))


@dataclass
class RuleContext:
    """What a rule's factory gets.

    Attributes:
        model: the freshly initialised model (already on the run's device and dtype).
        loss: the workload's loss (callable: ``loss(outputs, targets)``).
        workload: the workload.
        x_train, y_train: the whole training set (device tensors; targets prepared for ``loss``).
        batches: ``batches(generator)`` iterates over one epoch of training mini-batches in the order the runner
            would draw them with that generator (one full batch for full-batch workloads). Factories that need data
            (estimates, range tests) pass their own generator, so they never perturb the run's RNG.
        epochs, steps_per_epoch: the budget; ``total_steps = epochs * steps_per_epoch``.
        num_classes: classes of the dataset (``None`` for regression).
        options: the rule's defaults, updated with the workload's ``rule_options`` and the trial's lr.
        seed: the run's seed.
    """

    model: nn.Module
    loss: LossSpec
    workload: Workload
    x_train: Tensor
    y_train: Tensor
    batches: Callable[[torch.Generator | None], Iterator[tuple[Tensor, Tensor]]]
    epochs: int
    steps_per_epoch: int
    num_classes: int | None
    options: dict[str, Any]
    seed: int

    @property
    def total_steps(self) -> int:
        """``epochs * steps_per_epoch``."""
        return self.epochs * self.steps_per_epoch

    @property
    def lr(self) -> float:
        """``options["lr"]``."""
        return float(self.options["lr"])

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The model's trainable parameters with their names."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


def _default_eval_model(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager[nn.Module]]:
    @contextlib.contextmanager
    def evaluate() -> Iterator[nn.Module]:
        yield model

    return evaluate


@dataclass
class RuleSetup:
    """What a rule's factory returns.

    Attributes:
        optimizer: the optimizer.
        scheduler: an optional learning-rate scheduler.
        scheduler_interval: ``"step"`` (stepped after every optimizer step) or ``"epoch"``.
        eval_model: a context manager giving the model to evaluate (schedule-free swaps to its averaged point, DoG
            to its averaged copy); ``None`` = the trained model itself.
        after_step: called after every optimizer step (e.g. a weight averager's update).
        probe: returns rule-specific quantities for ``metrics.csv`` once per epoch (trust ratios, K_hat, L, K_z,
            the effective lr). Runs outside ``step()``, so reading tensors there is fine.
        stateful: further objects with ``state_dict()``/``load_state_dict()`` saved in checkpoints (averagers).
        info: JSON-able results of the set-up (the derived step, the range test), written to ``meta.json``.
        observe_targets: called with each training batch's targets after its forward pass (the Lipschitz trackers
            need them for least squares and use them to tighten the rigorous bound).
        close: called once at the end of the run (remove hooks).
    """

    optimizer: Optimizer
    scheduler: LRScheduler | None = None
    scheduler_interval: str = "step"
    eval_model: Callable[[], contextlib.AbstractContextManager[nn.Module]] | None = None
    after_step: Callable[[], None] | None = None
    probe: Callable[[], dict[str, float]] | None = None
    stateful: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    observe_targets: Callable[[Tensor], None] | None = None
    close: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        check_choice("scheduler_interval", self.scheduler_interval, ("step", "epoch"))
        if self.info is not None and not isinstance(self.info, dict):  # meta.json's "setup" is an object
            raise ValueError(f"info must be a dict of JSON-able set-up results (got {type(self.info).__name__})")


@dataclass(frozen=True)
class Rule:
    """One registered rule.

    Attributes:
        name: registry name, used on the command line and as a directory name.
        kind: one of :data:`KINDS`.
        description: one line for ``theorylr list``.
        factory: ``factory(context) -> RuleSetup`` (a module-level function, so that rules pickle to workers).
        defaults: the factory's options (always including ``lr``: the lr, or the multiplier on a theory step).
        search: for tuned rules, the lr grid.
        requires: the import name of the peer package the rule needs (``None`` = theorylr and torch only).
        package: the pip name of that package, for the "install it" message.
        reference: the paper and section the rule follows.
        multiplier: ``lr`` multiplies a step the rule derives itself (exact step, 1/L, the adaptive optimizers' step;
            1 = the paper) rather than being the learning rate.
        applies: ``applies(workload) -> None`` when the rule can run on the workload, else the reason it cannot
            (a module-level function; ``None`` = every workload). :func:`~theorylr.lab.compare` skips such pairs.
        chosen_lr: the factory chooses the lr itself at set-up (the range test) and records it as ``chosen_lr`` in
            :attr:`RuleSetup.info`; ``defaults["lr"]`` is unused, so :meth:`with_lr` (``NAME@LR``) refuses it.
    """

    name: str
    kind: str
    description: str
    factory: Callable[[RuleContext], RuleSetup]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search: LogGrid | None = None
    requires: str | None = None
    package: str | None = None
    reference: str = ""
    multiplier: bool = False
    applies: Callable[[Workload], str | None] | None = None
    chosen_lr: bool = False

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ,"):
            raise ValueError(f"rule name must be non-empty without '/', '\\', ' ' or ',' (got {self.name!r})")
        check_choice("kind", self.kind, KINDS)
        if self.kind == "tuned" and self.search is None:
            raise ValueError(f"rule {self.name!r}: a tuned rule needs a search space (search=LogGrid(...))")
        if "lr" not in self.defaults:
            raise ValueError(f"rule {self.name!r}: defaults must include 'lr'")
        check_config_values(f"rule {self.name!r} defaults", self.defaults)

    @property
    def tuned(self) -> bool:
        """Whether the rule gets a search over its lr."""
        return self.search is not None

    def available(self) -> bool:
        """Whether the peer package the rule needs can be imported."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def missing_message(self) -> str:
        """Why the rule is skipped when :meth:`available` is false."""
        pkg = self.package or self.requires
        return (
            f"skipping rule {self.name!r}: it needs the package {pkg!r}, which is not installed "
            f"(pip install {pkg}, or pip install 'theorylr[peers]')"
        )

    def unsuitable(self, workload: Workload) -> str | None:
        """Why the rule cannot run on ``workload`` (``None`` when it can)."""
        if self.applies is None:
            return None
        reason = self.applies(workload)
        return None if reason is None else f"skipping rule {self.name!r} on {workload.name!r}: {reason}"

    def trial_lrs(self, trials: int) -> list[float]:
        """The learning rate of each trial: the grid for tuned rules, ``[defaults['lr']]`` otherwise."""
        if self.search is None:
            return [float(self.defaults["lr"])]
        return self.search.points(trials)

    def with_lr(self, lr: float) -> Rule:
        """A fixed-lr copy named ``name@lr`` (kind ``baseline`` for tuned rules; no search).

        Raises:
            ValueError: ``lr`` is not a finite number > 0, or the rule chooses its lr itself (:attr:`chosen_lr`).
        """
        if self.chosen_lr:
            base = self.defaults.get("optimizer", "sgd")
            raise ValueError(
                f"rule {self.name!r} takes no @LR: its lr is chosen at set-up by an LR range test, so "
                f"'{self.name}@{lr_text(lr)}' would train at the test's choice anyway; for a fixed lr name the "
                f"optimizer's own rule, e.g. '{base}@{lr_text(lr)}'"
            )
        check_number("lr", lr, min_value=0.0, min_inclusive=False)
        kind = "baseline" if self.kind == "tuned" else self.kind
        text = lr_text(lr)
        return dataclasses.replace(
            self,
            name=f"{self.name}@{text}",
            kind=kind,
            defaults={**self.defaults, "lr": lr},
            search=None,
            description=f"{self.description} (lr fixed at {text})",
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what ``config.json`` stores)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "factory": f"{self.factory.__module__}:{self.factory.__qualname__}",
            "defaults": dict(self.defaults),
            "search": None if self.search is None else {"low": self.search.low, "high": self.search.high},
            "requires": self.requires,
            "reference": self.reference,
            "multiplier": self.multiplier,
        }


RULES: dict[str, Rule] = {}


def register_rule(rule: Rule, *, replace: bool = False) -> Rule:
    """Add ``rule`` to :data:`RULES` (``ValueError`` on a duplicate name unless ``replace``)."""
    if rule.name in RULES and not replace:
        raise ValueError(f"rule {rule.name!r} is already registered (pass replace=True to override)")
    RULES[rule.name] = rule
    return rule


def get_rule(name: str) -> Rule:
    """The registered rule called ``name`` (``ValueError`` listing the names otherwise)."""
    try:
        return RULES[name]
    except KeyError:
        hint = did_you_mean(name, RULES)
        raise ValueError(f"rule must be one of {', '.join(sorted(RULES))} (got {name!r}{hint})") from None


def resolve_rule(spec: str) -> Rule:
    """A rule from a command-line spec: ``name`` or ``name@lr`` (a fixed-lr variant, see :meth:`Rule.with_lr`)."""
    if not isinstance(spec, str):
        raise ValueError(f"rule spec must be a string NAME or NAME@LR (got {spec!r})")
    name, sep, lr_text = spec.strip().partition("@")
    rule = get_rule(name)
    if not sep:
        return rule
    try:
        lr = float(lr_text)
    except ValueError:
        raise ValueError(f"rule spec must be NAME or NAME@LR with LR a number (got {spec!r})") from None
    try:
        return rule.with_lr(lr)
    except ValueError as exc:  # name the spec: "lr" alone does not say it is the @LR of the user's rule spec
        raise ValueError(f"rule spec {spec!r}: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# helpers shared by the factories


def _load(target: str, rule: str) -> Any:
    """Import ``module:attr``; a missing module becomes a clear :class:`RuleUnavailableError`."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise RuleUnavailableError(
            f"rule {rule!r} needs {target}, which cannot be imported here ({type(exc).__name__}: {exc})"
        ) from exc


def _group_lr_probe(optimizer: Optimizer) -> dict[str, float]:
    return {"lr": float(optimizer.param_groups[0]["lr"])}


class _StepFactor:
    """A picklable ``LambdaLR`` factor: ``kind`` decays from 1 to ``end`` over ``total`` steps."""

    def __init__(self, kind: str, total: int, end: float) -> None:
        self.kind, self.total, self.end = kind, max(total, 1), end

    def __call__(self, step: int) -> float:
        t = step / self.total
        if self.kind == "inverse-sqrt":  # 1/sqrt(1 + a t), a so that the last step reaches `end`
            return 1.0 / math.sqrt(1.0 + (self.end**-2 - 1.0) * t)
        if self.kind == "inverse-time":  # 1/(1 + a t)
            return 1.0 / (1.0 + (1.0 / self.end - 1.0) * t)
        raise ValueError(f"unknown decay {self.kind!r}")


#: The schedules of the baselines and what they do over a run of T optimizer steps (stepped every step).
SCHEDULES: dict[str, str] = {
    "constant": "lr throughout",
    "linear": "linear decay from lr to 0 over T steps (LinearLR)",
    "step": "x0.1 every ceil(T/3) steps (StepLR)",
    "inverse-sqrt": "lr / sqrt(1 + 99 t/T): square-root decay to lr/10 (LambdaLR)",
    "inverse-time": "lr / (1 + 9 t/T): inverse-time decay to lr/10 (LambdaLR)",
    "exponential": "lr * 0.01^(t/T): exponential decay to lr/100 (ExponentialLR)",
    "onecycle": "one cycle up to lr and down, 30% warm-up (OneCycleLR defaults)",
    "cosine": "cosine annealing from lr to 0 over T steps (CosineAnnealingLR)",
}


def _schedule(name: str, optimizer: Optimizer, total: int, lr: float) -> LRScheduler | None:
    sched = torch.optim.lr_scheduler
    total = max(total, 1)
    if name == "constant":
        return None
    if name == "linear":
        return sched.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=total)
    if name == "step":
        return sched.StepLR(optimizer, step_size=math.ceil(total / 3), gamma=0.1)
    if name in ("inverse-sqrt", "inverse-time"):
        return sched.LambdaLR(optimizer, _StepFactor(name, total, 0.1))
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=0.01 ** (1.0 / total))
    if name == "onecycle":
        group = optimizer.param_groups[0]
        cycle = "betas" in group or group.get("momentum", 0.0) > 0.0
        return sched.OneCycleLR(optimizer, max_lr=lr, total_steps=total, cycle_momentum=cycle)
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} (got {name!r})")


def _torch_optimizer(name: str, params: Any, lr: float, options: Mapping[str, Any]) -> Optimizer:
    weight_decay = float(options.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(options.get("momentum", 0.0)), weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of 'sgd', 'adam', 'rmsprop' (got {name!r})")


# ----------------------------------------------------------------------------------------------------------------
# factories: tuned baselines and the range test


def build_torch_baseline(ctx: RuleContext) -> RuleSetup:
    """SGD / momentum / Adam / RMSprop at ``lr`` with one of :data:`SCHEDULES`, stepped every optimizer step.

    Options: ``optimizer`` (``"sgd"``, ``"adam"``, ``"rmsprop"``), ``momentum``, ``weight_decay``, ``schedule``.
    """
    optimizer = _torch_optimizer(ctx.options["optimizer"], ctx.model.parameters(), ctx.lr, ctx.options)
    scheduler = _schedule(ctx.options.get("schedule", "constant"), optimizer, ctx.total_steps, ctx.lr)
    return RuleSetup(optimizer, scheduler, "step", probe=lambda: _group_lr_probe(optimizer))


def build_range_test(ctx: RuleContext) -> RuleSetup:
    """Run :func:`~theorylr.lab.range_test.lr_range_test` on a copy of the model, then train at its suggestion.

    Options: ``optimizer``, ``momentum``, ``schedule`` (as :func:`build_torch_baseline`), ``num_steps`` of the test,
    ``start_lr``, ``end_lr``. The test's cost is part of the run's set-up time.
    """
    from theorylr.lab.range_test import lr_range_test

    generator = torch.Generator(device="cpu").manual_seed(10_000 + ctx.seed)
    batches = list(ctx.batches(generator))
    name = ctx.options["optimizer"]
    result = lr_range_test(
        ctx.model,
        ctx.loss,
        batches,
        lambda params, lr: _torch_optimizer(name, params, lr, ctx.options),
        start_lr=float(ctx.options.get("start_lr", 1e-6)),
        end_lr=float(ctx.options.get("end_lr", 10.0)),
        num_steps=int(ctx.options.get("num_steps", 50)),
    )
    lr = result.suggestion
    optimizer = _torch_optimizer(name, ctx.model.parameters(), lr, ctx.options)
    scheduler = _schedule(ctx.options.get("schedule", "constant"), optimizer, ctx.total_steps, lr)
    info = {"range_test": result.to_dict(), "chosen_lr": lr}
    return RuleSetup(optimizer, scheduler, "step", probe=lambda: _group_lr_probe(optimizer), info=info)


# ----------------------------------------------------------------------------------------------------------------
# factories: the theory rules


def build_lars(ctx: RuleContext) -> RuleSetup:
    """LARS or PercentDelta (Gitman et al., §2) at a fixed lr, or decaying linearly to 0 (§6.2, "LARS - Decay").

    Options: ``optimizer`` (``"LARS"`` or ``"PercentDelta"``), ``lr``, ``momentum``, ``decay`` (``None``,
    ``"linear"``: the paper's experiment, or ``"inverse"``: ``lr/(1+t)``, a sequence Theorem 3 covers),
    ``exclude_1d`` (default ``False``: every tensor is adapted, as in the paper's analysis; ``True``: biases and
    norm gains get plain SGD, You et al.'s practice, via :func:`~theorylr.optim.param_groups.lars_param_groups`),
    and any further keyword of the optimizer. Logs each tensor's trust ratio.
    """
    opts = dict(ctx.options)
    name = opts.pop("optimizer")
    check_choice("rule option optimizer", name, ("LARS", "PercentDelta"))
    cls = _load(f"theorylr.optim.lars:{name}", "lars")
    decay = opts.pop("decay", None)
    exclude_1d = bool(opts.pop("exclude_1d", False))
    named = ctx.named_parameters()
    names = {id(p): n for n, p in named}
    params: Any = [p for _, p in named]
    if exclude_1d:
        lars_param_groups = _load("theorylr.optim.param_groups:lars_param_groups", "lars")
        params = lars_param_groups(named)
    optimizer = cls(params, **opts)
    scheduler: LRScheduler | None = None
    if decay == "linear":
        scheduler = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0, end_factor=0.0, total_iters=max(ctx.total_steps, 1)
        )
    elif decay == "inverse":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _InverseDecay())
    elif decay is not None:
        raise ValueError(f"decay must be None, 'linear' or 'inverse' (got {decay!r})")

    def probe() -> dict[str, float]:
        out = _group_lr_probe(optimizer)
        for group in optimizer.param_groups:
            for p in group["params"]:
                ratio = optimizer.state.get(p, {}).get("trust_ratio")
                if ratio is not None:
                    out[f"trust_ratio/{names.get(id(p), str(id(p)))}"] = float(ratio)
        return out

    return RuleSetup(optimizer, scheduler, "step", probe=probe)


class _InverseDecay:
    """``1 / (1 + t)``: sum diverges, sum of squares converges (Theorem 3's condition)."""

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + step)


def init_sampler(scheme: str, model: nn.Module, generator: torch.Generator) -> None:
    """A ``smoothness`` sampler that re-draws ``model`` with :func:`theorylr.models.init_weights` under ``scheme``."""
    from theorylr.models import init_weights

    init_weights(model, scheme, generator)


def build_exact_adam(ctx: RuleContext) -> RuleSetup:
    """Adam with the exact constant step ``alpha = sqrt(2 L(w0) / (K_hat T))`` (exact-step Adam paper, §4.2,
    Algorithm 2), from :func:`theorylr.optim.exact_adam.exact_step_adam`.

    ``L(w0)`` and ``K_hat`` are measured on the training set before training -- the whole set for full-batch
    workloads, one epoch of the run's mini-batches otherwise (the paper's mini-batch variant) -- and their cost is
    part of the run's set-up time. ``T`` is the run's number of optimizer steps. Options: ``num_samples`` (N of
    Algorithm 2, default 10), ``lr`` (a multiplier on alpha; 1 = the paper) and any keyword of
    ``exact_step_adam``. Logs ``alpha``, ``K_hat`` and ``L0``.

    Algorithm 2 samples ``w_j`` from the initialisation distribution: when the workload names an ``init`` scheme
    (e.g. Kaiming-uniform, as the paper), the samples are drawn with :func:`theorylr.models.init_weights` under that
    scheme, so ``K_hat`` describes the distribution training starts from; otherwise with each module's
    ``reset_parameters()`` (torch's default scheme).
    """
    exact_step_adam = _load("theorylr.optim.exact_adam:exact_step_adam", "exact-adam")
    opts = dict(ctx.options)
    if ctx.workload.init is not None:
        estimate = dict(opts.get("estimate_kwargs") or {})
        estimate.setdefault("sampler", functools.partial(init_sampler, ctx.workload.init))
        opts["estimate_kwargs"] = estimate
    multiplier = float(opts.pop("lr"))
    num_samples = int(opts.pop("num_samples", 10))
    if ctx.steps_per_epoch == 1:
        data: Any = (ctx.x_train, ctx.y_train)
    else:
        data = list(ctx.batches(torch.Generator(device="cpu").manual_seed(20_000 + ctx.seed)))
    optimizer, step = exact_step_adam(
        ctx.model, ctx.loss, data, ctx.total_steps, num_samples=num_samples, seed=ctx.seed, **opts
    )  # K_hat = 0 (no curvature: a hinge on a linear model) raises a ValueError that says so
    if multiplier != 1.0:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * multiplier
    info = step.to_dict()
    constants = {"alpha": float(step.alpha), "K_hat": float(step.k_hat), "L0": float(step.initial_loss)}

    def probe() -> dict[str, float]:
        return {**_group_lr_probe(optimizer), **constants}

    return RuleSetup(optimizer, None, "step", probe=probe, info={"exact_step": info})


#: Losses that are piecewise linear: no curvature, so Algorithm 2's K_hat is 0 on a linear or ReLU model.
PIECEWISE_LINEAR_LOSSES = ("binary_hinge", "multiclass_hinge")


def needs_curvature(workload: Workload) -> str | None:
    """``applies`` check of exact-adam: the exact step assumes a smooth loss with ``K_hat > 0``."""
    if workload.loss in PIECEWISE_LINEAR_LOSSES:
        return (
            f"its loss {workload.loss!r} is piecewise linear, not smooth: Algorithm 2 measures K_hat = 0 there (no "
            "curvature), so the exact step sqrt(2 L(w0) / (K_hat T)) is undefined"
        )
    return None


def needs_closed_form(workload: Workload) -> str | None:
    """``applies`` check of the LipschitzLR family: the loss needs a closed-form Lipschitz constant."""
    if workload.loss_spec.lipschitz is None:
        return f"its loss {workload.loss!r} has no closed-form Lipschitz constant (softmax, bce or least squares)"
    return None


def _history_probe(scheduler: Any) -> dict[str, float]:
    """The newest entry of a LipschitzLR scheduler's ``history``: L, its data term, K_z and the weight bound."""
    history = getattr(scheduler, "history", None)
    if not history:
        return {}
    last = history[-1]
    out: dict[str, float] = {}
    for key, column in (("lipschitz", "L"), ("data_lipschitz", "L_data"), ("k_z", "K_z"), ("weight_bound", "K_w")):
        value = last.get(key)
        if isinstance(value, (int, float)):
            out[column] = float(value)
    return out


def build_lipschitz(ctx: RuleContext) -> RuleSetup:
    """SGD (or momentum SGD) with LipschitzLR's ``lr = 1/L``, recomputed every epoch (Yedida & Saha, §3-§5, §7.4).

    The first epoch's lr comes from the first training batch (LipschitzLR's default). Options: ``momentum``,
    ``rigorous`` (``False`` = the paper's L, ``True`` = the provable bound), ``lr`` (the multiplier on 1/L; 1 = the
    paper), ``weight_decay``, and any further :class:`~theorylr.lipschitz.scheduler.LipschitzLR` keyword. Logs L,
    its data term, K_z and the weight bound K_w of the epoch. The ``lr`` column is the lr the optimizer holds after
    the epoch, ``multiplier / L`` of that epoch; at epoch 0 it is ``nan`` unless ``initial_lr`` is given, since the
    first epoch's lr is set from the first training batch, after that row is written.
    """
    lipschitz_lr = _load("theorylr.lipschitz.scheduler:LipschitzLR", "lipschitz")
    if ctx.loss.lipschitz is None:
        raise ValueError(f"LipschitzLR has no closed form for the loss {ctx.loss.name!r}")
    opts = dict(ctx.options)
    multiplier = float(opts.pop("lr"))
    momentum = float(opts.pop("momentum", 0.0))
    weight_decay = float(opts.pop("weight_decay", 0.0))
    optimizer = torch.optim.SGD(ctx.model.parameters(), lr=multiplier, momentum=momentum, weight_decay=weight_decay)
    scheduler = lipschitz_lr(
        optimizer,
        ctx.model,
        loss=ctx.loss.lipschitz,
        num_classes=_lipschitz_classes(ctx),
        weight_decay=weight_decay,
        **opts,
    )
    return RuleSetup(
        optimizer,
        scheduler,
        "epoch",
        probe=lambda: {
            # Before the first batch the group holds the bare multiplier, which no step uses.
            **(_group_lr_probe(optimizer) if scheduler.history else {"lr": math.nan}),
            **_history_probe(scheduler),
        },
        observe_targets=scheduler.observe_targets,
        close=scheduler.close,
    )


def _lipschitz_classes(ctx: RuleContext) -> int | None:
    return ctx.num_classes if ctx.loss.lipschitz == "softmax" else None


def build_lipschitz_adaptive(ctx: RuleContext) -> RuleSetup:
    """AdaMo, Auto-Adam or adaptive RMSprop (Yedida & Saha, §6) with the closed-form per-step Lipschitz estimate
    from the model's penultimate activations (the optimizer is given the model).

    Options: ``optimizer`` (class name in ``theorylr.optim.adaptive``), ``lr`` (the multiplier, 1 = the paper) and
    any further keyword of the class. Logs ``K`` (the EWA of L_t), ``K2`` (of L2_t, Auto-Adam and RMSprop) and the
    step factor ``effective_lr`` = ``lr / K`` (AdaMo) or ``lr (sqrt(K2) + eps) / K`` (the others).
    """
    opts = dict(ctx.options)
    name = opts.pop("optimizer")
    check_choice("rule option optimizer", name, ("AdaMo", "AutoAdam", "AdaptiveRMSprop"))
    cls = _load(f"theorylr.optim.adaptive:{name}", name)
    if ctx.loss.lipschitz is None:
        raise ValueError(f"{name} has no closed-form Lipschitz estimate for the loss {ctx.loss.name!r}")
    params = [p for _, p in ctx.named_parameters()]
    optimizer = cls(params, model=ctx.model, loss=ctx.loss.lipschitz, num_classes=_lipschitz_classes(ctx), **opts)

    def probe() -> dict[str, float]:
        out = _group_lr_probe(optimizer)
        group = optimizer.param_groups[0]
        state = next((optimizer.state[p] for p in group["params"] if p in optimizer.state), None)
        if state is None or "lipschitz_avg" not in state:
            return out
        k1 = float(state["lipschitz_avg"])
        out["K"] = k1
        factor = 1.0
        if "lipschitz_sq_avg" in state:
            k2 = float(state["lipschitz_sq_avg"])
            out["K2"] = k2
            factor = math.sqrt(k2) + float(group.get("eps", 0.0))
        out["effective_lr"] = float(group["lr"]) * factor / k1 if k1 > 0 else math.nan
        return out

    return RuleSetup(
        optimizer,
        None,
        "step",
        probe=probe,
        observe_targets=optimizer.tracker.observe_targets,
        close=optimizer.close,
    )


# ----------------------------------------------------------------------------------------------------------------
# factories: the learning-rate-free peers


def build_prodigy(ctx: RuleContext) -> RuleSetup:
    """Prodigy (Mishchenko & Defazio 2023) from ``prodigyopt``; effective lr = ``d * lr``."""
    prodigy = _load("prodigyopt:Prodigy", "prodigy")
    optimizer = prodigy(ctx.model.parameters(), **ctx.options)
    return RuleSetup(optimizer, None, "step", probe=lambda: _d_probe(optimizer))


def build_dadapt_adam(ctx: RuleContext) -> RuleSetup:
    """D-Adaptation Adam (Defazio & Mishchenko 2023) from ``dadaptation``; effective lr = ``d * lr``."""
    dadapt = _load("dadaptation:DAdaptAdam", "dadapt-adam")
    optimizer = dadapt(ctx.model.parameters(), **ctx.options)
    return RuleSetup(optimizer, None, "step", probe=lambda: _d_probe(optimizer))


def _d_probe(optimizer: Optimizer) -> dict[str, float]:
    group = optimizer.param_groups[0]
    d = float(group.get("d", math.nan))
    return {"lr": float(group["lr"]), "d": d, "effective_lr": d * float(group["lr"])}


def build_schedulefree(ctx: RuleContext) -> RuleSetup:
    """Schedule-free AdamW (Defazio et al. 2024) from ``schedulefree``.

    The optimizer is put in train mode before training and switched to its averaged point (``.eval()``) for every
    evaluation, then back (``.train()``). Options: ``lr``, ``warmup_fraction`` (of the run's steps), and any keyword
    of ``AdamWScheduleFree``.

    .. note:: models with BatchNorm would need their running statistics recomputed at the averaged point; the lab
       evaluates the averaged weights with the statistics gathered during training.
    """
    cls = _load("schedulefree:AdamWScheduleFree", "schedulefree-adamw")
    opts = dict(ctx.options)
    warmup = round(float(opts.pop("warmup_fraction", 0.0)) * ctx.total_steps)
    optimizer = cls(ctx.model.parameters(), warmup_steps=warmup, **opts)
    optimizer.train()

    @contextlib.contextmanager
    def evaluate() -> Iterator[nn.Module]:
        optimizer.eval()
        try:
            yield ctx.model
        finally:
            optimizer.train()

    return RuleSetup(optimizer, None, "step", eval_model=evaluate, probe=lambda: _group_lr_probe(optimizer))


def build_dog(ctx: RuleContext) -> RuleSetup:
    """DoG, "distance over gradients" (Ivgi et al. 2023) from ``dog-optimizer``, evaluated on its polynomially
    averaged model (``PolynomialDecayAverager``, gamma 8, as the DoG paper recommends). Effective lr = ``eta``.
    """
    dog = _load("dog:DoG", "dog")
    averager_cls = _load("dog:PolynomialDecayAverager", "dog")
    opts = dict(ctx.options)
    gamma = float(opts.pop("gamma", 8.0))
    optimizer = dog(ctx.model.parameters(), **opts)
    averager = averager_cls(ctx.model, gamma=gamma)

    @contextlib.contextmanager
    def evaluate() -> Iterator[nn.Module]:
        yield averager.averaged_model

    def probe() -> dict[str, float]:
        out = _group_lr_probe(optimizer)
        eta = optimizer.param_groups[0].get("eta")
        if isinstance(eta, (list, tuple)) and eta:
            out["effective_lr"] = float(eta[0])
        return out

    return RuleSetup(
        optimizer,
        None,
        "step",
        eval_model=evaluate,
        after_step=averager.step,
        probe=probe,
        stateful={"averager": averager},
    )


# ----------------------------------------------------------------------------------------------------------------
# the registry

_SGD_GRID = LogGrid(1e-3, 1.0)
_ADAM_GRID = LogGrid(1e-4, 1e-1)
_BASES: dict[str, tuple[str, dict[str, Any], LogGrid, str]] = {
    "sgd": ("SGD", {"optimizer": "sgd", "momentum": 0.0, "lr": 0.1}, _SGD_GRID, "plain SGD"),
    "momentum": ("SGD+momentum", {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01}, _SGD_GRID, "heavy ball 0.9"),
    "adam": ("Adam", {"optimizer": "adam", "lr": 1e-3}, _ADAM_GRID, "Adam (0.9, 0.999)"),
}


def _register_defaults() -> None:
    for base, (label, defaults, grid, _) in _BASES.items():
        for schedule, text in SCHEDULES.items():
            name = base if schedule == "constant" else f"{base}-{schedule}"
            register_rule(
                Rule(
                    name=name,
                    kind="tuned",
                    description=f"{label}, {text}; lr tuned on a log grid [{grid.low:g}, {grid.high:g}]",
                    factory=build_torch_baseline,
                    defaults={**defaults, "schedule": schedule},
                    search=grid,
                    reference="exact-step Adam paper §5.1 (the seven schedulers)" if schedule != "constant" else "",
                )
            )
    for base in ("sgd", "adam"):
        label, defaults, _, _ = _BASES[base]
        register_rule(
            Rule(
                name=f"{base}-range-test",
                kind="baseline",
                description=f"{label} at lr = (lr of min loss in an LR range test)/10, cost included",
                factory=build_range_test,
                defaults={**defaults, "num_steps": 50},
                reference="Smith 2017, §3.3",
                chosen_lr=True,
            )
        )

    proportional = "Gitman, Dilipkumar & Parr, proportional updates"
    for name, cls, norm_text in (("lars", "LARS", "L2"), ("percent-delta", "PercentDelta", "L1")):
        register_rule(
            Rule(
                name=name,
                kind="theory",
                description=f"{cls}: layer-wise lr * ||w||/||g|| ({norm_text}) at a fixed lr",
                factory=build_lars,
                defaults={"optimizer": cls, "lr": 0.05},
                reference=f"{proportional}, §2 and §6.2",
            )
        )
        register_rule(
            Rule(
                name=f"{name}-decay",
                kind="theory",
                description=f"{cls} with lr decaying linearly to 0"
                + (
                    " (the paper's 'LARS - Decay')"
                    if cls == "LARS"
                    else " (as the paper's 'LARS - Decay', with L1 norms)"
                ),
                factory=build_lars,
                defaults={"optimizer": cls, "lr": 0.05, "decay": "linear"},
                reference=f"{proportional}, §4.3 (Theorem 3) and §6.2",
            )
        )
    register_rule(
        Rule(
            name="exact-adam",
            kind="theory",
            description="Adam with the exact constant step sqrt(2 L(w0) / (K_hat T)), K_hat via Lanczos HVPs",
            factory=build_exact_adam,
            defaults={"lr": 1.0, "num_samples": 10},
            reference="exact-step Adam paper, Remark 2 and Algorithm 2",
            multiplier=True,
            applies=needs_curvature,
        )
    )
    for name, rigorous, momentum, text in (
        ("lipschitz-sgd", False, 0.0, "SGD with lr = 1/L (paper's closed form), recomputed every epoch"),
        ("lipschitz-sgd-rigorous", True, 0.0, "SGD with lr = 1/L from the provable gradient bound, every epoch"),
        ("lipschitz-momentum", False, 0.9, "momentum SGD (0.9) with lr = 1/L (paper's form), every epoch"),
    ):
        register_rule(
            Rule(
                name=name,
                kind="theory",
                description=text,
                factory=build_lipschitz,
                defaults={"lr": 1.0, "momentum": momentum, "rigorous": rigorous},
                reference="Yedida & Saha, LipschitzLR, §3-§5 and §7",
                multiplier=True,
                applies=needs_closed_form,
            )
        )
    for name, cls, text in (
        ("adamo", "AdaMo", "AdaMo: momentum with step V/K, K an EWA of the closed-form Lipschitz constant"),
        ("auto-adam", "AutoAdam", "Auto-Adam: Adam's moments, step from EWAs of L and of L2"),
        ("adaptive-rmsprop", "AdaptiveRMSprop", "adaptive RMSprop: Auto-Adam without the first moment"),
    ):
        register_rule(
            Rule(
                name=name,
                kind="theory",
                description=text,
                factory=build_lipschitz_adaptive,
                defaults={"optimizer": cls, "lr": 1.0},
                reference="Yedida & Saha, LipschitzLR, §6",
                multiplier=True,
                applies=needs_closed_form,
            )
        )

    for name, factory, requires, package, defaults, text, ref in (
        ("prodigy", build_prodigy, "prodigyopt", "prodigyopt", {"lr": 1.0}, "Prodigy (lr 1)", "Mishchenko 2023"),
        (
            "dadapt-adam",
            build_dadapt_adam,
            "dadaptation",
            "dadaptation",
            {"lr": 1.0},
            "D-Adaptation Adam (lr 1)",
            "Defazio & Mishchenko 2023",
        ),
        (
            "schedulefree-adamw",
            build_schedulefree,
            "schedulefree",
            "schedulefree",
            {"lr": 0.0025, "warmup_fraction": 0.05},
            "schedule-free AdamW (lr 0.0025, 5% warm-up), evaluated at its averaged point",
            "Defazio et al. 2024",
        ),
        (
            "dog",
            build_dog,
            "dog",
            "dog-optimizer",
            {"lr": 1.0},
            "DoG (distance over gradients), evaluated on its polynomially averaged model",
            "Ivgi, Hinder & Carmon 2023",
        ),
    ):
        register_rule(
            Rule(
                name=name,
                kind="lr-free",
                description=text,
                factory=factory,
                defaults=defaults,
                requires=requires,
                package=package,
                reference=ref,
            )
        )


_register_defaults()

#: The rules ``compare`` runs when none are named (and ``make demo`` runs): every theory rule, tuned Adam and
#: momentum SGD with and without a cosine schedule, the range test, and the peers (those installed).
DEFAULT_RULES: tuple[str, ...] = (
    "lars",
    "lars-decay",
    "percent-delta",
    "exact-adam",
    "lipschitz-sgd",
    "lipschitz-sgd-rigorous",
    "adamo",
    "auto-adam",
    "adaptive-rmsprop",
    "adam",
    "adam-cosine",
    "momentum",
    "momentum-cosine",
    "adam-range-test",
    "prodigy",
    "dadapt-adam",
    "schedulefree-adamw",
    "dog",
)
