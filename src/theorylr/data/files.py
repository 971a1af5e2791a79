"""Readers for the MNIST IDX and CIFAR-10 binary formats: validated, no network, nothing unpickled.

Every malformed or truncated file raises :class:`ValueError` whose message starts with the file's path; a
missing file raises :class:`FileNotFoundError` naming the directory and the names that were tried. Files are
read into one buffer and viewed with :func:`numpy.frombuffer` (no per-pixel Python loops); gzip-compressed
files are recognised by their content (``1f 8b``), whatever their name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ImageSplits",
    "load_cifar10",
    "load_mnist",
    "read_cifar10_batch",
    "read_idx",
]

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# IDX type code -> (numpy dtype as stored: big-endian, native dtype returned).
_IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: ("u1", "u1"),
    0x09: ("i1", "i1"),
    0x0B: (">i2", "i2"),
    0x0C: (">i4", "i4"),
    0x0D: (">f4", "f4"),
    0x0E: (">f8", "f8"),
}
_CIFAR_RECORD = 1 + 3 * 32 * 32
_GZIP_MAGIC = b"\x1f\x8b"


class ImageSplits(NamedTuple):
    """Raw image data: ``uint8`` images ``(N, C, H, W)``, ``int64`` labels, and the class names."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]


def _read_bytes(path: Path) -> bytearray:
    """The file's bytes (decompressed when gzip), in a writable buffer so numpy/torch can view it without copy."""
    with open(path, "rb") as f:
        data = bytearray(os.fstat(f.fileno()).st_size)
        got = f.readinto(data)
    del data[got:]
    if data[:2] == _GZIP_MAGIC:
        try:
            data = bytearray(gzip.decompress(data))
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return data


def _read_at_most(stream: Any, limit: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of ``stream``, a chunk at a time: a header that declares terabytes costs no more memory
    than the bytes that are really there."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        part = stream.read(min(chunk, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_idx_bytes(path: Path) -> tuple[bytearray, bool]:
    """An IDX file's bytes, and whether they were cut short. A raw file is read whole (its size is on the disk); a
    gzip file is decompressed as a stream, header first, then at most one byte more than the header declares, so
    that a small file that decompresses to gigabytes is refused without holding them (``capped``: more followed)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    if not gzipped:
        return _read_bytes(path), False
    try:
        with gzip.open(path, "rb") as stream:
            head = stream.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = stream.read(4 * ndim)
            known = len(head) == 4 and len(dims) == 4 * ndim and head[2] in _IDX_TYPES
            expected = 0
            if known:
                shape = struct.unpack(f">{ndim}I", dims)
                expected = math.prod(shape) * np.dtype(_IDX_TYPES[head[2]][0]).itemsize
            body = _read_at_most(stream, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return bytearray(head + dims + body), len(body) > expected


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read an IDX file (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

    Format: a 4-byte magic number ``00 00 TT D`` (``TT`` the data type: ``08`` uint8, ``09`` int8, ``0B`` int16,
    ``0C`` int32, ``0D`` float32, ``0E`` float64; ``D`` the number of dimensions), then ``D`` big-endian uint32
    sizes, then the data, big-endian, in C order.

    Every part is checked: the two zero bytes, a known type code, ``D >= 1``, a complete header, and a data
    length equal to the product of the sizes times the item size (shorter: truncated; longer: trailing bytes).

    Args:
        path: the file.

    Returns:
        a tensor of the declared shape and type (``uint8`` for MNIST), in native byte order.

    Raises:
        ValueError: the file is malformed or truncated; the message starts with the path.
        FileNotFoundError: the file does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(p).tolist()
        [7, 2, 1]
    """
    path = Path(path)
    buf, capped = _read_idx_bytes(path)
    if len(buf) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(buf)} bytes, need at least 4)")
    if buf[0] != 0 or buf[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{bytes(buf[:4]).hex()} (the first two bytes must be zero; "
            f"is this an IDX file?)"
        )
    code, ndim = buf[2], buf[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x} (expected one of {known})")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(buf)} bytes, {header} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    stored, native = _IDX_TYPES[code]
    itemsize = np.dtype(stored).itemsize
    count = math.prod(shape)
    expected, actual = count * itemsize, len(buf) - header
    if actual < expected:
        raise ValueError(
            f"{path}: truncated IDX data: the header declares shape {shape} of {np.dtype(native).name} "
            f"({expected} bytes) but only {actual} bytes follow it"
        )
    if actual > expected:
        extra = "unexpected trailing bytes" if capped else f"{actual - expected} unexpected trailing bytes"
        raise ValueError(f"{path}: {extra} after the IDX data of shape {shape} ({expected} bytes)")
    array = np.frombuffer(buf, dtype=stored, count=count, offset=header).reshape(shape)
    if stored != native:
        array = array.astype(native)  # byte swap (a copy) for multi-byte types
    return torch.from_numpy(array)


def _find(directory: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    tried = ", ".join(f"{n}[.gz]" for n in names)
    raise FileNotFoundError(f"{directory}: no {what} file found (looked for {tried})")


def _mnist_part(path: Path, *, images: bool) -> Tensor:
    data = read_idx(path)
    if data.dtype != torch.uint8:
        raise ValueError(
            f"{path}: MNIST {'images' if images else 'labels'} must be uint8 (type 0x08), got {data.dtype}"
        )
    if images and data.ndim != 3:
        raise ValueError(f"{path}: MNIST images must have 3 dimensions (N, rows, cols), got shape {tuple(data.shape)}")
    if images and data.shape[0] == 0:
        raise ValueError(f"{path}: holds no images (the IDX header declares shape {tuple(data.shape)})")
    if images and data.numel() == 0:
        raise ValueError(f"{path}: the images have no pixels (the IDX header declares shape {tuple(data.shape)})")
    if not images:
        if data.ndim != 1:
            raise ValueError(f"{path}: MNIST labels must have 1 dimension (N,), got shape {tuple(data.shape)}")
        if data.numel() and int(data.max()) > 9:
            bad = int(torch.nonzero(data > 9)[0, 0])
            raise ValueError(f"{path}: label {int(data[bad])} at index {bad} is out of range 0..9")
    return data


def load_mnist(directory: str | os.PathLike[str], *, fashion: bool = False) -> ImageSplits:
    """Load MNIST (or Fashion-MNIST, the same format and file names) from ``directory``.

    Looks for the four standard files, raw or with ``.gz``: ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (the variant spelling
    ``train-images.idx3-ubyte`` is accepted too). Checks types, dimensions, labels in 0..9, matching counts of
    images and labels, at least one image of at least one pixel per file, and the same image size in train and
    test.

    Args:
        directory: the folder holding the files.
        fashion: only selects the class names (Fashion-MNIST's clothing names instead of the digits).

    Returns:
        :class:`ImageSplits` with images ``(N, 1, 28, 28)`` uint8 (60000 train, 10000 test for the real sets).

    Raises:
        FileNotFoundError: a file is missing (the message names the directory and the names tried).
        ValueError: a file is malformed (the message names the file).
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected the folder holding the MNIST IDX files)")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _find(root, (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"), f"{split} images")
        lab_path = _find(root, (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"), f"{split} labels")
        images = _mnist_part(img_path, images=True)
        labels = _mnist_part(lab_path, images=False)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{img_path}: holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels"
            )
        parts[split] = (images.unsqueeze(1), labels.to(torch.int64), img_path)
    if parts["train"][0].shape[1:] != parts["test"][0].shape[1:]:
        raise ValueError(
            f"{parts['test'][2]}: test images are {tuple(parts['test'][0].shape[2:])} but train images are "
            f"{tuple(parts['train'][0].shape[2:])}"
        )
    names = FASHION_MNIST_CLASSES if fashion else MNIST_CLASSES
    return ImageSplits(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], names)


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Read one CIFAR-10 binary batch (``data_batch_1.bin`` ... ``test_batch.bin``), raw or gzip-compressed.

    The format is a sequence of 3073-byte records: one label byte (0..9), then 3072 pixel bytes (the 1024 red,
    then green, then blue values of a 32x32 image, row-major). The file size must be a positive multiple of 3073
    and every label at most 9.

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 3, 32, 32)`` and ``int64`` ``(N,)``.

    Raises:
        ValueError: empty, truncated (size not a multiple of 3073) or a label out of range; the message starts
            with the path.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "data_batch_1.bin"
        >>> _ = p.write_bytes(bytes([3]) + bytes(3072))
        >>> images, labels = read_cifar10_batch(p)
        >>> tuple(images.shape), labels.tolist()
        ((1, 3, 32, 32), [3])
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) == 0:
        raise ValueError(f"{path}: empty file (a CIFAR-10 batch holds 3073-byte records)")
    if len(buf) % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: size {len(buf)} bytes is not a multiple of the {_CIFAR_RECORD}-byte CIFAR-10 record "
            f"(1 label byte + 3072 pixel bytes): truncated, or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ValueError(f"{path}: record {int(bad[0])} has label {int(labels[bad[0]])}; CIFAR-10 labels are 0..9")
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _read_class_names(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file of class names ({exc})") from exc
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise ValueError(f"{path}: expected 10 class names, one per line, found {len(names)}")
    return names


def load_cifar10(directory: str | os.PathLike[str]) -> ImageSplits:
    """Load CIFAR-10 from the binary version's files in ``directory``.

    Reads ``data_batch_1.bin`` ... ``data_batch_5.bin`` (train, 50000 images) and ``test_batch.bin`` (10000),
    each raw or with ``.gz``, and the class names from ``batches.meta.txt`` when present (otherwise the standard
    names). ``directory`` may also be the folder that contains the extracted ``cifar-10-batches-bin``.

    Returns:
        :class:`ImageSplits` with images ``(N, 3, 32, 32)`` uint8.

    Raises:
        FileNotFoundError: a batch is missing (the message names the directory and the file).
        ValueError: a file is malformed (the message names the file).
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (expected the folder holding CIFAR-10's .bin files)")
    nested = root / "cifar-10-batches-bin"
    if nested.is_dir() and not any((root / f"data_batch_1.bin{s}").is_file() for s in ("", ".gz")):
        root = nested
    train = [read_cifar10_batch(_find(root, (f"data_batch_{i}.bin",), f"training batch {i}")) for i in range(1, 6)]
    x_test, y_test = read_cifar10_batch(_find(root, ("test_batch.bin",), "test batch"))
    meta = root / "batches.meta.txt"
    names = _read_class_names(meta) if meta.is_file() else CIFAR10_CLASSES
    x_train = torch.cat([x for x, _ in train])
    y_train = torch.cat([y for _, y in train])
    return ImageSplits(x_train, y_train, x_test, y_test, names)
