"""MNIST IDX and CIFAR-10 binary readers, on small valid and broken files built here."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from theorylr.data import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    load_cifar10,
    load_dataset,
    load_mnist,
    read_cifar10_batch,
    read_idx,
)

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def names_file(path: Path) -> str:
    return re.escape(str(path))


# ------------------------------------------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path: Path, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    path = write(tmp_path / "a-idx3", idx_bytes(array), gz)
    out = read_idx(path)
    assert tuple(out.shape) == (3, 4, 5)
    np.testing.assert_array_equal(out.numpy(), array)


def test_read_idx_big_endian_values(tmp_path: Path) -> None:
    # 0x0102 stored big-endian must read as 258, not 513.
    path = write(tmp_path / "x", bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(path).tolist() == [258, -2]


def test_read_idx_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    data = idx_bytes(np.arange(6, dtype=np.uint8))
    plain = read_idx(write(tmp_path / "plain.gz", data))  # misleading name, raw content
    packed = read_idx(write(tmp_path / "packed", data, gz=True))  # compressed content, no .gz
    assert plain.tolist() == packed.tolist() == list(range(6))


BROKEN_IDX = {
    "empty": (b"", "too short"),
    "short": (b"\x00\x00", "too short"),
    "bad magic": (bytes([1, 0, 8, 1, 0, 0, 0, 1, 7]), "magic"),
    "bad magic 2": (bytes([0, 7, 8, 1, 0, 0, 0, 1, 7]), "magic"),
    "unknown type": (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 7]), "type code 0x07"),
    "zero dims": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "truncated header": (bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]), "truncated IDX header"),
    "truncated data": (bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5]), "truncated IDX data"),
    "truncated wide": (bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes(7), "truncated IDX data"),
    "trailing": (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "trailing"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(BROKEN_IDX))
def test_read_idx_rejects_broken_files_naming_them(tmp_path: Path, case: str, gz: bool) -> None:
    data, reason = BROKEN_IDX[case]
    path = write(tmp_path / "broken-idx", data, gz)
    with pytest.raises(ValueError, match=names_file(path)) as info:
        read_idx(path)
    assert reason in str(info.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = write(tmp_path / "cut.gz", packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=names_file(path) + ".*gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------- load_mnist


def make_mnist(root: Path, *, n_train: int = 20, n_test: int = 10, size: int = 6, gz: bool = False) -> dict:
    rng = np.random.default_rng(1)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in data.items():
        write(root / (name + (".gz" if gz else "")), idx_bytes(array), gz)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path: Path, gz: bool) -> None:
    data = make_mnist(tmp_path, gz=gz)
    s = load_mnist(tmp_path)
    assert s.x_train.dtype == torch.uint8 and s.y_train.dtype == torch.int64
    assert tuple(s.x_train.shape) == (20, 1, 6, 6) and tuple(s.x_test.shape) == (10, 1, 6, 6)
    np.testing.assert_array_equal(s.x_train[:, 0].numpy(), data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(s.y_test.numpy(), data["t10k-labels-idx1-ubyte"])
    assert s.class_names == MNIST_CLASSES
    assert load_mnist(tmp_path, fashion=True).class_names == FASHION_MNIST_CLASSES


def test_load_mnist_accepts_dotted_names(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-images.idx3-ubyte")
    assert load_mnist(tmp_path).x_train.shape[0] == 20


def test_load_mnist_missing_file_names_directory(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=names_file(tmp_path) + ".*t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "array", "reason"),
    [
        ("train-labels-idx1-ubyte", np.array([0, 1, 10] + [0] * 17, dtype=np.uint8), "label 10 at index 2"),
        ("train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8), "20 images but"),
        ("train-labels-idx1-ubyte", np.zeros((20, 1), dtype=np.uint8), "1 dimension"),
        ("train-labels-idx1-ubyte", np.zeros(20, dtype=np.int32), "uint8"),
        ("t10k-images-idx3-ubyte", np.zeros((10, 36), dtype=np.uint8), "3 dimensions"),
        ("t10k-images-idx3-ubyte", np.zeros((10, 5, 5), dtype=np.uint8), "train images are (6, 6)"),
    ],
)
def test_load_mnist_rejects_inconsistent_files(tmp_path: Path, name: str, array: np.ndarray, reason: str) -> None:
    make_mnist(tmp_path)
    write(tmp_path / name, idx_bytes(array))
    images = tmp_path / name.replace("labels-idx1", "images-idx3")
    expected = images if "images" in reason else tmp_path / name
    with pytest.raises(ValueError, match=names_file(expected)) as info:
        load_mnist(tmp_path)
    assert reason in str(info.value)


def test_load_dataset_mnist(tmp_path: Path) -> None:
    make_mnist(tmp_path, size=28)
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("mnist")
    ds = load_dataset("mnist", data_dir=tmp_path, scaling="unit")
    assert ds.input_shape == (1, 28, 28) and ds.num_train == 20 and ds.num_test == 10 and ds.num_classes == 10
    raw = load_mnist(tmp_path)
    torch.testing.assert_close(ds.x_train, raw.x_train.float() / 255)
    flat = load_dataset("mnist", data_dir=tmp_path, scaling=None, image=False, train_size=10)
    assert flat.input_shape == (784,) and flat.num_train == 10
    assert flat.y_train.bincount(minlength=10).tolist() == [1] * 10  # stratified subsample
    assert load_dataset("fashion_mnist", data_dir=tmp_path).class_names == FASHION_MNIST_CLASSES


# --------------------------------------------------------------------------------------------------------- CIFAR


def cifar_bytes(labels: list[int], seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], pixels], axis=1)
    return records.tobytes(), pixels


@pytest.mark.parametrize("gz", [False, True])
def test_read_cifar10_batch_layout(tmp_path: Path, gz: bool) -> None:
    data, pixels = cifar_bytes([3, 9, 0])
    images, labels = read_cifar10_batch(write(tmp_path / "data_batch_1.bin", data, gz))
    assert images.dtype == torch.uint8 and tuple(images.shape) == (3, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.tolist() == [3, 9, 0]
    # pixel (c, row, col) of record i is byte 1 + c*1024 + row*32 + col of that record
    assert int(images[1, 2, 5, 7]) == int(pixels[1, 2 * 1024 + 5 * 32 + 7])
    np.testing.assert_array_equal(images.reshape(3, -1).numpy(), pixels)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("case", "reason"),
    [("empty", "empty"), ("truncated", "not a multiple of the 3073"), ("label", "record 1 has label 10")],
)
def test_read_cifar10_batch_rejects_broken_files(tmp_path: Path, case: str, reason: str, gz: bool) -> None:
    good, _ = cifar_bytes([1, 2])
    data = {"empty": b"", "truncated": good[:-1], "label": cifar_bytes([1, 10])[0]}[case]
    path = write(tmp_path / "batch.bin", data, gz)
    with pytest.raises(ValueError, match=names_file(path)) as info:
        read_cifar10_batch(path)
    assert reason in str(info.value)


def make_cifar(root: Path, meta: str | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        write(root / f"data_batch_{i}.bin", cifar_bytes([i, (2 * i) % 10], seed=i)[0])
    write(root / "test_batch.bin", cifar_bytes([4, 5, 6], seed=9)[0], gz=True)
    write(root / "test_batch.bin.gz", cifar_bytes([4, 5, 6], seed=9)[0], gz=True)
    (root / "test_batch.bin").unlink()
    if meta is not None:
        (root / "batches.meta.txt").write_text(meta)


def test_load_cifar10(tmp_path: Path) -> None:
    names = [f"class{k}" for k in range(10)]
    make_cifar(tmp_path, "\n".join(names) + "\n\n")
    s = load_cifar10(tmp_path)
    assert tuple(s.x_train.shape) == (10, 3, 32, 32) and tuple(s.x_test.shape) == (3, 3, 32, 32)
    assert s.y_train.tolist() == [1, 2, 2, 4, 3, 6, 4, 8, 5, 0] and s.y_test.tolist() == [4, 5, 6]
    assert s.class_names == tuple(names)


def test_load_cifar10_nested_folder_and_default_names(tmp_path: Path) -> None:
    make_cifar(tmp_path / "cifar-10-batches-bin")
    s = load_cifar10(tmp_path)
    assert s.x_train.shape[0] == 10 and s.class_names == CIFAR10_CLASSES


def test_load_cifar10_errors(tmp_path: Path) -> None:
    make_cifar(tmp_path, "a\nb\n")
    with pytest.raises(ValueError, match=names_file(tmp_path / "batches.meta.txt") + ".*10 class names"):
        load_cifar10(tmp_path)
    (tmp_path / "batches.meta.txt").unlink()
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=names_file(tmp_path) + ".*data_batch_3.bin"):
        load_cifar10(tmp_path)


def test_load_dataset_cifar10(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("cifar10")
    ds = load_dataset("cifar10", data_dir=tmp_path, dtype=torch.float64)
    assert ds.input_shape == (3, 32, 32) and ds.num_train == 10 and ds.num_test == 3
    # standardize on images: per channel over (N, H, W) of the training set
    mean = ds.x_train.mean(dim=(0, 2, 3))
    std = ds.x_train.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(std, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("shape", "reason"), [((0, 6, 6), "holds no images"), ((20, 0, 0), "the images have no pixels")]
)
def test_load_mnist_rejects_images_files_without_images(tmp_path: Path, shape: tuple, reason: str) -> None:
    make_mnist(tmp_path)
    images = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros(shape, dtype=np.uint8)))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(shape[0], dtype=np.uint8)))
    with pytest.raises(ValueError, match=names_file(images) + ": " + reason):
        load_mnist(tmp_path)
