"""How big each reproduction runs: the ``--quick`` (CI-sized) and full (paper-sized) forms as data.

A :class:`Scale` holds one block of sizes per paper. :data:`QUICK` is what ``theorylr reproduce ... --quick`` runs
(a few minutes on two CPU cores for all three papers), :data:`FULL` the paper-sized form (the papers' epochs,
widths and data; MNIST/CIFAR-10 experiments need ``--data-dir`` and are best run on a GPU). Tests build smaller
scales with :func:`dataclasses.replace`.

Example:
    >>> QUICK.adam.depths, FULL.adam.width
    ((1, 3, 5), 1000)
    >>> get_scale("quick") is QUICK
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from theorylr._validation import check_choice

__all__ = ["FULL", "QUICK", "SCALES", "AdamScale", "LarsScale", "LipschitzScale", "Scale", "get_scale"]

_SCHEDULERS = (
    "adam-linear",
    "adam-step",
    "adam-inverse-sqrt",
    "adam-inverse-time",
    "adam-exponential",
    "adam-onecycle",
    "adam-cosine",
)


@dataclass(frozen=True)
class LarsScale:
    """Sizes of the proportional-updates (LARS) experiments.

    Attributes:
        steps_1d: LARS steps of each 1-D run (§3).
        steps_2d: steps of each 2-D quadratic run (Fig. 1).
        theorem_steps: steps of each Theorem 2 / Theorem 3 run.
        eps: the accuracies of the Corollary 2.1 runs.
        fig2_epochs_full: epochs of the full-batch Fig. 2 runs (one step each).
        fig2_epochs_mini: epochs of the mini-batch Fig. 2 runs.
        resnet_epochs: epochs of the Fig. 3 ResNet run (full form, CIFAR-10 files).
        full_only: run the experiments marked "full form only" (Fig. 3).
    """

    steps_1d: int = 160
    steps_2d: int = 600
    theorem_steps: int = 1000
    eps: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05)
    fig2_epochs_full: int = 40
    fig2_epochs_mini: int = 15
    resnet_epochs: int = 150
    full_only: bool = False


@dataclass(frozen=True)
class AdamScale:
    """Sizes of the exact-step Adam experiments.

    Attributes:
        width: hidden width of the MLPs (the paper: 1000).
        depths: hidden layers of the full-batch MLPs (§5.2: 1, 3 and 5).
        epochs: epochs of the full-batch runs (the paper: 100).
        minibatch_depths, minibatch_epochs, minibatch_size: the §5.3 runs (batch size on the embedded digits; the
            paper's 5000 of 60000 MNIST images is 1/12 of the set).
        batch_sizes, batch_epochs: Fig. 5 (``None`` = full batch).
        schedulers: the tuned schedulers (the paper's seven).
        constants: the constant step sizes (the paper's 1e-2 .. 1e-5).
        grid, trials: the learning-rate grid the schedulers are tuned over (``trials`` log-spaced points).
        num_samples: ``N`` of Algorithm 2.
        lenet_epochs, lenet_image_size: §5.4 LeNet on digits upscaled to that size (MNIST with ``--data-dir``).
        vgg_epochs: §5.4 VGG-9 on CIFAR-10 (full form, files needed).
        init_seeds: initialisation draws per scheme in App. C.4.
        theorem4_pool, theorem4_ns, theorem4_repeats: Theorem 4: spectral norms at ``pool`` initial points, and
            ``repeats`` random subsets of each size ``N`` in ``ns``.
        full_only: run the experiments marked "full form only" (VGG-9).
    """

    width: int = 64
    depths: tuple[int, ...] = (1, 3, 5)
    epochs: int = 10
    minibatch_depths: tuple[int, ...] = (3,)
    minibatch_epochs: int = 5
    minibatch_size: int = 128
    batch_sizes: tuple[int | None, ...] = (64, 256, None)
    batch_epochs: int = 5
    schedulers: tuple[str, ...] = _SCHEDULERS
    constants: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    grid: tuple[float, float] = (1e-3, 1e-2)
    trials: int = 2
    num_samples: int = 5
    lenet_epochs: int = 5
    lenet_image_size: int = 16
    vgg_epochs: int = 100
    init_seeds: int = 1
    theorem4_pool: int = 16
    theorem4_ns: tuple[int, ...] = (1, 2, 4)
    theorem4_repeats: int = 200
    full_only: bool = False


@dataclass(frozen=True)
class LipschitzScale:
    """Sizes of the LipschitzLR experiments.

    Attributes:
        table1_max_epochs: the cap on gradient-descent epochs in Table 1 (the paper's largest count is 489,592).
        table2_epochs: epochs per Table 2 data set (the paper: iris 200, digits 200, breast cancer 1000).
        cnn_epochs, cnn_image_size, cnn_train_size: the Table 4 CNN on digits resized to that size (upscaled to 28,
            a stand-in for MNIST; 8 = the native 8x8 images) keeping ``cnn_train_size`` training images (``None`` =
            all); 20 epochs in the paper.
        resnet_epochs: ResNet-20 on CIFAR-10 (full form, files needed; the paper: 300).
        full_only: run the experiments marked "full form only" (ResNet-20).
    """

    table1_max_epochs: int = 5_000
    table2_epochs: Mapping[str, int] = field(default_factory=lambda: {"iris": 30, "digits": 30, "breast_cancer": 50})
    cnn_epochs: int = 3
    cnn_image_size: int = 8
    cnn_train_size: int | None = 500
    resnet_epochs: int = 300
    full_only: bool = False


@dataclass(frozen=True)
class Scale:
    """The sizes of one reproduction: a name, seeds, and one block per paper.

    Results of different scales go to different directories (``OUT/<paper>/<name>/``), so a quick and a full run
    never mix, and rerunning the same scale resumes.
    """

    name: str
    seeds: int = 1
    lars: LarsScale = field(default_factory=LarsScale)
    adam: AdamScale = field(default_factory=AdamScale)
    lipschitz: LipschitzScale = field(default_factory=LipschitzScale)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name must be non-empty without '/', '\\' or ' ' (got {self.name!r})")


QUICK = Scale(name="quick")

FULL = Scale(
    name="full",
    seeds=3,
    lars=LarsScale(
        steps_1d=2000,
        steps_2d=20_000,
        theorem_steps=50_000,
        eps=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005),
        fig2_epochs_full=300,
        fig2_epochs_mini=100,
        full_only=True,
    ),
    adam=AdamScale(
        width=1000,
        epochs=100,
        minibatch_depths=(1, 3),
        minibatch_epochs=100,
        batch_sizes=(64, 128, 512, None),
        batch_epochs=100,
        grid=(1e-4, 1e-1),
        trials=7,
        num_samples=10,
        lenet_epochs=100,
        lenet_image_size=28,
        init_seeds=5,
        theorem4_pool=128,
        theorem4_ns=(1, 2, 4, 8, 16, 32),
        full_only=True,
    ),
    lipschitz=LipschitzScale(
        table1_max_epochs=500_000,
        table2_epochs={"iris": 200, "digits": 200, "breast_cancer": 1000},
        cnn_epochs=20,
        cnn_image_size=28,
        cnn_train_size=None,
        full_only=True,
    ),
)

SCALES: dict[str, Scale] = {"quick": QUICK, "full": FULL}


def get_scale(name: str) -> Scale:
    """:data:`QUICK` or :data:`FULL` by name (``ValueError`` otherwise)."""
    return SCALES[check_choice("scale", name, tuple(SCALES))]
