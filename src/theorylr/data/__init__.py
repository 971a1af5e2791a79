"""Data for the lab: embedded scikit-learn sets, synthetic problems, and validated MNIST / CIFAR-10 readers.

* :func:`load_dataset` (and the :data:`DATASETS` registry) returns a :class:`Dataset` with a seeded, stratified
  train/test split and the papers' scalings (:func:`scale_features`).
* :func:`make_separable` and :func:`make_quadratic` build the synthetic problems of the proportional-updates
  paper (linear SVM data, the 2-D quadratic).
* :func:`read_idx`, :func:`load_mnist`, :func:`read_cifar10_batch` and :func:`load_cifar10` read the standard
  files from a folder the user names: nothing is downloaded and nothing is unpickled.
* :func:`iterate_batches` and :func:`split_indices` are the deterministic batching and splitting helpers.

scikit-learn is imported only when one of its data sets is loaded.

Example:
    >>> from theorylr.data import load_dataset
    >>> ds = load_dataset("digits", scaling="unit")
    >>> ds.num_features, ds.num_classes, float(ds.x_train.max())
    (64, 10, 1.0)
"""

from __future__ import annotations

from theorylr.data.batching import iterate_batches, split_indices
from theorylr.data.dataset import TASKS, Dataset
from theorylr.data.files import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    ImageSplits,
    load_cifar10,
    load_mnist,
    read_cifar10_batch,
    read_idx,
)
from theorylr.data.registry import COMMON_OPTIONS, DATASETS, DatasetInfo, RawData, load_dataset
from theorylr.data.scaling import SCALINGS, scale_features
from theorylr.data.synthetic import Quadratic, make_quadratic, make_separable

__all__ = [
    "CIFAR10_CLASSES",
    "COMMON_OPTIONS",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "SCALINGS",
    "TASKS",
    "Dataset",
    "DatasetInfo",
    "ImageSplits",
    "Quadratic",
    "RawData",
    "iterate_batches",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    "make_quadratic",
    "make_separable",
    "read_cifar10_batch",
    "read_idx",
    "scale_features",
    "split_indices",
]
