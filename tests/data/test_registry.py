"""load_dataset and the DATASETS registry: names, shapes, splits, scalings (checked by hand), options."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import theorylr.data
from theorylr.data import COMMON_OPTIONS, DATASETS, SCALINGS, Dataset, load_dataset

SKLEARN_SETS = {  # name: (examples, features, classes or None)
    "digits": (1797, 64, 10),
    "iris": (150, 4, 3),
    "breast_cancer": (569, 30, 2),
    "wine": (178, 13, 3),
    "diabetes": (442, 10, None),
}


def test_registry_lists_every_name() -> None:
    assert set(DATASETS) == {*SKLEARN_SETS, "separable", "mnist", "fashion_mnist", "cifar10"}
    for name, info in DATASETS.items():
        assert info.name == name and info.task in ("classification", "regression") and info.description
        assert info.needs_data_dir == (name in ("mnist", "fashion_mnist", "cifar10"))


def test_no_heavy_imports_at_module_level() -> None:
    # scikit-learn, matplotlib and the lab may only be imported inside functions of theorylr.data / theorylr.models.
    forbidden = ("sklearn", "matplotlib", "scipy", "theorylr.lab")
    root = Path(theorylr.data.__file__).parent.parent
    files = sorted((root / "data").glob("*.py")) + sorted((root / "models").glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name} at module level"


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_sklearn_sets(name: str) -> None:
    n, features, classes = SKLEARN_SETS[name]
    ds = load_dataset(name)
    assert isinstance(ds, Dataset) and ds.name == name
    assert ds.num_train + ds.num_test == n and ds.num_test == round(0.25 * n)
    assert ds.input_shape == (features,) and ds.num_features == features
    assert ds.x_train.dtype == torch.float32
    if classes is None:
        assert ds.task == "regression" and ds.num_classes is None and ds.y_train.dtype == torch.float32
    else:
        assert ds.task == "classification" and ds.num_classes == classes and ds.y_train.dtype == torch.int64
        assert ds.class_names is not None and len(ds.class_names) == classes
    assert DATASETS[name](seed=3).x_train.equal(load_dataset(name, seed=3).x_train)


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer"])
def test_split_is_stratified_and_reproducible(name: str) -> None:
    ds = load_dataset(name, test_fraction=0.3, seed=5, scaling=None, dtype=torch.float64)
    total = torch.bincount(torch.cat([ds.y_train, ds.y_test]))
    test = torch.bincount(ds.y_test, minlength=len(total))
    assert ((test - 0.3 * total).abs() < 1).all()
    again = load_dataset(name, test_fraction=0.3, seed=5, scaling=None, dtype=torch.float64)
    assert again.x_train.equal(ds.x_train) and again.y_test.equal(ds.y_test)
    other = load_dataset(name, test_fraction=0.3, seed=6, scaling=None, dtype=torch.float64)
    assert not other.y_train.equal(ds.y_train) or not other.x_train.equal(ds.x_train)


def test_split_partitions_the_raw_data() -> None:
    import sklearn.datasets

    raw = sklearn.datasets.load_wine()
    ds = load_dataset("wine", scaling=None, dtype=torch.float64)
    rows = torch.cat([ds.x_train, ds.x_test]).numpy()
    labels = torch.cat([ds.y_train, ds.y_test]).numpy()
    order_ds = np.lexsort(rows.T[::-1])
    order_raw = np.lexsort(raw.data.T[::-1])
    np.testing.assert_array_equal(rows[order_ds], raw.data[order_raw])
    np.testing.assert_array_equal(labels[order_ds], raw.target[order_raw])
    # the training set comes shuffled (the raw wine file is sorted by class)
    assert not bool((ds.y_train[1:] >= ds.y_train[:-1]).all())


def test_scalings_by_hand() -> None:
    raw = load_dataset("digits", scaling=None, dtype=torch.float64)
    xtr, xte = raw.x_train, raw.x_test
    # standardize: train statistics, applied to test; constant columns (pixel 0 of digits is always 0) stay 0
    std_ds = load_dataset("digits", scaling="standardize", dtype=torch.float64)
    mean, std = xtr.mean(0), xtr.std(0, correction=0)
    const = std == 0
    assert const.any()
    expect_te = (xte - mean) / torch.where(const, 1.0, std)
    torch.testing.assert_close(std_ds.x_test, expect_te)
    torch.testing.assert_close(std_ds.x_train[:, ~const].mean(0), torch.zeros(int((~const).sum()), dtype=torch.float64))
    torch.testing.assert_close(
        std_ds.x_train[:, ~const].std(0, correction=0), torch.ones(int((~const).sum()), dtype=torch.float64)
    )
    # sum_to_one: each training column sums to 1; all-zero columns are left as they are
    s1 = load_dataset("digits", scaling="sum_to_one", dtype=torch.float64)
    sums = xtr.sum(0)
    zero = sums == 0
    assert zero.any()
    torch.testing.assert_close(s1.x_train.sum(0)[~zero], torch.ones(int((~zero).sum()), dtype=torch.float64))
    torch.testing.assert_close(s1.x_test, xte / torch.where(zero, 1.0, sums))
    # unit: digits pixels are 0..16
    unit = load_dataset("digits", scaling="unit", dtype=torch.float64)
    torch.testing.assert_close(unit.x_test, xte / 16)
    # unit on tabular data: min-max with the training range
    iris = load_dataset("iris", scaling=None, dtype=torch.float64)
    iris_unit = load_dataset("iris", scaling="unit", dtype=torch.float64)
    lo, hi = iris.x_train.min(0).values, iris.x_train.max(0).values
    torch.testing.assert_close(iris_unit.x_test, (iris.x_test - lo) / (hi - lo))
    assert float(iris_unit.x_train.min()) == 0.0 and float(iris_unit.x_train.max()) == 1.0


def test_diabetes_features_are_raw_so_sum_to_one_is_meaningful() -> None:
    ds = load_dataset("diabetes", scaling=None, dtype=torch.float64)
    assert float(ds.x_train[:, 0].min()) >= 18  # age in years, not sklearn's centred version
    s1 = load_dataset("diabetes", scaling="sum_to_one", dtype=torch.float64)
    torch.testing.assert_close(s1.x_train.sum(0), torch.ones(10, dtype=torch.float64))
    assert ds.y_train.dtype == torch.float64 and s1.y_train.equal(ds.y_train)  # targets are not scaled


def test_images_and_resize() -> None:
    flat = load_dataset("digits", scaling=None)
    img = load_dataset("digits", scaling=None, image=True)
    assert img.input_shape == (1, 8, 8) and img.x_train.reshape(img.num_train, 64).equal(flat.x_train)
    big = load_dataset("digits", scaling=None, resize=28, dtype=torch.float64)
    assert big.input_shape == (1, 28, 28)
    expect = F.interpolate(img.x_test.double(), size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big.x_test, expect)
    # scaling is fitted on the resized inputs: standardized MNIST-shaped digits have mean 0, std 1 per channel
    std = load_dataset("digits", resize=28, dtype=torch.float64)
    assert abs(float(std.x_train.mean())) < 1e-12 and abs(float(std.x_train.std(correction=0)) - 1) < 1e-9
    unit = load_dataset("digits", resize=32, scaling="unit")
    assert float(unit.x_train.min()) >= 0.0 and float(unit.x_train.max()) <= 1.0
    assert load_dataset("digits", resize=16, image=False).input_shape == (256,)


def test_subsampling_is_stratified() -> None:
    ds = load_dataset("digits", train_size=100, test_size=50)
    assert ds.num_train == 100 and ds.num_test == 50
    assert ds.y_train.bincount(minlength=10).tolist() == [10] * 10
    assert ds.y_test.bincount(minlength=10).tolist() == [5] * 10
    with pytest.raises(ValueError, match="train_size"):
        load_dataset("iris", train_size=1000)


def test_separable_dataset() -> None:
    ds = load_dataset("separable", scaling=None)
    assert ds.num_train == 1000 and ds.num_test == 333 and ds.input_shape == (2,) and ds.num_classes == 2
    assert set(ds.y_train.tolist()) == {0, 1}
    assert load_dataset("separable", n=50, dim=5).input_shape == (5,)


def test_dtype_and_to() -> None:
    ds = load_dataset("diabetes", dtype=torch.float64)
    assert ds.x_train.dtype == ds.y_train.dtype == torch.float64
    ds32 = ds.to(dtype=torch.float32)
    assert ds32.x_test.dtype == ds32.y_test.dtype == torch.float32
    cls = load_dataset("iris").to("cpu", torch.float64)
    assert cls.x_train.dtype == torch.float64 and cls.y_train.dtype == torch.int64


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "imagenet"}, "'digits'"),
        ({"name": "iris", "scaling": "minmax"}, "'standardize'"),
        ({"name": "iris", "test_fraction": 0.0}, "test_fraction"),
        ({"name": "iris", "test_fraction": 1.0}, "test_fraction"),
        ({"name": "iris", "seed": -1}, "seed"),
        ({"name": "iris", "dtype": torch.int64}, "dtype"),
        ({"name": "iris", "colour": True}, "colour"),
        ({"name": "iris", "image": True}, "image"),
        ({"name": "digits", "resize": 0}, "resize"),
        ({"name": "digits", "image": "yes"}, "image"),
        ({"name": "separable", "margin": -1.0}, "margin"),
        ({"name": "mnist"}, "data_dir"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        load_dataset(**kwargs)


def test_scaling_error_lists_allowed_values() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("iris", scaling="minmax")
    for allowed in SCALINGS:
        assert repr(allowed) in str(info.value)
    assert "image" in COMMON_OPTIONS


def test_image_flags_match_the_sources() -> None:
    for name, info in DATASETS.items():
        assert info.images == (name in ("digits", "mnist", "fashion_mnist", "cifar10"))
        assert info.image_default == (info.images and name != "digits")
