"""LipschitzLR: ``lr = multiplier / L``, with ``L`` the loss's closed-form Lipschitz constant, recomputed every epoch.

Yedida & Saha, *LipschitzLR*, §3 (the inverse Lipschitz constant as the learning rate), §4-§5 (closed forms), §7.4
(recomputed every epoch, ``m`` = the batch size, ``K`` = ``max ||w||``) and §8 (hooks instead of extra forward
passes).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from theorylr._validation import check_number
from theorylr.lipschitz.tracker import EPOCH_FIELDS, ActivationTracker

__all__ = ["DegenerateLipschitzError", "LipschitzLR"]


class DegenerateLipschitzError(FloatingPointError, RuntimeError):
    """``L`` came out 0, negative or non-finite, so ``lr = multiplier / L`` is undefined.

    In training this is a form of divergence (e.g. a step so large that every penultimate ReLU died, giving
    ``K_z = 0``); the lab records such a run as ``diverged``. It is a ``RuntimeError`` as well, for callers that
    catch that.
    """


# Attributes that are objects, not state: never in state_dict.
_NOT_STATE = ("optimizer", "model", "tracker", "_finalizer", "_first_step_handle")


class LipschitzLR(LRScheduler):
    r"""Sets each group's learning rate to ``multiplier / L`` every epoch, ``L`` the closed-form Lipschitz constant.

    Call :meth:`step` once per epoch, after the epoch's optimizer steps (as torch's epoch schedulers). The
    schedule for epoch ``e >= 1`` is

    .. math:: \mathrm{lr}_e = \frac{\mathrm{multiplier}}{L_{e-1}}, \qquad
              L_{e-1} = \max_{b \in \text{epoch } e-1} L_b \;+\; \lambda K,

    where ``multiplier`` is the group's learning rate when the scheduler is built (1.0 = the paper), ``L_b`` the
    constant of training batch ``b`` from its penultimate activations (``K_z``, ``m`` = that batch's size, ``k``),
    ``lambda = weight_decay`` and ``K`` the weight bound read at the end of the epoch (§5.3, §7.4):

    - ``loss="softmax"``: ``L_b = (k-1) K_z / (k m)`` (eq. 23);
    - ``loss="bce"``: ``L_b = K_z / (2m)`` (eq. 18);
    - ``loss="least_squares"``: ``L_b = (K K_z - ||y_b||) K_z / m`` (eq. 9 with ``K_a = K K_z``, eq. 12);
    - ``rigorous=True``: ``L_b = gradient_norm_bound(A_b, loss, ...)``, a true bound on the last-layer gradient
      norm of the batch's mean loss (:func:`~theorylr.lipschitz.bounds.gradient_norm_bound`).

    The activations come from an :class:`~theorylr.lipschitz.tracker.ActivationTracker` (a forward hook on the
    input of the last ``nn.Linear``, or on the output of ``penultimate``) that records training-mode forward passes
    only, with no extra forward pass and no host synchronisation per batch; the one synchronisation is here, once
    per epoch, to set the new learning rate.

    **The first epoch** has no previous epoch. With ``initial_lr`` it runs at ``initial_lr`` exactly (not
    multiplied; the paper picks it by hand: for AdaMo 0.1, 0.5 or 1 by experiment, §7.3.1, §7.4; for RMSprop 1e-3
    where its first epoch blew up, ResNet on CIFAR-100 only, §8). Without it, the learning rate is set
    lazily, **at the first** ``optimizer.step()``: a step pre-hook reads the constant of the batch whose forward
    pass preceded that step (the first training batch; no extra forward pass), sets ``lr = multiplier / L`` and
    removes itself. An optimizer that runs its forward pass inside ``step(closure)`` needs ``initial_lr``, and so does
    a step compiled with ``torch.compile(opt.step, fullgraph=True)`` (the pre-hook reads ``L`` on the host; compiled
    without ``fullgraph`` it runs eagerly, a graph break at the first step only; fullgraph names this in its error).

    **Least squares** needs each batch's targets: call :meth:`observe_targets` after every forward pass.

    **Composition.** The update is relative, ``lr <- lr * (multiplier / L_new) / (multiplier / L_old)``, so factors
    applied by other schedulers persist: in ``ChainedScheduler([LipschitzLR(...), ExponentialLR(opt, g)])`` the
    learning rate of epoch ``e`` is ``g^e * multiplier / L_{e-1}`` (either order), and with a warm-up such as
    ``LinearLR(opt, start_factor=0.1)`` it is the warm-up's factor times ``multiplier / L_{e-1}`` (the lazy first lr
    keeps the factor that schedulers built with it applied). With ``initial_lr``, build LipschitzLR before the
    schedulers chained with it: its construction sets ``initial_lr`` itself, over a factor applied before. In a
    ``SequentialLR``, LipschitzLR may be any phase: when it takes over at a milestone it sets ``multiplier / L`` with
    ``L`` the largest batch constant since it was built or last stepped (the whole preceding phase), and when it
    hands over, the next scheduler starts from its own base learning rate (the multiplier), as ``SequentialLR``
    defines.

    **Checkpoints.** :meth:`state_dict` holds plain data and tensors (``torch.save`` works on it, also loaded with
    ``weights_only=True``); the scheduler itself cannot be pickled or deep-copied (its hooks are bound to the live
    model and optimizer): build a new one and call :meth:`load_state_dict`. A 0-dim tensor ``lr`` (for a compiled
    ``optimizer.step``) is updated in place, as torch's schedulers do. The optimizer's state may be loaded before or
    after the scheduler is built: when its construction wrote its lr over a restored one and nothing changed it
    since, :meth:`load_state_dict` puts back the checkpoint's lr.

    **Gradient accumulation.** Every training forward pass of the tracked module is a batch: with ``a``
    micro-batches per optimizer step, ``m`` is the micro-batch size and ``L`` the largest micro-batch's. For the
    paper's forms (``K_z / m``-like, larger for smaller ``m``) the lr is then that of training on micro-batches, up
    to about ``sqrt(a)`` below one computed on the whole step's batch.

    Args:
        optimizer: any torch optimizer (SGD, momentum SGD, RMSprop, Adam, ...). Its learning rates when the
            scheduler is built are the multipliers (floats or 0-dim tensors).
        model: the model whose penultimate activations are tracked.
        loss: ``"softmax"`` (default), ``"bce"`` or ``"least_squares"``.
        num_classes: ``k`` for ``"softmax"`` (default: the ``out_features`` of the last ``nn.Linear``).
        penultimate: ``None`` (default: the input of the last ``nn.Linear``), or a module (or its name) whose
            output is the penultimate activation.
        activation_norm: ``K_z``'s norm, ``"fro"`` (default), ``"spectral"`` or ``"max_row"``.
        weight_bound: a constant ``K`` (default ``None``: the largest parameter-tensor norm of the model, §7.4).
        weight_decay: the L2 coefficient ``lambda`` added as ``lambda K`` (default 0.0; pass the optimizer's).
        initial_lr: the learning rate of the first epoch (default ``None``: from the first batch, see above).
        rigorous: use the true bound :func:`~theorylr.lipschitz.bounds.gradient_norm_bound` (default ``False``).
        tracker: a tracker already built on ``model`` with the same ``loss`` (default ``None``: build one from the
            arguments above, which are then ignored), e.g. a
            :class:`~theorylr.distributed.DistributedActivationTracker` under DDP. The scheduler closes it.

    Attributes:
        tracker: the :class:`~theorylr.lipschitz.tracker.ActivationTracker` (its statistics are readable).
        history: one dict per learning rate set: ``epoch`` (the epoch it applies to), ``source``
            (``"initial_lr"``, ``"first_batch"`` or ``"epoch"``), ``lipschitz`` (``L``), ``data_lipschitz``
            (``max_b L_b``), ``k_z`` and ``batch_size`` (of the batch attaining it), ``max_k_z``, ``weight_bound``,
            ``batches`` and ``lr`` (per group). Kept in :meth:`state_dict`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=1.0)       # lr = 1.0: the paper's multiplier
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> with LipschitzLR(opt, model, "softmax") as sched:
        ...     for epoch in range(2):
        ...         for xb, yb in zip(x.split(8), y.split(8)):
        ...             opt.zero_grad()
        ...             nn.functional.cross_entropy(model(xb), yb).backward()
        ...             opt.step()
        ...         sched.step()
        >>> [h["source"] for h in sched.history]
        ['first_batch', 'epoch', 'epoch']
        >>> math.isclose(opt.param_groups[0]["lr"], 1.0 / sched.history[-1]["lipschitz"])
        True

    Reference: Yedida & Saha, *LipschitzLR*, §3.1, §4.2-§5.3, §7.3-§7.4, §8.

    .. note::
        The paper's constants are not upper bounds on the gradient norm (see
        :mod:`theorylr.lipschitz.closed_form`); ``rigorous=True`` is the correct variant: with it (and
        ``weight_decay`` set to the optimizer's), a plain SGD step on a batch whose bound does not exceed the ``L``
        in force moves the last layer's weight matrix by at most ``multiplier`` in Frobenius norm, the paper's
        motivation (§3.1) made true; ``L`` comes from the previous epoch, so a batch with a larger bound can still
        move it further. The paper's form is the default because it is what the paper ran.

        With ``activation_norm="fro"``, ``K_z / m`` shrinks like ``1/sqrt(m)``, so a small final batch of an epoch
        gives the largest ``L_b`` and sets ``L`` (use equal batches, e.g. ``drop_last=True``, if that is unwanted).
        The paper-form least-squares constant can be ``<= 0`` (it subtracts norms); :meth:`step` then raises.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        loss: str = "softmax",
        *,
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        weight_decay: float = 0.0,
        initial_lr: float | None = None,
        rigorous: bool = False,
        tracker: ActivationTracker | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer (got {type(optimizer).__name__})")
        check_number("weight_decay", weight_decay, min_value=0.0)
        if initial_lr is not None:
            check_number("initial_lr", initial_lr, min_value=0.0, min_inclusive=False)
        other = getattr(optimizer, "_theorylr_lipschitz_lr", lambda: None)()
        if other is not None and not other.tracker.closed:
            raise ValueError(
                "optimizer already has a LipschitzLR: two would each rescale the lr by their own update and compound "
                "(an lr 100x off); close() the first one (or leave its `with` block) before building another"
            )
        self.model = model
        if tracker is not None:  # e.g. theorylr.distributed.DistributedActivationTracker: its own settings apply
            if not isinstance(tracker, ActivationTracker) or tracker.model is not model or tracker.loss != loss:
                raise ValueError(
                    "tracker must be an ActivationTracker built on this model with the same loss (got "
                    f"{type(tracker).__name__})"
                )
            # The tracker's own settings apply: a different one asked for here would be ignored silently.
            asked = {
                "rigorous": (rigorous, False, tracker.rigorous),
                "activation_norm": (activation_norm, "fro", tracker.activation_norm),
                "weight_bound": (weight_bound, None, tracker.constant_weight_bound),
                "num_classes": (num_classes, None, tracker.num_classes),
            }
            for name, (value, default, used) in asked.items():
                if value != default and value != used:
                    raise ValueError(
                        f"{name}={value!r} differs from the tracker's ({used!r}), whose settings apply: build the "
                        f"tracker with {name}={value!r}, or leave {name} out here"
                        + (
                            " (the distributed tracker has the paper's forms only)"
                            if name == "rigorous" and type(tracker).__name__ == "DistributedActivationTracker"
                            else ""
                        )
                    )
            if penultimate is not None:
                raise ValueError("penultimate must be left out with tracker=: the tracker's module applies")
            self.tracker = tracker
        else:
            self.tracker = ActivationTracker(
                model,
                loss,
                num_classes=num_classes,
                penultimate=penultimate,
                activation_norm=activation_norm,
                weight_bound=weight_bound,
                rigorous=rigorous,
            )
        self.weight_decay = float(weight_decay)
        self.initial_lr = None if initial_lr is None else float(initial_lr)
        self.history: list[dict[str, Any]] = []
        self._lipschitz_lrs: list[float] | None = None  # what this scheduler alone would have set, this epoch
        self._constructed_lrs: list[float] | None = None  # the lrs its construction wrote (see load_state_dict)
        self._first_step_handle: Any = None
        if self.initial_lr is None:
            ref = weakref.ref(self)

            # Runs eagerly under torch.compile: it reads L on the host once and removes itself. A step compiled
            # with fullgraph=True cannot break the graph here, and dynamo's error then gives this reason.
            @torch.compiler.disable(reason=_FIRST_STEP_UNDER_COMPILE)
            def first_step_hook(opt: Optimizer, args: Any, kwargs: Any) -> None:
                sched = ref()
                if sched is not None:
                    sched._first_step()

            self._first_step_handle = optimizer.register_step_pre_hook(first_step_hook)
        # Removes both hooks when the scheduler is closed or garbage-collected (the hooks hold weak references).
        self._finalizer = weakref.finalize(self, _close, self.tracker, self._first_step_handle)
        super().__init__(optimizer)
        # What the groups hold now, as load_state_dict will read them: a float32 tensor lr holds initial_lr rounded
        # (0.05 reads back as 0.05000000075), which the Python value would not match.
        self._constructed_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        optimizer._theorylr_lipschitz_lr = weakref.ref(self)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------------------------
    # Schedule
    # ------------------------------------------------------------------------------------------------------------
    @property
    def multipliers(self) -> list[float]:
        """The multipliers: the groups' learning rates when the scheduler was built."""
        return [float(b) for b in self.base_lrs]

    def observe_targets(self, targets: Tensor) -> None:
        """Give the latest batch's targets to the tracker (required for least squares, optional otherwise)."""
        self.tracker.observe_targets(targets)

    def _record(self, epoch: int, source: str, values: dict[str, Any] | None, lrs: list[float]) -> None:
        entry: dict[str, Any] = {"epoch": epoch, "source": source, "lr": list(lrs)}
        if values is None:
            entry.update(dict.fromkeys(EPOCH_FIELDS), batches=0)
        else:
            entry.update(values)
        self.history.append(entry)

    @staticmethod
    def _checked(value: float, what: str) -> float:
        if not (math.isfinite(value) and value > 0):
            raise DegenerateLipschitzError(
                f"LipschitzLR: {what} gave L = {value!r}, which cannot set lr = multiplier / L. L = 0 means all-zero "
                "penultimate activations (e.g. ReLUs killed by a diverging step: lower the multiplier); nan comes "
                "from the paper's least-squares form when K K_z <= ||y|| (it subtracts norms; use rigorous=True) or "
                "from non-finite activations; inf means activations or weights that overflowed (a diverging run: "
                "lower the multiplier)"
            )
        return value

    def _factors(self) -> list[float]:
        """What other schedulers multiply each group's lr by now: its lr over its multiplier (1 when alone)."""
        return [
            float(group["lr"]) / m if m != 0.0 else 1.0
            for group, m in zip(self.optimizer.param_groups, self.multipliers)
        ]

    def _check_groups(self) -> None:
        if len(self.optimizer.param_groups) != len(self.base_lrs):
            raise RuntimeError(
                f"LipschitzLR: the optimizer has {len(self.optimizer.param_groups)} param groups, and had "
                f"{len(self.base_lrs)} when the scheduler was built: a group added later has no multiplier. Add "
                "every group first, or build a new LipschitzLR after add_param_group (close() this one)"
            )

    def _new_lrs(self, lipschitz: float, absolute: bool) -> list[float]:
        self._check_groups()
        target = [m / lipschitz for m in self.multipliers]
        if absolute:
            lrs = target
        elif self._lipschitz_lrs is None:  # the lazy first lr: keep what other schedulers applied since construction
            lrs = [factor * t for factor, t in zip(self._factors(), target)]
        else:
            # Relative update: keeps factors other schedulers applied since the last update (ChainedScheduler).
            lrs = [
                float(group["lr"]) / old * new if old != 0.0 else new
                for group, old, new in zip(self.optimizer.param_groups, self._lipschitz_lrs, target)
            ]
        self._lipschitz_lrs = target
        return lrs

    def get_lr(self) -> list[float | Tensor]:
        """The learning rates for the next epoch (called by :meth:`step`; reads ``L`` once, on the host)."""
        if self._is_initial:
            # Construction, or SequentialLR restarting this scheduler as its first phase.
            self.history = []
            if self.initial_lr is not None:
                lrs = [self.initial_lr] * len(self.optimizer.param_groups)
                self._lipschitz_lrs = [self.initial_lr] * len(lrs)
                self._record(self.last_epoch, "initial_lr", None, lrs)
                self._constructed_lrs = list(lrs)
                return list[float | Tensor](lrs)
            self._lipschitz_lrs = None
            self._constructed_lrs = [float(group["lr"]) for group in self.optimizer.param_groups]
            return [group["lr"] for group in self.optimizer.param_groups]
        values = self.tracker.epoch_values(weight_decay=self.weight_decay)
        if values is None and self.tracker.closed:
            raise RuntimeError(
                "LipschitzLR.step(): the tracker is closed (close() removed its hook), so no forward pass was recorded "
                "since the last step; build a new LipschitzLR to go on"
            )
        if values is None:
            raise RuntimeError(
                "LipschitzLR.step(): no training forward pass was recorded since the last step (the tracker records "
                "forward passes of the model in training mode that call the tracked module, "
                f"{self.tracker.module_label()}); step the scheduler once per epoch, after training. A "
                "torch.compile'd model compiled before the scheduler was built does not call hooks added later: "
                "compile after building it, or compile the model without its head (see ActivationTracker)"
            )
        epoch = self.last_epoch - 1  # counted from 0, as torch's schedulers count
        lipschitz = self._checked(values["lipschitz"], f"epoch {epoch} (counted from 0: training epoch {epoch + 1})")
        lrs = self._new_lrs(lipschitz, absolute=self.last_epoch == 0)
        self._record(self.last_epoch, "epoch", values, lrs)
        self.tracker.reset_epoch()
        return list[float | Tensor](lrs)

    def _first_step(self) -> None:
        """The lazy first-epoch learning rate, from the batch seen before the first ``optimizer.step()``."""
        if self._first_step_handle is not None:
            self._first_step_handle.remove()
            self._first_step_handle = None
        if self.last_epoch != 0 or self._lipschitz_lrs is not None:
            return  # not in charge (a later SequentialLR phase) or already set (e.g. loaded from a checkpoint)
        if self.tracker.batch_size is None:
            raise RuntimeError(
                "LipschitzLR could not set the first epoch's lr: no training forward pass of the model was seen "
                "before the first optimizer.step() (model in eval mode, the forward pass runs inside step(closure), "
                f"or forward never calls the tracked module, {self.tracker.module_label()}); pass initial_lr=, or "
                "penultimate= to name the right module"
            )
        value = self.tracker.batch_lipschitz(weight_decay=self.weight_decay)
        lipschitz = self._checked(float(value), "the first batch")
        lrs = self._new_lrs(lipschitz, absolute=False)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            if isinstance(group["lr"], Tensor):  # a tensor lr stays the same tensor (a compiled step's input)
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [
            group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"]
            for group in self.optimizer.param_groups
        ]
        bound = self.tracker.weight_bound()
        self.history.append(
            {
                "epoch": 0,
                "source": "first_batch",
                "lr": list(lrs),
                "lipschitz": lipschitz,
                "data_lipschitz": float(self.tracker.batch_lipschitz()),
                "k_z": float(self.tracker.batch_k_z()),
                "batch_size": self.tracker.batch_size,
                "max_k_z": float(self.tracker.batch_k_z()),
                "weight_bound": float(bound),
                "batches": 1,
            }
        )

    # ------------------------------------------------------------------------------------------------------------
    # Life cycle and checkpoints
    # ------------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the forward hook and the first-step hook (idempotent); the history stays readable."""
        self._finalizer()
        self._first_step_handle = None

    def __enter__(self) -> LipschitzLR:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            "LipschitzLR cannot be pickled or copied: its hooks are bound to a live model and optimizer, which a copy "
            "would not follow. Save scheduler.state_dict() (torch.save works on it) and, after loading, build a new "
            "LipschitzLR on the model and optimizer and call load_state_dict()"
        )

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: torch's fields, the history, and the tracker's partial-epoch accumulators."""
        state = {key: value for key, value in self.__dict__.items() if key not in _NOT_STATE}
        state["history"] = [dict(h) for h in self.history]
        state["tracker"] = self.tracker.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the model, tracker and hooks of this instance are kept)."""
        tracker_state = state_dict.get("tracker")
        # Built after the optimizer's state was loaded, this scheduler's construction wrote its initial lr over the
        # restored one: while the lrs are still those it wrote, put back the lrs of the checkpoint.
        untouched = [float(g["lr"]) for g in self.optimizer.param_groups] == getattr(self, "_constructed_lrs", None)
        state = {key: value for key, value in state_dict.items() if key not in _NOT_STATE}
        state["history"] = [dict(h) for h in state.get("history", [])]
        self.__dict__.update(state)
        last = state_dict.get("_last_lr")
        if untouched and last is not None and len(last) == len(self.optimizer.param_groups):
            for group, lr in zip(self.optimizer.param_groups, last):
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(float(lr))
                else:
                    group["lr"] = float(lr)
        self._constructed_lrs = None
        if tracker_state is not None:
            self.tracker.load_state_dict(tracker_state)


_FIRST_STEP_UNDER_COMPILE = (
    "LipschitzLR sets the first epoch's lr from the first batch in a step pre-hook that reads L on the host, once; "
    "a step compiled with fullgraph=True cannot run it: pass initial_lr= to LipschitzLR, or take the first "
    "optimizer.step() uncompiled"
)


def _close(tracker: ActivationTracker, handle: Any) -> None:
    tracker.close()
    if handle is not None:
        handle.remove()
