"""The three rules under ``torch.distributed``: reducing norms, Lipschitz statistics and curvature across ranks.

What each rule needs when the data (DDP) or the parameters (FSDP-style sharding) are split across processes:

- **LARS / PercentDelta under DDP** need nothing: after DDP's gradient all-reduce every rank holds the same
  parameters and the same averaged gradient, so every per-layer norm, ratio and step is the one a single process
  computes on the concatenated batch. **With sharded parameters** the local norms are norms of shards:
  :func:`sharded_norm_fn` is a ready ``norm_fn`` for :class:`~theorylr.optim.lars.LARS` that reduces the partial
  norms in one collective per step.
- **LipschitzLR** reads ``K_z`` from the penultimate activations of a batch, which under DDP each rank sees only a
  part of. :class:`DistributedActivationTracker` combines the ranks' statistics into those of the global batch
  (``m`` = the global batch size), so every rank computes the same constant, equal to a single process's on the
  union of the data; :func:`distributed_lipschitz_lr` builds a :class:`~theorylr.lipschitz.scheduler.LipschitzLR`
  on it. The adaptive optimizers (:class:`~theorylr.optim.adaptive.AdaMo` and friends) take it as ``tracker=``.
- **Smoothness** (:func:`~theorylr.estimate.hessian_spectral_norm`, :func:`~theorylr.estimate.smoothness`)
  averages Hessian-vector products through its ``reduce`` hook: :func:`mean_reduce` is that hook, weighted by each
  rank's sample count when the shards are unequal.

Every function here issues collectives on ``process_group`` (``None``: the default group), so every rank of the
group must make the same calls in the same order, as with any collective. Launch with ``torchrun`` (see
``examples/ddp_lars.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from theorylr._validation import check_bool, check_choice, check_int, check_number
from theorylr.lipschitz.closed_form import binary_cross_entropy, l2_term, least_squares_nn, softmax_cross_entropy
from theorylr.lipschitz.scheduler import LipschitzLR
from theorylr.lipschitz.tracker import ActivationTracker, EpochStats, stats_values
from theorylr.optim._base import resolve_foreach
from theorylr.optim._norms import NormFn, local_norms

__all__ = [
    "DISTRIBUTED_ACTIVATION_NORMS",
    "DistributedActivationTracker",
    "distributed_lipschitz_lr",
    "max_reduce",
    "mean_reduce",
    "sharded_norm_fn",
]

#: The ``activation_norm`` values whose ``K_z`` of a stacked batch follows from the ranks' own: the Frobenius norm
#: (square root of the sum of squares) and the largest row norm (the maximum).
DISTRIBUTED_ACTIVATION_NORMS: tuple[str, ...] = ("fro", "max_row")

# Pending per-batch rows are packed into one tensor every this many batches (bounded Python overhead per epoch).
_PACK_EVERY = 256


def _check_group_arg(process_group: Any) -> None:
    if process_group is dist.GroupMember.NON_GROUP_MEMBER:  # new_group's value on the ranks it leaves out
        raise ValueError(
            f"process_group: this rank (global rank {dist.get_rank()}) is not a member of the group "
            "(torch.distributed.new_group returned GroupMember.NON_GROUP_MEMBER here); call it only on the group's "
            "ranks"
        )
    if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
        raise ValueError(
            "process_group must be a torch.distributed ProcessGroup (e.g. from torch.distributed.new_group) or None "
            f"for the default group (got {type(process_group).__name__})"
        )


def _require_initialized(what: str, process_group: Any = None) -> None:
    """Raise unless torch.distributed is initialised and this rank belongs to ``process_group``: on a rank outside
    the group torch's collectives do nothing (with a warning) and ``get_world_size`` is -1, so a result would be
    this rank's own values, or their negation."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{what} needs an initialised torch.distributed process group (call torch.distributed.init_process_group, "
            "e.g. under torchrun)"
        )
    if process_group is not None and dist.get_rank(process_group) < 0:
        raise ValueError(
            f"{what}: this rank (global rank {dist.get_rank()}) is not a member of process_group; call it only on "
            "the group's ranks"
        )


def _reduce_dtype(device: torch.device, dtypes: Sequence[torch.dtype]) -> torch.dtype:
    """float64 for the tiny reduction buffers (no squared-norm underflow), except where a device has none."""
    if device.type == "mps":
        return torch.float32
    return torch.float64 if device.type in ("cpu", "cuda", "xpu") else torch.promote_types(torch.float32, dtypes[0])


def _collective_device(process_group: Any) -> torch.device:
    """Where a buffer for a collective on ``process_group`` must live: the current CUDA device for NCCL, else CPU."""
    backend = str(dist.get_backend(process_group))
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------------
# LARS with sharded parameters
# ----------------------------------------------------------------------------------------------------------------
def _check_same_count(count: int, device: torch.device, process_group: Any) -> None:
    """Raise on every rank when the ranks pass different numbers of tensors (one small all-reduce, one host read)."""
    both = torch.tensor([count, -count], dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=process_group)
    most, fewest = int(both[0]), -int(both[1])
    if most != count or fewest != count:
        raise RuntimeError(
            f"sharded_norm_fn: the ranks passed different numbers of tensors ({fewest} to {most}; this rank "
            f"{count}): every rank must pass the same logical tensors. A parameter without a gradient on some ranks "
            "(FSDP's use_orig_params leaves out-of-shard ones at None) is skipped there: give it a zero gradient"
        )


def sharded_norm_fn(
    process_group: Any = None, *, foreach: bool | None = None, check_counts: bool | None = None
) -> NormFn:
    r"""A LARS ``norm_fn`` for parameters sharded across the ranks of ``process_group``: one all-reduce per step.

    Each rank holds a shard :math:`x_r` of every logical tensor :math:`x` (FSDP's flat shards, a tensor-parallel
    split, or any partition of the elements, empty shards included). The norms of the whole tensors follow from the
    shards':

    .. code-block:: text

        ||x||_2   = sqrt(sum_r ||x_r||_2^2)
        ||x||_1   =      sum_r ||x_r||_1
        ||x||_inf =      max_r ||x_r||_inf

    The returned hook computes the local norms of all ``2 n`` tensors LARS passes it (weights and denominators)
    with :func:`~theorylr.optim.lars.local_norms`, packs them into one float64 buffer (squared for ``"l2"``) and
    reduces it with a single ``all_reduce`` (``SUM``, or ``MAX`` for ``"linf"``): one collective per param group
    and step, whatever the number of tensors, and no value read on the host; on the CPU it is preceded by a check
    that the ranks pass as many tensors (``check_counts``).

    Args:
        process_group: the group the parameters are sharded over (default ``None``: the default group).
        foreach: compute the local norms with ``torch._foreach_norm`` (default ``None``: when the tensors allow it).
        check_counts: first all-reduce the number of tensors each rank passes (two numbers), so that ranks whose
            lists differ get a clear error, every one of them, instead of a collective of mismatched sizes (a hang,
            or garbage norms on one rank). Reading the count back is a host sync, so the default ``None`` checks on
            the CPU (gloo) and not on an accelerator; ``True`` / ``False`` force it.

    Returns:
        ``norm_fn(tensors, norm) -> list of 0-dim tensors`` for :class:`~theorylr.optim.lars.LARS` (``norm_fn=``).

    Example:
        >>> import torch.distributed as dist
        >>> from theorylr.optim.lars import LARS
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> shard = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # this rank's part of a sharded weight
        >>> opt = LARS([shard], lr=0.1, norm_fn=sharded_norm_fn())
        >>> [float(n) for n in opt.norm_fn([shard.detach(), torch.tensor([0.0, 10.0])], "l2")]
        [5.0, 10.0]
        >>> dist.destroy_process_group()

    Reference: Gitman et al., *Convergence Analysis of Gradient Descent Algorithms with Proportional Updates*,
    eq. (1): the ratio takes norms of whole layers, which is what this restores under sharding.

    .. note::
        Every rank must pass the same list (the same logical tensors in the same order). A parameter whose
        gradient is ``None`` on some ranks only (FSDP with ``use_orig_params=True`` leaves out-of-shard
        parameters without one) is left out of LARS's list on those ranks: the counts then differ, which
        ``check_counts`` reports; give such parameters a zero gradient on every rank (``p.grad = torch.zeros_like(p)``
        when it is ``None``) before ``step()``. A flat FSDP
        parameter that concatenates several layers gets one ratio for all of them. With ``norm="mean_ratio"``
        LARS divides by the *local* element count, so the reduced value is not the global mean element-wise
        ratio; use ``"l1"``, ``"l2"`` or ``"linf"`` with sharded parameters. Parameters that are ``DTensor`` s
        (FSDP2) are not supported by LARS's update (it mixes them with plain ratio tensors).
    """
    _check_group_arg(process_group)
    if foreach is not None:
        check_bool("foreach", foreach)

    if check_counts is not None:
        check_bool("check_counts", check_counts)

    return _ShardedNormFn(process_group, foreach, check_counts)


class _ShardedNormFn:
    """What :func:`sharded_norm_fn` returns: the hook, holding its process group (see there).

    It cannot be pickled (a process group cannot, and a rank's group is no other process's): pickling a LARS that
    holds one says what to do instead. ``copy.copy`` and ``copy.deepcopy`` keep the same hook, on the same group.
    """

    sharded = True  # LARS refuses it beside norm="mean_ratio", whose mean divides by the local numel

    def __init__(self, process_group: Any, foreach: bool | None, check_counts: bool | None) -> None:
        self.process_group = process_group
        self.foreach = foreach
        self.check_counts = check_counts

    def __reduce__(self) -> Any:
        raise TypeError(
            "a sharded_norm_fn cannot be pickled (it holds a process group): save optimizer.state_dict() instead, "
            "and after loading build LARS(..., norm_fn=sharded_norm_fn(group)) and call load_state_dict()"
        )

    def __copy__(self) -> _ShardedNormFn:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _ShardedNormFn:
        return self

    def __call__(self, tensors: list[Tensor], norm: str) -> list[Tensor]:
        process_group, foreach, check_counts = self.process_group, self.foreach, self.check_counts
        check_choice("norm", norm, ("l1", "l2", "linf"))
        _require_initialized("sharded_norm_fn", process_group)
        on_cpu = all(t.device.type == "cpu" for t in tensors)
        if check_counts or (check_counts is None and on_cpu):
            _check_same_count(len(tensors), tensors[0].device if tensors else torch.device("cpu"), process_group)
        if not tensors:
            return []
        device = tensors[0].device
        if any(t.device != device for t in tensors):
            raise ValueError("sharded_norm_fn needs all tensors of a param group on one device")
        use_foreach = resolve_foreach(foreach, tensors)
        dtype = _reduce_dtype(device, [t.dtype for t in tensors])
        parts = torch.stack([n.to(dtype) for n in local_norms(tensors, norm, foreach=use_foreach)])
        if norm == "linf":
            # MAX does not carry a nan through (gloo keeps the first operand of a comparison with nan): the nan
            # flags travel beside the values, in the same collective, as SUM carries them for l1 and l2.
            n = parts.numel()
            both = torch.cat([torch.where(parts.isnan(), 0.0, parts), parts.isnan().to(dtype)])  # inf stays inf
            dist.all_reduce(both, op=dist.ReduceOp.MAX, group=process_group)
            parts = torch.where(both[n:] > 0, math.nan, both[:n])
            return list(parts.unbind(0))
        if norm == "l2":
            parts = parts.square()
        dist.all_reduce(parts, op=dist.ReduceOp.SUM, group=process_group)
        if norm == "l2":
            parts = parts.sqrt()
        return list(parts.unbind(0))


# ----------------------------------------------------------------------------------------------------------------
# Smoothness: the reduce hook of the curvature estimators
# ----------------------------------------------------------------------------------------------------------------
def mean_reduce(process_group: Any = None, *, num_samples: int | None = None) -> Callable[[Tensor], Tensor]:
    r"""The ``reduce`` hook of :mod:`theorylr.estimate` for data-parallel estimation: the average over ranks.

    Rank ``r`` holds ``n_r`` samples and computes the mean loss and the Hessian-vector products of its own shard;
    the full data's are the sample-weighted average

    .. math:: \bar t = \sum_r \frac{n_r}{N}\, t_r, \qquad N = \sum_r n_r,

    which the hook returns on every rank with one ``all_reduce`` per call (``n_r / N`` is computed once, here, with
    one more collective). Without ``num_samples`` the weights are ``1 / world_size`` (equal shards). Since every
    rank then sees the same operator, the power or Lanczos iteration runs identically everywhere and the
    estimate equals the single-process estimate on the union of the data.

    Args:
        process_group: the data-parallel group (default ``None``: the default group).
        num_samples: this rank's number of samples ``n_r`` (default ``None``: equal shards). A rank with 0 samples
            contributes zeros; it must still take part in every collective, so it runs the estimator on a stand-in
            batch (one example of the data's shape, say) whose values are ignored.

    Returns:
        ``reduce(t) -> Tensor``: a new tensor (the input is not modified).

    Example:
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> reduce = mean_reduce(num_samples=12)
        >>> reduce(torch.tensor([2.0, 4.0]))
        tensor([2., 4.])
        >>> dist.destroy_process_group()

    Use, with ``local_data = (x_r, y_r)`` the rank's shard:
    ``hessian_spectral_norm(model, loss_fn, local_data, reduce=mean_reduce(num_samples=len(y_r)))``
    (the number of samples, not ``len(local_data)``, which is 2 for a pair).

    Reference: the Hessian of the mean loss is the sample-weighted mean of the shards' Hessians; the estimator is
    the paper's Algorithm 2 (*A Theoretical and Empirical Study on the Convergence of Adam with an "Exact" Constant
    Step Size*), unchanged.
    """
    _check_group_arg(process_group)
    _require_initialized("mean_reduce", process_group)
    world = dist.get_world_size(process_group)
    if num_samples is None:
        weight = 1.0 / world
    else:
        check_int("num_samples", num_samples, min_value=0)
        total = torch.tensor([float(num_samples)], dtype=torch.float64, device=_collective_device(process_group))
        dist.all_reduce(total, group=process_group)
        count = float(total[0])
        if count <= 0:
            raise ValueError("mean_reduce: num_samples is 0 on every rank (no data to average)")
        weight = num_samples / count

    def reduce(t: Tensor) -> Tensor:
        # A rank without samples (weight 0) contributes zeros, whatever it computed (the mean of no sample is nan)
        out = t.mul(weight) if weight else torch.zeros_like(t)
        dist.all_reduce(out, group=process_group)
        return out

    return reduce


def max_reduce(process_group: Any = None) -> Callable[[Tensor], Tensor]:
    r"""The ``max_fn`` hook of :class:`~theorylr.optim.adaptive.AdaMo`, :class:`~theorylr.optim.adaptive.AutoAdam`
    and :class:`~theorylr.optim.adaptive.AdaptiveRMSprop` for sharded parameters: the elementwise maximum over
    ranks.

    With ``lipschitz="observed"`` these optimizers take ``L_t = max_l ||g_l||`` (and the weight bound
    ``K_w = max_l ||w_l||``) over every parameter tensor. Under ``ZeroRedundancyOptimizer`` (or FSDP with whole
    tensors per rank) each rank's optimizer holds a shard of the tensors, so its maxima are those of the shard;
    the global maxima are the maxima of the ranks' ones, which one ``all_reduce(MAX)`` gives every rank. Every
    rank then takes the same step as a single process holding all the parameters.

    Args:
        process_group: the group over which the parameters are sharded (default ``None``: the default group).

    Returns:
        ``max_fn(t) -> Tensor``: a new tensor (the input is not modified).

    Example:
        >>> import torch.distributed as dist
        >>> from theorylr.optim.adaptive import AdaMo
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> max_reduce()(torch.tensor([2.0, 4.0]))
        tensor([2., 4.])
        >>> w = nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AdaMo([w], max_fn=max_reduce())  # or ZeroRedundancyOptimizer(..., AdaMo, max_fn=max_reduce())
        >>> (w ** 2).sum().backward(); opt.step(); w.detach()
        tensor([ 2.4000, -3.2000])
        >>> dist.destroy_process_group()

    Reference: Yedida & Saha, *LipschitzLR*, §6 (``L_t`` of the whole network); the maximum over a partition is the
    maximum of the parts' maxima.

    .. note::
        Tensors split across ranks (FSDP's flat parameters) are not covered: a tensor's norm would then be the norm
        of its pieces, which a maximum does not give. ``ZeroRedundancyOptimizer`` keeps whole tensors.
    """
    _check_group_arg(process_group)
    _require_initialized("max_reduce", process_group)

    def max_fn(t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=process_group)
        return out

    return max_fn


# ----------------------------------------------------------------------------------------------------------------
# LipschitzLR: K_z and m of the global batch
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    """One local batch: its ``K_z`` share (``K_z^2`` for "fro", ``K_z`` for "max_row"), ``m``, and for least
    squares the weight bound at the forward pass and ``||y||^2`` once the targets are given."""

    share: Tensor
    m: int
    bound: Tensor | None = None
    y_sq: Tensor | None = None


@dataclass(frozen=True)
class _Global:
    k_z: Tensor  # (n,) K_z of each global batch
    m: Tensor  # (n,) global batch sizes (float)
    y_norm: Tensor | None  # (n,) ||y|| of each global batch (least squares)
    bound: Tensor | None  # (n,) the weight bound at each forward pass (least squares; replicated)
    counts: Tensor  # (n,) the batch sizes in float64: exact integers for the counts


class DistributedActivationTracker(ActivationTracker):
    r"""An :class:`~theorylr.lipschitz.tracker.ActivationTracker` whose statistics are those of the global batch.

    Under data parallelism the global batch ``b`` is the union of the ranks' local batches ``b_r`` (the ``i``-th
    training forward pass of every rank), and its penultimate activation matrix is the row-stack of theirs. Its
    statistics follow from the local ones:

    .. code-block:: text

        K_z(b) = sqrt(sum_r K_z(b_r)^2)    (activation_norm="fro")
        K_z(b) = max_r K_z(b_r)            (activation_norm="max_row")
        m(b)   = sum_r m(b_r)              ||y_b|| = sqrt(sum_r ||y_{b_r}||^2)   (least squares)

    and the closed form is applied to them (eq. 23, 18 or 9 of the paper, as in the parent class). So every rank
    gets the same ``L_b``, the one a single process computes on the concatenated batch.

    **Collectives.** The forward hook stays local (one norm per batch, no communication). The ranks' rows are
    combined when read: :meth:`epoch_stats` with two ``all_reduce`` calls for the whole epoch (the ranks' batch counts,
    checked equal, then the rows), and :meth:`batch_lipschitz`,
    :meth:`batch_k_z` and :attr:`batch_size` with one ``all_reduce`` per batch (cached: repeated reads of the same
    batch communicate once). The per-step readers (the adaptive optimizers in ``"closed_form"`` mode) therefore
    add one tiny collective per step; :class:`~theorylr.lipschitz.scheduler.LipschitzLR` adds two per epoch (and
    one for the first batch without ``initial_lr``). Tensor reads stay on the device except :attr:`batch_size` (a
    Python int) and, in :meth:`epoch_stats`, the batch counts and the ``examples`` count (host reads, once per
    call). The per-batch reads do not check the ranks' counts (that would be a host read per step): a rank that
    has made more passes than the others pairs its latest batch with theirs, and every rank must read as often as
    the others. So torch's uneven-input ``Join`` context does not serve the per-step readers: a rank that has
    joined shadows DDP's collectives, not this one, and the others wait for it until the group's timeout. Give the
    ranks the same number of batches (``DistributedSampler`` pads), or use ``LipschitzLR``, whose per-epoch read
    checks the counts and raises.

    Args:
        model: the local model (or its DDP wrapper).
        loss: ``"softmax"`` (default), ``"bce"`` or ``"least_squares"``.
        process_group: the data-parallel group (default ``None``: the default group).
        num_classes, penultimate, weight_bound: as for :class:`~theorylr.lipschitz.tracker.ActivationTracker`.
        activation_norm: ``"fro"`` (default) or ``"max_row"`` (see :data:`DISTRIBUTED_ACTIVATION_NORMS`).
        rigorous: must be ``False`` (see the note).

    Example:
        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> tracker = DistributedActivationTracker(model, "softmax")
        >>> _ = model(torch.randn(16, 4))
        >>> bool(torch.isclose(tracker.batch_lipschitz(), 2 / 3 * tracker.batch_k_z() / 16))
        True
        >>> tracker.close(); dist.destroy_process_group()

    Reference: Yedida & Saha, *LipschitzLR*, §4.2-§5.3 (closed forms in ``K_z`` and ``m``), §7.4 (``m`` the batch
    size), §8 (hooks).

    .. note::
        Every rank must make the same number of training-mode forward passes through the hooked module (as DDP
        requires of its backward passes anyway): batch ``i`` of one rank is combined with batch ``i`` of the
        others. A rank whose share of a batch is empty (no rows: an uneven last batch) still counts that pass: it
        records a row of zeros (:meth:`record_empty`). A training-mode pass on one rank only (a probe) must run
        under :meth:`paused`. The weight bound
        ``K`` is read locally: under DDP the parameters are replicated, so it is the global one.

        Not supported here: ``activation_norm="spectral"`` (the spectral norm of a row-stack is not a function of
        the blocks' spectral norms; it needs the summed Gram matrices) and ``rigorous=True`` (the bound of
        :func:`~theorylr.lipschitz.bounds.gradient_norm_bound` takes a minimum over the whole batch that does not
        decompose across ranks). Both raise ``ValueError``.
    """

    _global_batches = True

    def __init__(
        self,
        model: nn.Module,
        loss: str = "softmax",
        *,
        process_group: Any = None,
        num_classes: int | None = None,
        penultimate: str | nn.Module | None = None,
        activation_norm: str = "fro",
        weight_bound: float | None = None,
        rigorous: bool = False,
    ) -> None:
        if activation_norm == "spectral":
            raise ValueError(
                "activation_norm must be one of 'fro', 'max_row' for a DistributedActivationTracker (got 'spectral': "
                "the spectral norm of the global batch does not follow from the ranks' spectral norms)"
            )
        check_choice("activation_norm", activation_norm, DISTRIBUTED_ACTIVATION_NORMS)
        check_bool("rigorous", rigorous)
        if rigorous:
            raise ValueError(
                "rigorous must be False for a DistributedActivationTracker (the rigorous bound of the global batch "
                "does not follow from the ranks' bounds); use the paper's forms (rigorous=False). A single-process "
                "tracker is no way out under DDP: it gives every rank its own L, and the replicas drift apart"
            )
        _check_group_arg(process_group)
        # Set before the parent's constructor, which calls reset_epoch().
        self.process_group = process_group
        first = next(model.parameters(), None)
        self._dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        self._rows: list[_Row] = []  # this epoch's unpacked rows
        self._packed: list[Tensor] = []  # this epoch's packed rows, (n, columns) each
        self._last: _Row | None = None  # the latest batch (stays readable across reset_epoch)
        self._recorded = 0  # batches recorded since construction: the key of the latest-batch cache
        self._latest: tuple[int, _Global] | None = None
        super().__init__(
            model,
            loss,
            num_classes=num_classes,
            penultimate=penultimate,
            activation_norm=activation_norm,
            weight_bound=weight_bound,
            rigorous=False,
        )

    # ------------------------------------------------------------------------------------------------------------
    # Recording (local, no communication)
    # ------------------------------------------------------------------------------------------------------------
    def record(self, activations: Tensor) -> None:
        """Record one local batch (the parent's bookkeeping, plus this rank's row for the global combination)."""
        super().record(activations)
        k_z = ActivationTracker.batch_k_z(self)
        m = super().batch_size
        assert m is not None
        share = k_z.square() if self.activation_norm == "fro" else k_z
        self._add_row(_Row(share, m, self.weight_bound() if self.needs_targets else None))

    def record_empty(self, activations: Tensor) -> None:
        """Record this rank's empty share of a batch as a row of zeros (``K_z = 0``, ``m = 0``, ``||y|| = 0``): the
        global batch is then the other ranks' rows, and the ranks' batches stay paired for the collective."""
        dtype = torch.float32 if activations.dtype in (torch.float16, torch.bfloat16) else activations.dtype
        zero = torch.zeros((), dtype=dtype, device=activations.device)
        bound = self.weight_bound() if self.needs_targets else None
        self._add_row(_Row(zero, 0, bound, zero.clone() if self.needs_targets else None))

    def _latest_pass(self) -> object:
        """The latest row, new for every pass, an empty share of a global batch included (:meth:`record_empty`
        leaves the parent's latest batch as it was)."""
        return self._last

    def _add_row(self, row: _Row) -> None:
        self._dtype = row.share.dtype  # what the readers return (the table itself is float64)
        self._last = row
        self._rows.append(row)
        self._recorded += 1
        if len(self._rows) > _PACK_EVERY:  # keep the latest unpacked: its targets may still come
            self._packed.append(self._pack(self._rows[:-1]))
            self._rows = self._rows[-1:]

    def observe_targets(self, targets: Tensor) -> None:
        """Attach the latest local batch's targets (least squares: their squared norm joins the batch's row)."""
        super().observe_targets(targets)
        if not self.needs_targets:
            return
        assert self._last is not None
        if self._latest is not None and self._latest[0] == self._recorded:
            raise RuntimeError(
                "observe_targets: the latest batch's constant was already used; give the targets right after the "
                "forward pass, before the optimizer step"
            )
        dtype = self._last.share.dtype
        self._last.y_sq = torch.linalg.vector_norm(targets.detach().to(dtype)).square()

    def reset_epoch(self) -> None:
        """Start a new epoch (the latest batch stays readable)."""
        super().reset_epoch()
        self._rows = []
        self._packed = []

    # ------------------------------------------------------------------------------------------------------------
    # Combination across ranks
    # ------------------------------------------------------------------------------------------------------------
    def _pack(self, rows: list[_Row]) -> Tensor:
        """Rows as one ``(n, columns)`` float64 tensor: share, m, and for least squares ||y||^2 and the bound (float64:
        the batch sizes and their sums stay exact integers past float32's 2^24, e.g. tokens of a sequence model)."""
        out = []
        for row in rows:
            share = row.share.to(torch.float64)
            cols = [share, share.new_full((), float(row.m))]
            if self.needs_targets:
                if row.y_sq is None:
                    raise RuntimeError(
                        "loss='least_squares' needs the targets of every batch: call observe_targets(y) after each "
                        "training forward pass"
                    )
                assert row.bound is not None
                cols += [row.y_sq.to(share), row.bound.to(share)]
            out.append(torch.stack(cols))
        return torch.stack(out)

    def _table(self) -> Tensor:
        parts = [*self._packed]
        if self._rows:
            parts.append(self._pack(self._rows))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _same_batch_count(self) -> int:
        """This epoch's number of batches, checked equal on every rank with one tiny ``all_reduce`` (and one host
        read): ranks that made different numbers of training passes get a ``RuntimeError`` each, where the table's
        ``all_reduce`` would abort a process or hang on tables of different lengths."""
        _require_initialized("DistributedActivationTracker", self.process_group)
        count = sum(int(t.shape[0]) for t in self._packed) + len(self._rows)
        if self._rows:
            device = self._rows[0].share.device
        else:
            device = (
                self._packed[0].device
                if self._packed
                else next((p.device for p in self.model.parameters()), torch.device("cpu"))
            )
        counts = torch.tensor([count, -count], dtype=torch.int64, device=device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=self.process_group)
        most, fewest = (int(v) for v in counts.tolist())
        if most != -fewest:
            raise RuntimeError(
                f"DistributedActivationTracker: this rank recorded {count} training batches this epoch, others "
                f"between {-fewest} and {most}; every rank must make the same number of training passes through "
                f"the tracked module ({self.module_label()}): batch i of each rank is combined with batch i of the "
                "others (run a rank's extra passes, e.g. a probe, under tracker.paused())"
            )
        return count

    def _combine(self, table: Tensor) -> _Global:
        """One collective: the global batches' statistics from every rank's rows (same count on every rank)."""
        _require_initialized("DistributedActivationTracker", self.process_group)
        group = self.process_group
        shared = 3 if self.needs_targets else 2  # the bound (column 3) is replicated: not communicated
        local = table[:, :shared]
        if self.activation_norm == "fro":  # every column is a sum
            total = local.clone()
            dist.all_reduce(total, group=group)
            k_z, m = total[:, 0].sqrt(), total[:, 1]
            y_sq = total[:, 2] if self.needs_targets else None
        else:  # max of the shares, sum of the rest: gather every rank's rows with one SUM over a zeroed buffer
            world, rank = dist.get_world_size(group), dist.get_rank(group)
            gathered = local.new_zeros((world, *local.shape))
            gathered[rank] = local
            dist.all_reduce(gathered, group=group)
            k_z, m = gathered[:, :, 0].amax(0), gathered[:, :, 1].sum(0)
            y_sq = gathered[:, :, 2].sum(0) if self.needs_targets else None
        bound = table[:, 3] if self.needs_targets else None
        dtype = self._dtype  # the readers return the activations' dtype, as the single-process tracker does
        return _Global(
            k_z.to(dtype),
            m.to(dtype),
            None if y_sq is None else y_sq.sqrt().to(dtype),
            None if bound is None else bound.to(dtype),
            m,
        )

    def _constants(self, g: _Global) -> Tensor:
        """The paper-form ``L_b`` of each global batch (vectorised over batches)."""
        if self.loss == "softmax":
            assert self.num_classes is not None
            return softmax_cross_entropy(g.k_z, g.m, self.num_classes)
        if self.loss == "bce":
            return binary_cross_entropy(g.k_z, g.m)
        assert g.bound is not None and g.y_norm is not None
        return least_squares_nn(g.bound * g.k_z, g.y_norm, g.k_z, g.m)

    def _latest_global(self) -> _Global:
        if self._last is None:
            ActivationTracker.batch_k_z(self)  # raises the parent's "no training forward pass" error
        assert self._last is not None
        if self._latest is None or self._latest[0] != self._recorded:
            self._latest = (self._recorded, self._combine(self._pack([self._last])))
        return self._latest[1]

    # ------------------------------------------------------------------------------------------------------------
    # Reading (global values, identical on every rank)
    # ------------------------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int | None:
        """``m`` of the latest global batch, the sum of the ranks' (``None`` before the first; a host read)."""
        if self._last is None:
            return None
        return int(self._latest_global().counts[0])

    def batch_k_z(self) -> Tensor:
        """``K_z`` of the latest global batch (0-dim tensor)."""
        return self._latest_global().k_z[0]

    def batch_lipschitz(self, *, weight_decay: float = 0.0) -> Tensor:
        """The latest global batch's constant ``L_b`` plus ``l2_term(weight_decay, K)`` (0-dim tensor)."""
        check_number("weight_decay", weight_decay, min_value=0.0)
        value = self._constants(self._latest_global())[0]
        if weight_decay != 0.0:
            value = value + l2_term(weight_decay, self.weight_bound().to(value.dtype))
        return value

    def epoch_stats(self, *, weight_decay: float = 0.0) -> EpochStats | None:
        """The epoch's statistics over global batches (two ``all_reduce`` calls, see :meth:`_same_batch_count`;
        ``None`` if no rank recorded a batch, or only batches empty on every rank, which do not count)."""
        check_number("weight_decay", weight_decay, min_value=0.0)
        if not self._same_batch_count():
            return None
        g = self._combine(self._table())
        # A global batch empty on every rank (rows of zeros only) is no batch, as the single-process tracker skips
        # an empty one: its 0/0 constant must not become the epoch's.
        filled = g.counts > 0
        batches = int(filled.sum())
        if batches == 0:
            return None
        values = torch.where(filled, self._constants(g), -math.inf)
        best = values.argmax()
        data = values[best]
        bound = self.weight_bound().to(device=data.device, dtype=data.dtype)
        total = data + l2_term(weight_decay, bound) if weight_decay != 0.0 else data
        return EpochStats(
            lipschitz=total,
            data_lipschitz=data,
            k_z=g.k_z[best],
            batch_size=g.counts[best],  # float64: an exact integer
            max_k_z=g.k_z.amax(),
            weight_bound=bound,
            batches=batches,
            examples=int(g.counts.sum()),
        )

    def epoch_values(self, *, weight_decay: float = 0.0) -> dict[str, Any] | None:
        """:meth:`epoch_stats` as Python numbers (two ``all_reduce`` calls and their host reads)."""
        return stats_values(self.epoch_stats(weight_decay=weight_decay))

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The parent's state plus this rank's rows of the epoch (a least-squares batch awaiting targets excluded),
        and which rank of how many wrote it: the state is per rank, so save one checkpoint per rank."""
        state = super().state_dict()
        rows = self._rows
        if rows and self.needs_targets and rows[-1].y_sq is None:
            rows = rows[:-1]
        parts = [*self._packed, *([self._pack(rows)] if rows else [])]
        state["local_rows"] = torch.cat(parts).clone() if parts else None
        if dist.is_available() and dist.is_initialized():
            state["rank"] = dist.get_rank(self.process_group)
            state["world_size"] = dist.get_world_size(self.process_group)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, on the rank that wrote it.

        Raises:
            ValueError: when ``state`` holds another rank's rows (the DDP habit of saving on rank 0 and loading
                everywhere would count rank 0's batches twice in every global ``K_z`` of the epoch so far).
        """
        saved_rank, saved_world = state.get("rank"), state.get("world_size")
        if saved_rank is not None and state.get("local_rows") is not None and dist.is_initialized():
            rank, world = dist.get_rank(self.process_group), dist.get_world_size(self.process_group)
            if (saved_rank, saved_world) != (rank, world):
                raise ValueError(
                    f"state_dict: this tracker state was saved by rank {saved_rank} of {saved_world}, and is loaded "
                    f"on rank {rank} of {world}: a mid-epoch state holds the rank's own batches, so save one "
                    "checkpoint per rank and load each on its own rank (or checkpoint at an epoch's end)"
                )
        super().load_state_dict(state)
        table = state.get("local_rows")
        self._packed = [] if table is None else [table.clone()]


def distributed_lipschitz_lr(
    optimizer: Optimizer,
    model: nn.Module,
    loss: str = "softmax",
    *,
    process_group: Any = None,
    num_classes: int | None = None,
    penultimate: str | nn.Module | None = None,
    activation_norm: str = "fro",
    weight_bound: float | None = None,
    weight_decay: float = 0.0,
    initial_lr: float | None = None,
) -> LipschitzLR:
    r"""A :class:`~theorylr.lipschitz.scheduler.LipschitzLR` whose ``L`` is that of the global batches under DDP.

    The same schedule as :class:`~theorylr.lipschitz.scheduler.LipschitzLR` (``lr_e = multiplier / L_{e-1}``,
    ``L = max_b L_b + weight_decay * K``) with ``K_z`` and ``m`` of each global batch combined across the ranks by a
    :class:`DistributedActivationTracker`: every rank sets the same learning rate, the one a single process gets on
    the union of the data. Arguments as for :class:`~theorylr.lipschitz.scheduler.LipschitzLR`, plus
    ``process_group`` (default ``None``: the default group).

    Example (on every rank, after ``init_process_group``)::

        model = DistributedDataParallel(net)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)           # lr 1.0: the paper's multiplier
        sched = distributed_lipschitz_lr(opt, model, "softmax")
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for x, y in loader:                                      # a DistributedSampler's shard
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            sched.step()                                             # two all_reduces, the same lr on every rank

    Reference: Yedida & Saha, *LipschitzLR*, §3.1, §5, §7.4 (``m`` = the batch size: here the global one).
    """
    tracker = DistributedActivationTracker(
        model,
        loss,
        process_group=process_group,
        num_classes=num_classes,
        penultimate=penultimate,
        activation_norm=activation_norm,
        weight_bound=weight_bound,
    )
    return LipschitzLR(
        optimizer,
        model,
        loss,
        tracker=tracker,
        weight_decay=weight_decay,
        initial_lr=initial_lr,
    )
