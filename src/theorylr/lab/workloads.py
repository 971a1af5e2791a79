"""Workloads as data: a dataset, a model, a loss, a budget and an optional target, one registry row each.

A :class:`Workload` names everything by registry name and options (``theorylr.data.load_dataset``,
``theorylr.models.build_model``, :mod:`theorylr.lab.losses`), so it is plain data: it is written whole into every
run's ``config.json`` and adding a workload is one :func:`register_workload` call, never a new script
(AlgoPerf's layout, see ``docs/lab.md``).

Example:
    >>> w = get_workload("digits-logreg")
    >>> (w.dataset, w.model, w.loss, w.batch_size)
    ('digits', 'linear', 'cross_entropy', None)
    >>> sorted(WORKLOADS)[:3]
    ['breast-cancer-logreg', 'cifar10-resnet20', 'cifar10-vgg9']
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from theorylr._validation import check_bool, check_choice, check_int, check_number, did_you_mean
from theorylr.lab._files import check_config_values
from theorylr.lab.losses import LOSSES, LossSpec, get_loss

if TYPE_CHECKING:
    from theorylr.data import Dataset

__all__ = [
    "DEFAULT_WORKLOAD",
    "METRICS",
    "WORKLOADS",
    "Target",
    "Workload",
    "get_workload",
    "register_workload",
]

#: Columns of ``metrics.csv`` a target or a tuning objective may name, and whether larger is better.
METRICS: dict[str, bool] = {
    "train_loss": False,
    "test_loss": False,
    "grad_norm": False,
    "test_accuracy": True,
    "train_accuracy": True,
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _takes_image_size(model: str) -> bool:
    """Whether the registered model's first Linear depends on the image side, which it then takes as
    ``image_size`` (LeNet-5, VGG-9, the LipschitzLR CNN)."""
    from theorylr.models import MODELS

    factory = MODELS.get(model)
    return factory is not None and "image_size" in inspect.signature(factory).parameters


def _at_lr_name(key: str) -> str | None:
    """A ``NAME@LR`` key written as the rule's own name (the lr as :func:`~theorylr.lab.rules.lr_text` writes it,
    see ``Rule.with_lr``), or ``None``."""
    from theorylr.lab.rules import lr_text  # rules imports this module: import at call time

    base, sep, text = key.strip().partition("@")
    if not sep:
        return None
    try:
        return f"{base.strip()}@{lr_text(float(text))}"
    except ValueError:
        return None


@dataclass(frozen=True)
class Target:
    """A level of a metric that counts as "reached" (``metric <= value``, or ``>=`` for accuracies).

    Example:
        >>> t = Target("test_accuracy", 0.9)
        >>> t.reached(0.95), t.reached(float("nan"))
        (True, False)
    """

    metric: str
    value: float

    def __post_init__(self) -> None:
        check_choice("target metric", self.metric, tuple(METRICS))
        check_number("target value", self.value)

    @property
    def higher_is_better(self) -> bool:
        """Whether the metric improves upward (accuracies)."""
        return METRICS[self.metric]

    def reached(self, value: float | None) -> bool:
        """Whether ``value`` reaches the target (``None`` and NaN never do)."""
        if value is None or not math.isfinite(value):
            return False
        return value >= self.value if self.higher_is_better else value <= self.value

    def describe(self) -> str:
        """``"test_accuracy >= 0.95"``."""
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.value:g}"


@dataclass(frozen=True)
class Workload:
    """One problem the lab trains on.

    Attributes:
        name: registry name (``digits-mlp``).
        description: one line for ``theorylr list``.
        dataset: a ``theorylr.data.load_dataset`` name; ``dataset_options`` go to it (``scaling=...``, ...).
        model: a ``theorylr.models.build_model`` name; ``model_options`` go to it. The input size
            (``in_features``/``in_channels``) and the output size (``out_features``/``num_classes``) are filled in
            from the data and the loss unless given.
        loss: a :data:`theorylr.lab.losses.LOSSES` name.
        batch_size: mini-batch size; ``None`` = full batch (one step per epoch).
        epochs: default budget (``compare --epochs`` overrides it).
        target: optional :class:`Target` for steps-/time-to-target and the performance profile.
        init: ``theorylr.models.init_weights`` scheme (``None`` = torch's default initialisation).
        needs_data_dir: the data are files the user provides (``--data-dir``): MNIST, CIFAR-10.
        eval_batch_size: chunk size of the full-dataset evaluations (memory only: results do not depend on it
            beyond float rounding).
        grad_norm_samples: the full-batch gradient norm is measured on the first this-many training examples
            (``None`` = all of them); a cost cap for the large sets.
        tuning_metric: the final-epoch metric that picks a tuned rule's best trial (median over seeds).
        rule_options: per-rule keyword overrides, e.g. ``{"lars": {"lr": 0.05}}`` (the papers' own settings);
            those of a rule apply to its ``NAME@LR`` variants too, except ``lr`` (:meth:`options_for`).
        dtype: ``"float32"`` or ``"float64"``.
    """

    name: str
    description: str
    dataset: str
    model: str
    loss: str
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int | None = None
    epochs: int = 50
    target: Target | None = None
    init: str | None = None
    needs_data_dir: bool = False
    eval_batch_size: int = 4096
    grad_norm_samples: int | None = None
    tuning_metric: str = "train_loss"
    rule_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # The name is one path component of every run directory: nothing that could leave it or split it.
        bad_name = (
            not isinstance(self.name, str)
            or not self.name
            or self.name in (".", "..")
            or any(c in self.name for c in "/\\ ,@")
            or not self.name.isprintable()
        )
        if bad_name:
            raise ValueError(
                "workload name must be a non-empty string without '/', '\\', ' ', ',', '@' or control characters, "
                f"and not '.' or '..' (got {self.name!r})"
            )
        check_choice("loss", self.loss, tuple(LOSSES))
        from theorylr.data.registry import DATASETS
        from theorylr.models import INIT_SCHEMES
        from theorylr.models.registry import MODELS

        check_choice("dataset", self.dataset, tuple(DATASETS))
        check_choice("model", self.model, tuple(MODELS))
        if self.init is not None:
            check_choice("init", self.init, INIT_SCHEMES)
        if self.target is not None and not isinstance(self.target, Target):
            raise ValueError(f"target must be a Target(metric, value) or None (got {self.target!r})")
        check_bool("needs_data_dir", self.needs_data_dir)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, min_value=1)
        check_int("epochs", self.epochs, min_value=1)
        check_int("eval_batch_size", self.eval_batch_size, min_value=1)
        if self.grad_norm_samples is not None:
            check_int("grad_norm_samples", self.grad_norm_samples, min_value=1)
        check_choice("tuning_metric", self.tuning_metric, tuple(METRICS))
        check_choice("dtype", self.dtype, tuple(_DTYPES))
        for options in ("dataset_options", "model_options", "rule_options"):
            check_config_values(options, getattr(self, options))

    @property
    def loss_spec(self) -> LossSpec:
        """The :class:`~theorylr.lab.losses.LossSpec` named by :attr:`loss`."""
        return get_loss(self.loss)

    @property
    def torch_dtype(self) -> torch.dtype:
        """:attr:`dtype` as a :class:`torch.dtype`."""
        return _DTYPES[self.dtype]

    def load_data(self, data_dir: str | Path | None = None) -> Dataset:
        """Load the dataset (CPU tensors in :attr:`torch_dtype`).

        Raises:
            ValueError: when the workload needs files and ``data_dir`` is not given.
        """
        if self.needs_data_dir and data_dir is None:
            raise ValueError(
                f"workload {self.name!r} needs the {self.dataset} files: pass data_dir (--data-dir DIR), "
                "see the README's 'Pointing the lab at MNIST/CIFAR-10' section"
            )
        from theorylr.data import load_dataset

        options = dict(self.dataset_options)
        options.setdefault("dtype", self.torch_dtype)
        if data_dir is not None:
            options["data_dir"] = data_dir
        return load_dataset(self.dataset, **options)

    def model_kwargs(self, data: Dataset) -> dict[str, Any]:
        """``model_options`` with the input and output sizes filled in from ``data`` and the loss."""
        kwargs = dict(self.model_options)
        outputs = self.loss_spec.outputs(getattr(data, "num_classes", None))
        sample_shape = tuple(data.x_train.shape[1:])
        if self.model in ("linear", "mlp"):
            kwargs.setdefault("in_features", math.prod(sample_shape))
            kwargs.setdefault("out_features", outputs)
        else:
            if len(sample_shape) == 3:
                kwargs.setdefault("in_channels", sample_shape[0])
                if _takes_image_size(self.model):
                    kwargs.setdefault("image_size", sample_shape[-1])
            kwargs.setdefault("num_classes", outputs)
        return kwargs

    def build_model(self, data: Dataset, generator: torch.Generator | None = None) -> nn.Module:
        """Build the model for ``data`` (and apply :attr:`init` with ``generator`` when set)."""
        from theorylr.models import build_model

        model = build_model(self.model, **self.model_kwargs(data))
        if self.init is not None:
            from theorylr.models import init_weights

            init_weights(model, self.init, generator)
        return model.to(self.torch_dtype)

    def options_for(self, rule_name: str) -> dict[str, Any]:
        """This workload's keyword overrides for ``rule_name`` (empty when none).

        A fixed-lr variant ``NAME@LR`` gets the overrides of ``NAME`` except its ``lr`` (the spec fixes that), then
        any given for ``NAME@LR`` itself, however its LR is written (``adam@1e-3`` is ``adam@0.001``, the name
        :meth:`Rule.with_lr` gives): ``lars@0.1`` keeps the workload's other LARS settings.
        """
        base, sep, _ = rule_name.partition("@")
        options: dict[str, Any] = {}
        if sep and base:
            options = {k: v for k, v in self.rule_options.get(base, {}).items() if k != "lr"}
        for key, value in self.rule_options.items():
            if key == rule_name or (sep and _at_lr_name(key) == rule_name):
                options.update(value)
        return options

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what ``config.json`` stores)."""
        return asdict(self)


WORKLOADS: dict[str, Workload] = {}

#: The default workload of ``theorylr compare`` and ``make demo``.
DEFAULT_WORKLOAD = "digits-mlp"


def register_workload(workload: Workload, *, replace: bool = False) -> Workload:
    """Add ``workload`` to :data:`WORKLOADS` (``ValueError`` on a duplicate name unless ``replace``, or on
    ``rule_options`` for a rule that does not exist: a key is a rule's name or a ``NAME@LR`` spec)."""
    if not isinstance(workload, Workload):
        raise ValueError(f"workload must be a Workload (got {type(workload).__name__})")
    from theorylr.lab.rules import RULES, resolve_rule

    unknown = []
    for key in workload.rule_options:
        try:
            resolve_rule(key)
        except ValueError:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"rule_options names no rule {sorted(unknown)}: a key is a rule or NAME@LR, the rules are "
            f"{', '.join(sorted(RULES))}"
        )
    if workload.name in WORKLOADS and not replace:
        raise ValueError(f"workload {workload.name!r} is already registered (pass replace=True to override)")
    WORKLOADS[workload.name] = workload
    return workload


def get_workload(name: str) -> Workload:
    """The registered workload called ``name`` (``ValueError`` listing the names otherwise)."""
    try:
        return WORKLOADS[name]
    except KeyError:
        hint = did_you_mean(name, WORKLOADS)
        raise ValueError(f"workload must be one of {', '.join(sorted(WORKLOADS))} (got {name!r}{hint})") from None


_STANDARD = {"scaling": "standardize"}

for _w in (
    Workload(
        name="digits-mlp",
        description="8x8 digits (1348 train / 449 test), MLP 64-128-128-10 (ReLU), softmax CE, full batch",
        dataset="digits",
        dataset_options=_STANDARD,
        model="mlp",
        model_options={"hidden": (128, 128)},
        loss="cross_entropy",
        epochs=100,
        init="kaiming_uniform",
        target=Target("test_accuracy", 0.95),
    ),
    Workload(
        name="digits-logreg",
        description="8x8 digits, softmax (multinomial logistic) regression, full batch (LARS §6.2.2 stand-in)",
        dataset="digits",
        dataset_options=_STANDARD,
        model="linear",
        loss="cross_entropy",
        epochs=100,
        target=Target("test_accuracy", 0.94),
        rule_options={"lars": {"lr": 0.05}, "lars-decay": {"lr": 0.05}},
    ),
    Workload(
        name="iris-softmax",
        description="iris (3 classes, 4 features), softmax regression, full batch (LipschitzLR Table 2)",
        dataset="iris",
        dataset_options=_STANDARD,
        model="linear",
        loss="cross_entropy",
        epochs=200,
        target=Target("test_accuracy", 0.9),
    ),
    Workload(
        name="breast-cancer-logreg",
        description="breast cancer (binary, 30 features), logistic regression with BCE, full batch (LipschitzLR)",
        dataset="breast_cancer",
        dataset_options=_STANDARD,
        model="linear",
        loss="bce",
        epochs=200,
        target=Target("test_accuracy", 0.95),
    ),
    Workload(
        name="wine-mlp",
        description="wine (3 classes, 13 features), MLP 13-32-3, softmax CE, full batch",
        dataset="wine",
        dataset_options=_STANDARD,
        model="mlp",
        model_options={"hidden": (32,)},
        loss="cross_entropy",
        epochs=100,
        target=Target("test_accuracy", 0.95),
    ),
    Workload(
        name="diabetes-leastsq",
        description="diabetes regression (10 features), linear least squares (1/2m)||Xw - y||^2, full batch",
        dataset="diabetes",
        dataset_options=_STANDARD,
        model="linear",
        loss="least_squares",
        epochs=200,
        tuning_metric="test_loss",
    ),
    Workload(
        name="separable-svm",
        description="linearly separable synthetic points (1000), linear SVM (hinge), batch 100 (LARS §6.2.1)",
        dataset="separable",
        model="linear",
        loss="binary_hinge",
        batch_size=100,
        epochs=30,
        target=Target("train_loss", 0.01),
        rule_options={"lars": {"lr": 0.1}, "lars-decay": {"lr": 0.1}},
    ),
    Workload(
        name="digits-lenet",
        description="digits upscaled to 28x28, LeNet-5, softmax CE, batch 256 (a quick MNIST stand-in)",
        dataset="digits",
        dataset_options={"scaling": "unit", "image": True, "resize": 28},
        model="lenet5",
        loss="cross_entropy",
        batch_size=256,
        epochs=20,
        target=Target("test_accuracy", 0.95),
    ),
    Workload(
        name="mnist-logreg",
        description="MNIST (needs --data-dir), softmax regression, batch 10000 (LARS §6.2.2)",
        dataset="mnist",
        dataset_options={"scaling": "unit"},
        model="linear",
        loss="cross_entropy",
        batch_size=10000,
        epochs=20,
        needs_data_dir=True,
        grad_norm_samples=10000,
        target=Target("test_accuracy", 0.92),
        rule_options={"lars": {"lr": 0.05}, "lars-decay": {"lr": 0.05}},
    ),
    Workload(
        name="mnist-mlp",
        description="MNIST (needs --data-dir), MLP 784-1000-1000-1000-10, batch 5000 (exact-step Adam §5.3)",
        dataset="mnist",
        dataset_options={"scaling": "unit"},
        model="mlp",
        model_options={"hidden": (1000, 1000, 1000)},
        loss="cross_entropy",
        batch_size=5000,
        epochs=100,
        init="kaiming_uniform",
        needs_data_dir=True,
        grad_norm_samples=10000,
        target=Target("test_accuracy", 0.97),
    ),
    Workload(
        name="mnist-lenet",
        description="MNIST (needs --data-dir), LeNet-5, batch 5000 (exact-step Adam §5.4)",
        dataset="mnist",
        dataset_options={"scaling": "unit"},
        model="lenet5",
        loss="cross_entropy",
        batch_size=5000,
        epochs=100,
        needs_data_dir=True,
        grad_norm_samples=10000,
        target=Target("test_accuracy", 0.98),
    ),
    Workload(
        name="cifar10-resnet20",
        description="CIFAR-10 (needs --data-dir), ResNet-20 v1, batch 128 (LARS §6.3, LipschitzLR Table 3)",
        dataset="cifar10",
        dataset_options={"scaling": "standardize"},
        model="resnet20",
        loss="cross_entropy",
        batch_size=128,
        epochs=50,
        needs_data_dir=True,
        grad_norm_samples=5000,
        eval_batch_size=1000,
        target=Target("test_accuracy", 0.85),
        rule_options={"lars": {"lr": 0.001}, "lars-decay": {"lr": 0.001}},
    ),
    Workload(
        name="cifar10-vgg9",
        description="CIFAR-10 (needs --data-dir), VGG-9, batch 2500 (exact-step Adam §5.4)",
        dataset="cifar10",
        dataset_options={"scaling": "standardize"},
        model="vgg9",
        loss="cross_entropy",
        batch_size=2500,
        epochs=100,
        needs_data_dir=True,
        grad_norm_samples=5000,
        eval_batch_size=1000,
        target=Target("test_accuracy", 0.75),
    ),
):
    register_workload(_w)
del _w
