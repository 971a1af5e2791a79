"""The data set registry and :func:`load_dataset`: raw data -> split -> subsample -> image shape -> scaling.

Each registry row (:class:`DatasetInfo`) names a *source*, a function that returns the raw arrays (and an
official test split where the data set has one). :func:`load_dataset` applies the common steps, so every data
set gets the same options. scikit-learn is imported inside the sources, never when this module is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from theorylr._validation import SEED_MAX, check_bool, check_choice, check_int, check_number
from theorylr.data.batching import split_indices
from theorylr.data.dataset import Dataset
from theorylr.data.files import load_cifar10, load_mnist
from theorylr.data.scaling import SCALINGS, scale_features
from theorylr.data.synthetic import _separable_sets

__all__ = ["COMMON_OPTIONS", "DATASETS", "DatasetInfo", "load_dataset"]

# Options every data set accepts (see load_dataset); a row's ``options`` lists its own extra ones.
COMMON_OPTIONS = ("image", "resize", "train_size", "test_size")


@dataclass(frozen=True)
class RawData:
    """What a source returns: inputs ``x`` ``(N, ...)`` (float64 or uint8), targets ``y``, optional official test
    split, and how the inputs may be seen as images."""

    x: Tensor
    y: Tensor
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) when the features are pixels
    pixel_max: float | None = None  # the largest raw pixel value, for scaling="unit"


@dataclass(frozen=True)
class DatasetInfo:
    """One registered data set.

    Attributes:
        name: the registry key.
        task: ``"classification"`` or ``"regression"``.
        description: one line for listings.
        source: ``source(data_dir=..., seed=..., test_fraction=..., **options) -> RawData``.
        options: the source's own keyword options (beyond :data:`COMMON_OPTIONS`).
        needs_data_dir: the data is read from files in ``data_dir`` (MNIST, CIFAR-10).
        images: the inputs are pixels, so the ``image`` and ``resize`` options apply.
        image_default: whether inputs are returned as ``(N, C, H, W)`` images unless ``image=False``.

    Calling a row loads the data set: ``DATASETS["iris"](scaling=None)`` is ``load_dataset("iris", scaling=None)``.
    """

    name: str
    task: str
    description: str
    source: Callable[..., RawData]
    options: tuple[str, ...] = ()
    needs_data_dir: bool = False
    images: bool = False
    image_default: bool = False

    def __call__(self, **kwargs: Any) -> Dataset:
        """Load this data set (see :func:`load_dataset`)."""
        return load_dataset(self.name, **kwargs)


# --------------------------------------------------------------------------------------------------- sources


def _sklearn_source(loader: str, *, regression: bool = False, **load_kwargs: Any) -> Callable[..., RawData]:
    def source(**_: Any) -> RawData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(**load_kwargs)
        x = torch.as_tensor(bunch.data, dtype=torch.float64)
        if regression:
            return RawData(x, torch.as_tensor(bunch.target, dtype=torch.float64))
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        names = tuple(str(n) for n in getattr(bunch, "target_names", range(int(y.max()) + 1)))
        return RawData(x, y, num_classes=len(names), class_names=names)

    return source


def _digits_source(**_: Any) -> RawData:
    raw = _sklearn_source("load_digits")()
    return RawData(raw.x, raw.y, num_classes=10, class_names=raw.class_names, image_shape=(1, 8, 8), pixel_max=16.0)


def _separable_source(
    *, seed: int, test_fraction: float, n: int = 1000, dim: int = 2, margin: float = 0.1, **_: Any
) -> RawData:
    check_int("n", n, min_value=2)
    # make_separable's n training points (whatever the test set's size), then test points in the same proportion:
    # further draws of the same generator on the same hyperplane, their own closest point at the margin too.
    check_int("dim", dim, min_value=1)
    check_number("margin", margin, min_value=0.0, min_inclusive=False)
    n_test = max(1, round(n * test_fraction / (1.0 - test_fraction)))
    (x, y), (x_test, y_test), _w, _b = _separable_sets(n, n_test, dim, margin, int(seed))
    return RawData(x, y, x_test, y_test, num_classes=2, class_names=("negative", "positive"))


def _image_source(loader: Callable[..., Any], **load_kwargs: Any) -> Callable[..., RawData]:
    def source(*, data_dir: str | os.PathLike[str], **_: Any) -> RawData:
        s = loader(data_dir, **load_kwargs)
        shape = tuple(s.x_train.shape[1:])
        return RawData(
            s.x_train,
            s.y_train,
            s.x_test,
            s.y_test,
            num_classes=10,
            class_names=s.class_names,
            image_shape=(shape[0], shape[1], shape[2]),
            pixel_max=255.0,
        )

    return source


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits",
            "classification",
            "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes); image=True gives (N,1,8,8)",
            _digits_source,
            images=True,
        ),
        DatasetInfo(
            "iris", "classification", "scikit-learn's iris (150 x 4 features, 3 classes)", _sklearn_source("load_iris")
        ),
        DatasetInfo(
            "breast_cancer",
            "classification",
            "scikit-learn's Wisconsin breast cancer (569 x 30 features, 2 classes)",
            _sklearn_source("load_breast_cancer"),
        ),
        DatasetInfo(
            "wine", "classification", "scikit-learn's wine (178 x 13 features, 3 classes)", _sklearn_source("load_wine")
        ),
        DatasetInfo(
            "diabetes",
            "regression",
            "scikit-learn's diabetes, raw (unscaled) features (442 x 10, real target)",
            _sklearn_source("load_diabetes", regression=True, scaled=False),
        ),
        DatasetInfo(
            "separable",
            "classification",
            "synthetic linearly separable 2-class data with a margin (make_separable; n training points)",
            _separable_source,
            options=("n", "dim", "margin"),
        ),
        DatasetInfo(
            "mnist",
            "classification",
            "MNIST from IDX files in data_dir (60000/10000 images 1x28x28)",
            _image_source(load_mnist),
            needs_data_dir=True,
            images=True,
            image_default=True,
        ),
        DatasetInfo(
            "fashion_mnist",
            "classification",
            "Fashion-MNIST from IDX files in data_dir (same format and file names as MNIST)",
            _image_source(load_mnist, fashion=True),
            needs_data_dir=True,
            images=True,
            image_default=True,
        ),
        DatasetInfo(
            "cifar10",
            "classification",
            "CIFAR-10 from the binary batches in data_dir (50000/10000 images 3x32x32)",
            _image_source(load_cifar10),
            needs_data_dir=True,
            images=True,
            image_default=True,
        ),
    )
}


# ------------------------------------------------------------------------------------------------ load_dataset


def load_dataset(
    name: str,
    *,
    scaling: str | None = "standardize",
    test_fraction: float = 0.25,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> Dataset:
    """Load a registered data set as a :class:`Dataset`.

    Steps, in order: read the raw data (the source); split off a test set when the data set has no official one
    (seeded, stratified for classification: :func:`split_indices`; the training examples then come in a seeded
    random order, since several raw files are sorted by class); subsample; shape the inputs (image or flat);
    resize images; scale the features with statistics of the training set only (:func:`scale_features`); cast to
    ``dtype``.

    Args:
        name: a key of :data:`DATASETS`: ``"digits"``, ``"iris"``, ``"breast_cancer"``, ``"wine"``,
            ``"diabetes"``, ``"separable"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``.
        scaling: ``None``, ``"standardize"`` (default), ``"sum_to_one"`` (LipschitzLR §7.1) or ``"unit"``.
        test_fraction: share of the examples held out, in ``(0, 1)`` (default 0.25). Ignored by MNIST and CIFAR-10,
            which have official test sets; for ``"separable"`` the ``n`` training points get
            ``round(n * test_fraction / (1 - test_fraction))`` extra test points.
        seed: seed of the split, of the subsampling and of synthetic data.
        data_dir: folder of the files (required by MNIST, Fashion-MNIST and CIFAR-10).
        dtype: floating dtype of the inputs (and of regression targets); default ``torch.float32``.
        **options: common to all data sets:

            * ``image`` (bool): inputs as ``(N, C, H, W)`` images (default True for MNIST/CIFAR-10, False for
              digits, where ``image=True`` gives ``(N, 1, 8, 8)``); ``False`` flattens images to ``(N, C*H*W)``.
              Only for data sets made of pixels.
            * ``resize`` (int): bilinear resampling of the images to ``resize x resize``
              (:func:`torch.nn.functional.interpolate`, ``align_corners=False``), e.g. ``resize=28`` upscales
              digits to the MNIST shape; implies ``image=True`` unless ``image=False`` is given (then the resized
              images are flattened).
            * ``train_size`` / ``test_size`` (int): keep only that many examples of the split (stratified for
              classification, seeded), e.g. the exact-step-Adam paper's mini-MNIST is ``train_size=5500,
              test_size=1000``.

            and the source's own: ``"separable"`` takes ``n`` (training points, default 1000), ``dim`` (2) and
            ``margin`` (0.1), see :func:`make_separable`. The margin is that of the generated features: the
            default ``scaling="standardize"`` rescales each feature and changes it (0.5 became about 0.36 in one
            draw); pass ``scaling=None`` to keep it.

    Returns:
        the :class:`Dataset`; classification labels are ``int64``.

    Raises:
        ValueError: an unknown name, scaling or option, a bad value, a missing ``data_dir``, or malformed files.
        FileNotFoundError: a file is missing from ``data_dir``.

    Example:
        >>> ds = load_dataset("iris", test_fraction=0.2)
        >>> ds.num_train, ds.num_test, ds.num_classes
        (120, 30, 3)
        >>> load_dataset("digits", image=True, resize=28).input_shape
        (1, 28, 28)
    """
    info = DATASETS.get(name) if isinstance(name, str) else None
    if info is None:
        raise ValueError(f"name must be one of {', '.join(map(repr, DATASETS))} (got {name!r})")
    check_choice("scaling", scaling, SCALINGS)
    check_number("test_fraction", test_fraction, min_value=0.0, max_value=1.0, min_inclusive=False, max_inclusive=False)
    check_int("seed", seed, min_value=0, max_value=SEED_MAX)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as torch.float32 (got {dtype!r})")
    allowed = COMMON_OPTIONS + info.options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; allowed: {', '.join(allowed)}, "
            f"plus scaling, test_fraction, seed, data_dir, dtype"
        )
    if info.needs_data_dir and data_dir is None:
        raise ValueError(
            f"data_dir is required for dataset {name!r}: pass the folder that holds its files "
            f"(load_dataset({name!r}, data_dir=...)); theorylr never downloads data"
        )
    common = {k: options.pop(k) for k in COMMON_OPTIONS if k in options}
    if "image" in common:
        check_bool("image", common["image"])
    for key in ("resize", "train_size", "test_size"):
        if common.get(key) is not None:
            check_int(key, common[key], min_value=1)
    if (common.get("image") or common.get("resize") is not None) and not info.images:
        raise ValueError(f"image and resize are only available for image data sets (not {name!r})")
    raw = info.source(data_dir=data_dir, seed=seed, test_fraction=test_fraction, **options)
    regression = info.task == "regression"

    x_train, y_train, x_test, y_test = _split(raw, test_fraction, seed, stratify=not regression)
    x_train, y_train = _subsample(x_train, y_train, common.get("train_size"), "train_size", seed, regression)
    test_seed = (int(seed) + 1) % (SEED_MAX + 1)  # another stream than the training subsample's, for any valid seed
    x_test, y_test = _subsample(x_test, y_test, common.get("test_size"), "test_size", test_seed, regression)
    x_train = _shape_inputs(x_train, raw, info, common, dtype)
    x_test = _shape_inputs(x_test, raw, info, common, dtype)
    x_train, x_test = scale_features(x_train, x_test, scaling, pixel_max=raw.pixel_max, inplace=True)
    return Dataset(
        name,
        x_train.to(dtype),
        y_train.to(dtype) if regression else y_train.to(torch.int64),
        x_test.to(dtype),
        y_test.to(dtype) if regression else y_test.to(torch.int64),
        task=info.task,
        num_classes=None if regression else raw.num_classes,
        class_names=None if regression else raw.class_names,
    )


def _split(raw: RawData, test_fraction: float, seed: int, *, stratify: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if raw.x_test is not None and raw.y_test is not None:
        return raw.x, raw.y, raw.x_test, raw.y_test
    n = int(raw.x.shape[0])
    num_test = min(max(round(test_fraction * n), 1), n - 1)
    train, test = split_indices(raw.y, num_test, stratify=stratify, seed=seed)
    # Present the training examples in a seeded random order: several raw files are sorted by class.
    order = torch.randperm(train.numel(), generator=torch.Generator().manual_seed(int(seed)))
    train = train[order]
    return raw.x[train], raw.y[train], raw.x[test], raw.y[test]


def _subsample(
    x: Tensor, y: Tensor, size: int | None, argument: str, seed: int, regression: bool
) -> tuple[Tensor, Tensor]:
    if size is None:
        return x, y
    n = int(x.shape[0])
    check_int(argument, size, min_value=1, max_value=n)
    if size == n:
        return x, y
    _, keep = split_indices(y, size, stratify=not regression, seed=seed)
    return x[keep], y[keep]


def _shape_inputs(x: Tensor, raw: RawData, info: DatasetInfo, common: Mapping[str, Any], dtype: torch.dtype) -> Tensor:
    """Cast to ``dtype`` (a fresh tensor) and give the inputs their image or flat shape."""
    resize = common.get("resize")
    image = common.get("image", info.image_default or resize is not None)
    x = x.to(dtype, copy=True)  # our own tensor: the scaling then works in place
    if raw.image_shape is not None:
        x = x.reshape(x.shape[0], *raw.image_shape)
        if resize is not None and x.shape[-2:] != (resize, resize):
            x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
        if not image:
            x = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return x
