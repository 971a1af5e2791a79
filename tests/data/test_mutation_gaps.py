"""Gaps a mutation review of theorylr.data found: each test kills a mutant that survived the rest of the suite
(the docstrings name the mutation), plus two bugs it found: tied remainders in ``split_indices`` compared as floats,
and ``load_dataset(seed=SEED_MAX, test_size=k)``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.test_files import cifar_bytes, idx_bytes, make_mnist, write
from theorylr._validation import SEED_MAX
from theorylr.data import (
    Dataset,
    Quadratic,
    iterate_batches,
    load_cifar10,
    load_dataset,
    load_mnist,
    make_quadratic,
    make_separable,
    read_cifar10_batch,
    read_idx,
    scale_features,
    split_indices,
)

# ------------------------------------------------------------------------------------------------ data/files.py


def test_read_idx_three_byte_file_is_too_short(tmp_path: Path) -> None:
    """F12 (files.py:153 `< 4` -> `< 3`): a 3-byte file raised IndexError, not the documented ValueError."""
    path = write(tmp_path / "x-idx1", bytes([0, 0, 8]))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*too short"):
        read_idx(path)


def test_read_idx_trailing_bytes_message_counts_raw_but_not_capped_gzip(tmp_path: Path) -> None:
    """F11 (files.py:121 capped -> False) and F21 (files.py:180 branches swapped): a raw file states how many bytes
    trail; a gzip file, read only one byte past the declared data, must not claim a (wrong) count of 1."""
    data = bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2]) + bytes(5)
    with pytest.raises(ValueError, match=r": 5 unexpected trailing bytes after"):
        read_idx(write(tmp_path / "raw", data))
    with pytest.raises(ValueError, match=r": unexpected trailing bytes after"):
        read_idx(write(tmp_path / "packed", data, gz=True))


def test_load_mnist_rejects_four_dimensional_images(tmp_path: Path) -> None:
    """F25 (files.py:203 `ndim != 3` -> `ndim < 3`): a 4-D images file was loaded as (N, 1, 1, 6, 6)."""
    make_mnist(tmp_path)
    images = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((20, 1, 6, 6), dtype=np.uint8)))
    with pytest.raises(ValueError, match=re.escape(str(images)) + ".*3 dimensions"):
        load_mnist(tmp_path)


def test_load_mnist_bad_label_message_names_the_first_label_above_nine(tmp_path: Path) -> None:
    """F31 (files.py:213 `data > 9` -> `data >= 9`): a valid 9 before the bad label was reported as the culprit."""
    make_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([9, 12] + [0] * 18, dtype=np.uint8)))
    with pytest.raises(ValueError, match="label 12 at index 1 is out of range"):
        load_mnist(tmp_path)


def test_load_mnist_empty_labels_file_is_a_count_mismatch(tmp_path: Path) -> None:
    """F32 (files.py:212 `data.numel() and` dropped): an empty labels file raised a bare RuntimeError from max()."""
    make_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(0, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"holds 20 images but .* holds 0 labels"):
        load_mnist(tmp_path)


def test_read_cifar10_batch_one_extra_byte_is_truncation(tmp_path: Path) -> None:
    """F37 (files.py:287 `% 3073` -> `% 3073 > 1`): a remainder of exactly 1 byte escaped the size check (numpy's
    reshape error, without the path, came instead)."""
    path = write(tmp_path / "data_batch_1.bin", cifar_bytes([1, 2])[0] + b"\x00")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a multiple of the 3073"):
        read_cifar10_batch(path)


def make_cifar(root: Path, seed: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write(root / f"data_batch_{i}.bin", cifar_bytes([i % 10], seed=seed + i)[0])
    write(root / "test_batch.bin", cifar_bytes([4], seed=seed + 9)[0])


def test_load_cifar10_rejects_more_than_ten_class_names(tmp_path: Path) -> None:
    """F42 (files.py:307 `!= 10` -> `< 10`): eleven names were accepted (class_names no longer indexed by label)."""
    make_cifar(tmp_path)
    (tmp_path / "batches.meta.txt").write_text("\n".join(f"c{k}" for k in range(11)))
    with pytest.raises(ValueError, match="expected 10 class names, one per line, found 11"):
        load_cifar10(tmp_path)


def test_load_cifar10_prefers_batches_in_the_folder_itself_over_a_nested_folder(tmp_path: Path) -> None:
    """F43 (files.py:330 `and` -> `or`): with batches in ``directory`` and a cifar-10-batches-bin folder beside them,
    the nested copy was read instead."""
    make_cifar(tmp_path, seed=0)
    make_cifar(tmp_path / "cifar-10-batches-bin", seed=100)
    s = load_cifar10(tmp_path)
    expected, _ = read_cifar10_batch(tmp_path / "test_batch.bin")
    assert torch.equal(s.x_test, expected)


# ---------------------------------------------------------------------------------------------- data/scaling.py


def t64(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_sum_to_one_leaves_a_column_that_cancels_up_to_rounding_unchanged() -> None:
    """S01 (scaling.py:18 `_ZERO_SUM_RTOL = 1e-12` -> 0) and S18 (scaling.py:113 `sum|x|` -> `sum x`): 0.1 + 0.2 - 0.3
    is 5.6e-17, not 0; dividing by it blew the column up to ~1e15."""
    xtr, xte = t64([[0.1, 1.0], [0.2, 1.0], [-0.3, 2.0]]), t64([[4.0, 4.0]])
    a, b = scale_features(xtr, xte, "sum_to_one")
    assert a[:, 0].tolist() == [0.1, 0.2, -0.3] and b[0, 0].item() == 4.0
    assert a[:, 1].tolist() == [0.25, 0.25, 0.5]


def test_sum_to_one_divides_a_column_that_nearly_cancels() -> None:
    """S02 (scaling.py:18 rtol 1e-12 -> 1e-3): only |sum| <= 1e-12 * sum|x| is "zero"; a sum of 1e-3 against
    sum|x| = 4 is divided by, as documented."""
    a, _ = scale_features(t64([[2.0], [-1.999]]), t64([[1.0]]), "sum_to_one")
    torch.testing.assert_close(a.sum(0), t64([1.0]))


def test_standardize_near_constant_column_is_only_centred() -> None:
    """S03 (scaling.py:20 `_CONSTANT_RTOL = 1e-10` -> 0): "constant" means std <= 1e-10 * |mean|, so a column whose
    spread is 1e-12 of its mean is centred, not scaled to +-1. (Exactly constant columns get std == 0 exactly from
    torch.var_mean on the CPU, so the existing 0.1's test never reaches the tolerance.)"""
    xtr = t64([[1.0], [1.0 + 2**-40]])
    a, _ = scale_features(xtr, xtr.clone(), "standardize")
    assert a.abs().max().item() < 1e-9


def test_standardize_scales_a_column_with_small_relative_spread() -> None:
    """S04 (scaling.py:20 rtol 1e-10 -> 1e-2): std/|mean| = 2.5e-3 is not constant: it gets std 1."""
    a, _ = scale_features(t64([[100.0], [100.5]]), t64([[100.25]]), "standardize")
    assert a.flatten().tolist() == [-1.0, 1.0]


def test_standardize_constant_negative_column() -> None:
    """S15 (scaling.py:106 `mean.abs()` -> `mean`): a constant negative column gave 0/0 = nan."""
    a, b = scale_features(t64([[-5.0, 1.0], [-5.0, 3.0]]), t64([[-4.0, 2.0]]), "standardize")
    assert a[:, 0].tolist() == [0.0, 0.0] and b[0, 0].item() == 1.0


def test_standardize_three_dimensional_input_is_per_feature() -> None:
    """S09 (scaling.py:92 `ndim == 4` -> `ndim >= 3`): only (N, C, H, W) images get per-channel statistics; an
    (N, A, B) input is standardized per feature."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 2, 3, generator=g, dtype=torch.float64) * torch.arange(1.0, 4.0, dtype=torch.float64)
    a, _ = scale_features(x, x.clone(), "standardize")
    torch.testing.assert_close(a.mean(0), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.std(0, correction=0), torch.ones(2, 3, dtype=torch.float64))


def test_standardize_float16_images_per_channel() -> None:
    """S11 (scaling.py:97 `count = N * K` -> `N`): the 16-bit path divided the per-channel sums by N only, not by
    N * H * W (only flat float16 inputs, K = 1, were tested)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 2, 3, 3, generator=g) * 10).half()
    a, _ = scale_features(x, x.clone(), "standardize")
    ref, _ = scale_features(x.float(), x.float(), "standardize")
    assert a.dtype == torch.float16
    torch.testing.assert_close(a.float(), ref, atol=1e-2, rtol=1e-2)


def test_unit_min_max_constant_feature_becomes_zero() -> None:
    """S23 (scaling.py:122 `span > 0` -> `>= 0`) and S24 (`ones_like` -> `zeros_like`): a constant feature became
    0/0 = nan instead of the documented 0."""
    a, b = scale_features(t64([[3.0, 0.0], [3.0, 2.0]]), t64([[4.0, 1.0]]), "unit")
    assert a.tolist() == [[0.0, 0.0], [0.0, 1.0]] and b.tolist() == [[1.0, 0.5]]


def test_integer_training_set_with_floating_test_set_is_scaled() -> None:
    """S06 (scaling.py:78 `and` -> `or`): raw uint8 x_train with a float x_test must be scaled as float32 too."""
    xtr = torch.tensor([[0], [2]], dtype=torch.uint8)
    a, b = scale_features(xtr, torch.tensor([[1.0]]), "standardize")
    assert a.dtype == torch.float32 and a.flatten().tolist() == [-1.0, 1.0] and b.item() == 0.0


def test_trailing_shape_is_compared_in_full() -> None:
    """S30 (scaling.py:80 `shape[1:]` -> `shape[-1:]`): (N, 2, 3) and (M, 4, 3) share only the last dimension."""
    with pytest.raises(ValueError, match="same trailing shape"):
        scale_features(torch.zeros(2, 2, 3), torch.zeros(2, 4, 3), None)


# --------------------------------------------------------------------------------------------- data/batching.py


def test_split_indices_unstratified_ignores_the_shape_of_y() -> None:
    """B01 (batching.py:44 `stratify and y.ndim != 1` -> `y.ndim != 1`): y is only read when stratifying, so a
    multi-output regression target (n, 2) is fine with stratify=False."""
    train, test = split_indices(torch.zeros(10, 2), 3, stratify=False, seed=0)
    assert test.numel() == 3 and torch.cat([train, test]).sort().values.tolist() == list(range(10))


def test_split_indices_ties_go_to_lower_class_index_with_many_classes() -> None:
    """B05 (batching.py:62 `kind="stable"` -> `"quicksort"`): with 17 classes numpy's quicksort reorders equal
    remainders, and the extra slots went to other classes than the documented lower indices."""
    r = [3, 2, 1, 1, 1, 1, 2, 3, 0, 3, 2, 1, 2, 2, 1, 1, 2]  # class k has 4 + r[k] examples; num_test = n / 4
    counts = [4 + v for v in r]
    y = torch.tensor([k for k, c in enumerate(counts) for _ in range(c)])
    num_test = len(y) // 4  # quota_k = 1 + r[k] / 4 exactly (binary fractions: no rounding)
    extra = sorted(range(17), key=lambda k: (-r[k], k))[: num_test - 17]
    _, test = split_indices(y, num_test, seed=0)
    assert y[test].bincount(minlength=17).tolist() == [1 + (k in extra) for k in range(17)]


def test_split_indices_of_an_empty_label_tensor() -> None:
    """B07 (batching.py:68 the `if chosen` guard): zero examples give two empty index tensors, not a numpy error."""
    train, test = split_indices(torch.zeros(0, dtype=torch.int64), 0)
    assert train.tolist() == [] and test.tolist() == [] and test.dtype == torch.int64


def test_split_indices_refuses_a_seed_above_seed_max() -> None:
    """B14 (batching.py:50 `max_value=SEED_MAX` dropped)."""
    with pytest.raises(ValueError, match="seed"):
        split_indices(torch.tensor([0, 1, 0, 1]), 2, seed=2**63)


def test_iterate_batches_refuses_more_inputs_than_targets() -> None:
    """B12 (batching.py:113 `!=` -> `<`): only the case len(x) < len(y) was tested."""
    with pytest.raises(ValueError, match="same number of examples"):
        iterate_batches(torch.zeros(5, 1), torch.zeros(4), 2)


# ----------------------------------------------------------------------------------------------- data/dataset.py


def _xy(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n, 3), torch.tensor([0, 1] * (n // 2))


def test_dataset_refuses_one_dimensional_inputs() -> None:
    """D01 (dataset.py:63 `x.ndim < 2` -> `< 1`): x must be (N, ...) with at least one feature dimension."""
    _, y = _xy()
    with pytest.raises(ValueError, match=r"x_train must be \(N, \.\.\.\)"):
        Dataset("d", torch.zeros(4), y, torch.zeros(4, 3), y, num_classes=2)


def test_dataset_refuses_label_minus_one() -> None:
    """D04 (dataset.py:83 `min < 0` -> `min < -1`): the existing test only used -3."""
    x, y = _xy()
    with pytest.raises(ValueError, match=r"y_train labels must lie in \[0, 2\) \(got labels from -1 to 1\)"):
        Dataset("d", x, torch.tensor([-1, 1, 0, 1]), x, y, num_classes=2)


def test_dataset_refuses_too_many_class_names() -> None:
    """D06 (dataset.py:88 `!=` -> `<`): class_names must have exactly num_classes entries."""
    x, y = _xy()
    with pytest.raises(ValueError, match="class_names must have num_classes=2 entries"):
        Dataset("d", x, y, x, y, num_classes=2, class_names=("a", "b", "c"))


def test_dataset_to_refuses_an_integer_dtype_by_name() -> None:
    """D10 (dataset.py:124 `dtype.is_floating_point` dropped): the error must name the dtype argument, not come
    from the rebuilt record's x_train check."""
    x, y = _xy()
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        Dataset("d", x, y, x, y, num_classes=2).to(dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- data/registry.py


def test_separable_always_has_a_test_point() -> None:
    """R04 (registry.py:110 `max(1, ...)` -> `max(0, ...)`): n=2, test_fraction=0.1 rounds to 0 extra points."""
    ds = load_dataset("separable", n=2, test_fraction=0.1, scaling=None)
    assert ds.num_train == 2 and ds.num_test == 1


def test_split_keeps_at_least_one_training_example() -> None:
    """R09 (registry.py:315 `min(..., n - 1)` -> `min(..., n)`): test_fraction=0.999 of iris rounds to all 150."""
    ds = load_dataset("iris", test_fraction=0.999, scaling=None)
    assert ds.num_train == 1 and ds.num_test == 149


def test_split_keeps_at_least_one_test_example() -> None:
    """R10 (registry.py:315 `max(..., 1)` -> `max(..., 0)`): test_fraction=0.001 of iris rounds to 0 test examples."""
    ds = load_dataset("iris", test_fraction=0.001, scaling=None)
    assert ds.num_test == 1 and ds.num_train == 149


# --------------------------------------------------------------------------------------------- data/synthetic.py


def test_separable_offset_is_uniform_on_minus_half_to_half() -> None:
    """Y02 (synthetic.py:116 `- 0.5` -> `- 1.0`): the documented offset is b ~ U(-0.5, 0.5)."""
    offsets = [make_separable(4, seed=s, return_hyperplane=True)[3] for s in range(20)]
    assert all(-0.5 <= b < 0.5 for b in offsets)
    assert any(b > 0 for b in offsets) and any(b < 0 for b in offsets)


def test_quadratic_refuses_asymmetry_beyond_4d_units_of_rounding() -> None:
    """Y06 (synthetic.py:176 tolerance 4 d eps -> 400 d eps): an asymmetry of 1e-14 on a unit float64 matrix is
    ~23 units of rounding, above the documented 4 d = 8."""
    with pytest.raises(ValueError, match="hessian must be symmetric"):
        Quadratic(torch.tensor([[1.0, 1e-14], [0.0, 1.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))


def test_rotated_quadratic_hessian_is_exactly_symmetric() -> None:
    """Y10 (synthetic.py:296 the symmetrisation `0.5 * (H + Hᵀ)` deleted): Q diag Qᵀ is symmetric only up to
    rounding for d >= 3."""
    q = make_quadratic((1.0, 2.0, 5.0, 9.0), (0.0, 1.0, 2.0, 3.0), rotate=True, seed=0)
    assert torch.equal(q.hessian, q.hessian.T)


# ------------------------------------------------------------------------------------------------ the two bugs


def test_split_indices_breaks_exact_ties_by_class_index_whatever_the_float_rounding() -> None:
    """Counts (6, 16, 78), 10 to the test set: the exact shares are 0.6, 1.6 and 7.8, so the remainders 0.6, 0.6
    and 0.8 give the two extra places to classes 2 and 0 (the lower index of the tie). As floats 1.6 - 1 is
    0.6000000000000001, and class 1 took class 0's place: [0, 2, 8]."""
    y = torch.tensor([0] * 6 + [1] * 16 + [2] * 78)
    _, test = split_indices(y, 10, seed=0)
    assert y[test].bincount().tolist() == [1, 1, 8]


def test_load_dataset_takes_every_valid_seed_with_a_test_subsample() -> None:
    """The test subsample draws from ``seed + 1``, which at ``SEED_MAX`` failed the range check it had passed."""
    data = load_dataset("iris", seed=SEED_MAX, test_size=5)
    assert data.num_test == 5
