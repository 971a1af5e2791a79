"""Small pieces shared by theorylr's optimizers (torch.optim conventions)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from theorylr._validation import check_number

#: A learning rate: a Python number, or a 0-dim tensor (as torch's optimizers take, so that a compiled step does
#: not recompile when a scheduler changes it: the tensor is an input of the graph, a number a constant in it).
LR = float | Tensor

__all__ = [
    "LR",
    "add_scaled_",
    "add_times_",
    "check_lr",
    "check_real",
    "foreach_add_scaled_",
    "foreach_add_times_",
    "foreach_mul_",
    "inplace",
    "load_keeping_scalar_states",
    "params_with_grad",
    "resolve_foreach",
    "restore_scalar_states",
    "scalar_dtype",
    "scalar_lr",
    "scale_in",
    "scale_list",
    "scaled",
]

_COMPLEX = frozenset({torch.complex32, torch.complex64, torch.complex128})
_DTYPE = operator.attrgetter("dtype")

# Devices whose _foreach_* kernels we use by default (CPU included: one C++ loop instead of a Python one).
_FOREACH_DEVICES = ("cpu", "cuda", "xpu", "mps")


def check_lr(lr: Any) -> None:
    """Check a learning rate: a finite number ``>= 0``, or a one-element real floating-point tensor holding one.

    An integer tensor is refused as well as a complex one: a torch scheduler writes its new value into the tensor
    in place (``fill_``), which would truncate ``0.05`` to ``0`` and stop training without a word.

    Raises:
        ValueError: naming ``lr`` and what is allowed.
    """
    if isinstance(lr, Tensor) and not lr.is_floating_point():
        raise ValueError(
            f"lr must be a number or a one-element floating-point tensor (got a tensor of dtype {lr.dtype}): a "
            "scheduler writes the new lr into the tensor in place"
        )
    check_number("lr", lr, min_value=0.0, allow_tensor=True)


def check_real(owner: str, name: str, tensors: Sequence[Tensor], dtypes: Iterable[torch.dtype] | None = None) -> None:
    """Refuse complex ``tensors``, the argument ``name`` of the function ``owner``: a dtype check (no value is read,
    no host sync; ``dtypes``, if given, are the tensors' dtypes, e.g. a :class:`~theorylr.optim.lars.LarsLayout`'s).

    The functional steps' formulas are of real tensors: Auto-Adam's second moment takes ``g * g`` for ``|g|^2``
    (for a complex ``g`` it came out complex, and the step wrong without a word), LARS's trust ratio the norms of
    real tensors. (The optimizer classes refuse complex parameters in :func:`params_with_grad`.)

    Raises:
        ValueError: naming the argument, the dtype found, and ``torch.view_as_real`` as the way out.

    Example:
        >>> check_real("f", "params", [torch.zeros(2), torch.zeros(2, dtype=torch.complex64)])
        Traceback (most recent call last):
        ...
        ValueError: f: params must be real (got a tensor of dtype torch.complex64): ...
    """
    if torch.compiler.is_compiling():  # dynamo traces neither attrgetter nor a set's methods on dtypes
        found = any(t.is_complex() for t in tensors)
    else:  # one pass in C: the check costs the step about 0.1 us per tensor
        found = not _COMPLEX.isdisjoint(map(_DTYPE, tensors) if dtypes is None else dtypes)
    if found:
        bad = next(t.dtype for t in tensors if t.is_complex())
        raise ValueError(
            f"{owner}: {name} must be real (got a tensor of dtype {bad}): its formulas are of real tensors; "
            "pass torch.view_as_real of the complex tensors (and of their gradients) instead"
        )


def scalar_lr(lr: LR) -> LR:
    """``lr`` as the step uses it: a tensor as a 0-dim view (no copy, no host sync), a number unchanged.

    torch's optimizers take any one-element tensor, e.g. ``torch.tensor([0.1])`` of shape ``(1,)``; a shape-``(1,)``
    factor would broadcast a 0-dim parameter's in-place update to shape ``(1,)``, which torch refuses.
    """
    return lr.reshape(()) if isinstance(lr, Tensor) and lr.dim() != 0 else lr


def resolve_foreach(foreach: bool | None, params: Iterable[Tensor]) -> bool:
    """Decide whether to take the multi-tensor (``torch._foreach_*``) path.

    ``foreach=None`` (the default of every theorylr optimizer) chooses it whenever every parameter is a plain
    dense tensor on a device with foreach kernels; ``True``/``False`` force the choice.
    """
    if foreach is not None:
        return foreach
    if torch.jit.is_scripting():
        return False
    return all(type(p) is torch.Tensor or isinstance(p, torch.nn.Parameter) for p in params) and all(
        p.device.type in _FOREACH_DEVICES for p in params
    )


def params_with_grad(group: dict[str, Any], owner: str) -> tuple[list[Tensor], list[Tensor]]:
    """The group's parameters that have a gradient, and those gradients (never modified).

    Raises:
        RuntimeError: if a gradient is sparse or a parameter complex (``owner`` names the optimizer).
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        grad = p.grad  # read once: each read is a call into torch
        if grad is None:
            continue
        if grad.is_sparse:
            raise RuntimeError(f"{owner} does not support sparse gradients; use a dense optimizer for that parameter")
        if p.is_complex():
            raise RuntimeError(
                f"{owner} does not support complex parameters (got {p.dtype}): its norms are of real tensors; "
                "optimize torch.view_as_real(p) instead"
            )
        params.append(p)
        grads.append(grad)
    return params, grads


def scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a parameter's scalar state (norms, ratios, running scales): the parameter's, at least float32."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def load_keeping_scalar_states(
    optimizer: torch.optim.Optimizer,
    state_dict: dict[str, Any],
    keys: Iterable[str],
    check: Callable[[dict[str, Any]], None],
    required: Sequence[str] = (),
    allowed: Collection[str] | None = None,
) -> None:
    """``torch.optim.Optimizer.load_state_dict``, then :func:`restore_scalar_states` from the same dict torch
    loaded: the one the ``register_load_state_dict_pre_hook`` hooks returned (e.g. a checkpoint remapped to
    another parameter order), not the caller's. The hooks run once, here, and are set aside during torch's load.

    Before anything is loaded, ``check`` validates every saved group's hyperparameters (over the defaults, which
    fill the keys a group lacks), as the constructor and ``add_param_group`` do: a checkpoint with ``lr=-1`` or
    ``momentum=1.5`` is refused with the same error, and the optimizer is left as it was. So is a parameter's
    saved state that lacks one of the ``required`` keys, or holds a key outside ``allowed`` (the checkpoint of
    another optimizer: Adam's ``exp_avg`` in LARS), which would otherwise fail at the next step with a bare
    ``KeyError`` or be carried along unused while the optimizer starts afresh.

    The ``register_load_state_dict_post_hook`` hooks run last, after the scalar states are restored: they see,
    and may change, the state the next step uses (torch's load would run them before the restore).
    """
    state_dict = state_dict.copy()
    hooks = optimizer._optimizer_load_state_dict_pre_hooks
    for hook in hooks.values():
        result = hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    for group in state_dict.get("param_groups", []):
        check({**optimizer.defaults, **{k: v for k, v in group.items() if k != "params"}})
    for index, entry in state_dict.get("state", {}).items():
        missing = [key for key in required if entry and key not in entry]
        foreign = [] if allowed is None else sorted(key for key in entry if key not in allowed)
        if missing or foreign:
            wrong = f"not {missing}" if missing else f"{foreign}, which {type(optimizer).__name__} does not keep"
            raise ValueError(
                f"state_dict: the saved state of parameter {index} has {sorted(entry)}, {wrong}: it is not a "
                f"checkpoint of {type(optimizer).__name__} (load it into the optimizer that saved it)"
            )
    post_hooks = optimizer._optimizer_load_state_dict_post_hooks
    optimizer._optimizer_load_state_dict_pre_hooks = type(hooks)()
    optimizer._optimizer_load_state_dict_post_hooks = type(post_hooks)()
    try:
        torch.optim.Optimizer.load_state_dict(optimizer, state_dict)
    finally:
        optimizer._optimizer_load_state_dict_pre_hooks = hooks
        optimizer._optimizer_load_state_dict_post_hooks = post_hooks
    restore_scalar_states(optimizer, state_dict, keys)
    for post_hook in post_hooks.values():
        post_hook(optimizer)


def restore_scalar_states(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any], keys: Iterable[str]) -> None:
    """After ``torch.optim.Optimizer.load_state_dict``: give the 0-dim states ``keys`` back their saved values in
    :func:`scalar_dtype` of their parameter.

    torch casts every floating state but ``step`` to its parameter's dtype, which for a 16-bit parameter rounds a
    running scale at every reload (and can overflow float16), so a resumed run would leave the uninterrupted one.
    """
    keys = tuple(keys)
    saved = state_dict.get("state", {})
    ids = [i for group in state_dict.get("param_groups", []) for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in zip(ids, params):
        entry = saved.get(i, {})
        if p not in optimizer.state:
            continue
        for key in keys:
            value = entry.get(key)
            if isinstance(value, Tensor):
                optimizer.state[p][key] = value.detach().to(device=p.device, dtype=scalar_dtype(p.dtype), copy=True)


def scaled(u: Tensor, c: Tensor) -> Tensor:
    """``c * u`` in ``u``'s dtype, for a 0-dim ``c`` in float32 or wider.

    A float16 ``u`` is multiplied in float32: ``c`` (a trust ratio, ``lr / K``) may exceed float16's range (65504)
    while the product does not, and torch's kernels would cast ``c`` to float16 first (``inf``).
    """
    if u.dtype == torch.float16:
        return torch.mul(u.float(), c.float()).to(torch.float16)
    return torch.mul(u, c.to(u.dtype))


def inplace(t: Tensor) -> Tensor:
    """What to write ``t`` through in place: ``t`` itself, or under ``torch.compile`` a 1-element view of a 0-dim
    ``t`` (the same memory).

    torch 2.13's inductor silently drops an in-place write to a 0-dim float64 CPU tensor that is an input of the
    compiled graph (a parameter, a buffer, a scalar state such as a trust ratio or a step count): the tensor keeps
    its old value, and writes that read it may be lost with it. A write through a view reaches it. The one-step
    paths write every tensor that may be 0-dim through this; the multi-tensor paths write with ``_foreach_*`` ops
    and 1-D stacks, which inductor keeps. ``tests/optim/test_compile_inductor.py`` checks both against eager steps.
    """
    if t.ndim == 0 and torch.compiler.is_compiling():
        return t.view(1)
    return t


def add_scaled_(p: Tensor, t: Tensor, c: Tensor) -> None:
    """``p += c * t`` in place, for a 0-dim ``c``: ``addcmul_``, or for float16 the product of :func:`scaled`."""
    target = inplace(p)
    if p.dtype == torch.float16:
        target.add_(scaled(t, c))
    else:
        target.addcmul_(t, c.to(p.dtype))


def scale_in(c: Tensor, dtype: torch.dtype) -> Tensor:
    """Per-tensor scales in the dtype the kernels take them in: ``dtype``, except for float16, whose range may not
    hold them (they stay float32; :func:`scaled` multiplies in float32)."""
    return c if dtype == torch.float16 else c.to(dtype)


def scale_list(c: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """A stacked 1-D vector of per-tensor scales as 0-dim tensors for :func:`foreach_add_scaled_`, cast once by
    :func:`scale_in`."""
    return list(scale_in(c, dtype).unbind(0))


def foreach_add_scaled_(ps: list[Tensor], ts: list[Tensor], cs: list[Tensor]) -> None:
    """``ps[i] += cs[i] * ts[i]`` for each ``i`` (one ``_foreach_addcmul_``; float16: products of :func:`scaled`)."""
    if ps and ps[0].dtype == torch.float16:
        torch._foreach_add_(ps, [scaled(t, c) for t, c in zip(ts, cs)])
    else:
        torch._foreach_addcmul_(ps, ts, cs)


def add_times_(p: Tensor, t: Tensor, coef: float | Tensor) -> None:
    """``p += coef * t`` in place: ``add_(alpha=)`` for a number, :func:`add_scaled_` for a 0-dim tensor (a tensor
    learning rate, read on its device without a host sync)."""
    if isinstance(coef, Tensor):
        add_scaled_(p, t, coef)
    else:
        inplace(p).add_(t, alpha=coef)


def foreach_add_times_(ps: list[Tensor], ts: list[Tensor], coef: float | Tensor) -> None:
    """``ps[i] += coef * ts[i]`` for each ``i``, :func:`add_times_`'s multi-tensor form."""
    if isinstance(coef, Tensor):  # on the parameters' device: a foreach kernel takes its tensors from one device
        dtype = coef.dtype if ps[0].dtype == torch.float16 else ps[0].dtype
        c = coef.to(device=ps[0].device, dtype=dtype, non_blocking=True)
        foreach_add_scaled_(ps, ts, [c] * len(ps))
    else:
        torch._foreach_add_(ps, ts, alpha=coef)


def foreach_mul_(tensors: list[Tensor], value: float) -> None:
    """``t *= value`` for each tensor, as ``Tensor.mul_`` computes it.

    On the CPU, torch 2.13's ``torch._foreach_mul_(tensors, value)`` rounds ``value`` to a 16-bit list's dtype
    before it multiplies (0.9 is 0.8999 in float16) where ``mul_`` multiplies in float32, so that a multi-tensor
    step drifted from the reference loop (a momentum buffer 2 % apart in bfloat16 after 5 steps). 16-bit CPU
    tensors take ``mul_`` one by one (torch's CPU foreach kernels are such a loop), others the foreach kernel.
    """
    if tensors and tensors[0].is_cpu and any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors):
        for t in tensors:
            t.mul_(value)
    else:
        torch._foreach_mul_(tensors, value)


@dataclass(frozen=True)
class StackedScalars:
    """Per-parameter 0-dim states of one param group kept as views of one 1-D tensor per state key.

    A multi-tensor step then reads and writes a state of every parameter with one kernel (``stack.copy_(values)``)
    instead of stacking the 0-dim tensors and copying back into each one. The views are what the optimizer's
    ``state`` holds, so ``state_dict``, logging and the reference loop see ordinary 0-dim tensors. Anything that
    replaces a state tensor (``load_state_dict``, an assignment, a parameter without a gradient this step) makes
    :meth:`matches` false and the optimizer builds a new one with :func:`stack_scalars`.

    Attributes:
        params: the parameters, in the order of the stacks.
        stacks: a 1-D tensor per state key.
        views: the 0-dim views of each stack, one per parameter (``views[key][i]`` is a view of
            ``stacks[key][i]``).

    Example:
        >>> params, states = [torch.zeros(2), torch.zeros(3)], [{"r": torch.tensor(1.0)}, {"r": torch.tensor(2.0)}]
        >>> stacked = stack_scalars(params, states, {"r": [s["r"] for s in states]})
        >>> stacked.stacks["r"].mul_(10)  # one kernel writes every parameter's state
        tensor([10., 20.])
        >>> float(states[1]["r"]), stacked.matches(params, {"r": [s["r"] for s in states]})
        (20.0, True)
    """

    params: tuple[Tensor, ...]
    stacks: dict[str, Tensor]
    views: dict[str, list[Tensor]]

    def matches(self, params: Sequence[Tensor], current: dict[str, Sequence[Tensor | None]]) -> bool:
        """Whether the state tensors ``current[key]`` (one per parameter of ``params``) are this object's views,
        for exactly the keys it stacks (identity checks only: no tensor is read)."""
        if len(params) != len(self.params) or current.keys() != self.views.keys():
            return False
        if not all(map(operator.is_, params, self.params)):
            return False
        return all(all(map(operator.is_, current[key], views)) for key, views in self.views.items())


def stack_scalars(
    params: Sequence[Tensor], states: Sequence[dict[str, Any]], current: dict[str, Sequence[Tensor | None]]
) -> StackedScalars | None:
    """Stack the 0-dim states ``current[key]`` (one per parameter) into a 1-D tensor per key and put its views
    into ``states`` in their place. A ``None`` entry becomes 1: a state saved before the key existed, for which 1
    is the neutral value, or one the step is about to write. Returns ``None``, and changes nothing, where a key
    has no tensor yet (before the first step that makes them) or its tensors do not share one dtype and device
    (a group mixing float32 and float64 parameters): the caller keeps separate tensors.

    Example:
        >>> params = [torch.zeros(2), torch.zeros(3)]
        >>> states = [{"r": torch.tensor(2.0)}, {"r": torch.tensor(3.0)}]
        >>> stacked = stack_scalars(params, states, {"r": [s["r"] for s in states]})
        >>> stacked.stacks["r"], states[1]["r"]._base is stacked.stacks["r"]
        (tensor([2., 3.]), True)
    """
    stacks: dict[str, Tensor] = {}
    views: dict[str, list[Tensor]] = {}
    for key, values in current.items():
        known = [v for v in values if v is not None]
        if not known:
            return None
        first = known[0]
        if any(v.dtype != first.dtype or v.device != first.device or v.dim() != 0 for v in known):
            return None
        one = torch.ones((), dtype=first.dtype, device=first.device)
        stacks[key] = torch.stack([one if v is None else v for v in values])
        views[key] = list(stacks[key].unbind(0))
    for key, key_views in views.items():
        for state, view in zip(states, key_views):
            state[key] = view
    return StackedScalars(tuple(params), stacks, views)
