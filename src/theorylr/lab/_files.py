"""Atomic file writes for the lab's results directories.

Every file the lab writes goes through :func:`atomic_write_bytes`: the bytes go to a temporary file in the same
directory, which is flushed, ``fsync``-ed and then moved over the destination with :func:`os.replace` (atomic on
POSIX and Windows). A crash at any point leaves either the complete old file or the complete new one, never a
truncated mix; the directory entry is ``fsync``-ed too where the platform allows it, so the rename itself survives a
power cut.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "config.json"
    >>> write_json(path, {"lr": 0.1})
    >>> read_json(path)
    {'lr': 0.1}
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "load_checkpoint",
    "locked",
    "read_csv",
    "read_json",
    "remove_stale_temp_files",
    "save_checkpoint",
    "write_csv",
    "write_json",
    "write_text",
]


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()
_UMASK: list[int] = []  # the process's umask, read once (reading it means setting it)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file, ``0o666 & ~umask``: what the results get, where ``mkstemp`` would
    leave its private 0o600 (a report nobody else on a shared machine, or a web server, could read)."""
    with _UMASK_LOCK:
        if not _UMASK:
            mask = os.umask(0o022)
            os.umask(mask)
            _UMASK.append(mask)
    return 0o666 & ~_UMASK[0]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, :func:`os.replace`), with
    the permissions a plain ``open()`` would give it (``0o666`` less the umask).

    The parent directory is created when missing. On any error the temporary file is removed and the previous
    content of ``path`` (if any) is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)


_TEMP_SUFFIX = ".tmp"
# What mkstemp puts between the prefix and the suffix: 8 characters of "a-z0-9_" (tempfile._RandomNameSequence).
_TEMP_RANDOM = r"[a-z0-9_]{8}"


def remove_stale_temp_files(directory: str | os.PathLike[str], names: Sequence[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left in ``directory`` for the files ``names``
    when its process was killed mid-write (``kill -9``, a power cut, the out-of-memory killer): exactly the names
    its ``mkstemp`` gives, ``.<name>.<8 random characters>.tmp``. Nothing else is touched, not even a file of a
    similar name; a temp file that vanishes meanwhile is skipped.

    Call it only where no other process writes those files at the same time (a temp file there may be a live
    write, not yet moved into place). Returns the paths removed.

    Example:
        >>> import tempfile, pathlib
        >>> directory = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (directory / ".meta.json.k3j_9x2a.tmp").write_text("{")  # a write killed before its rename
        >>> _ = (directory / "notes.tmp").write_text("mine")
        >>> [p.name for p in remove_stale_temp_files(directory, ["meta.json"])]
        ['.meta.json.k3j_9x2a.tmp']
        >>> sorted(p.name for p in directory.iterdir())
        ['notes.tmp']
    """
    root = Path(directory)
    patterns = [re.compile(re.escape(f".{name}.") + _TEMP_RANDOM + re.escape(_TEMP_SUFFIX)) for name in names]
    removed = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``path`` (a ``.lock`` file beside it, ``fcntl.flock``), so
    that processes updating the same file one after the other do not lose each other's changes. Where ``fcntl`` is
    missing (Windows) or the file system refuses locks (some network mounts) it locks nothing. The lock file stays
    (empty); the lock is released when the context ends, also on an error or a killed process (the kernel drops it
    with the file descriptor).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.json"
        >>> with locked(path):
        ...     write_json(path, {"n": 1})
        >>> read_json(path)
        {'n': 1}
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): go on unlocked, as before locks
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    r"""Write ``text`` (UTF-8) atomically. A character UTF-8 cannot encode (the lone surrogates by which Python
    represents the undecodable bytes of a file name, shown in a report's paths) is written as its escape,
    ``\udcff``: the file stays valid UTF-8.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.md"
        >>> write_text(path, "results in /data/\udcff")
        >>> path.read_text(encoding="utf-8")
        'results in /data/\\udcff'
    """
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_config_values(name: str, value: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first entry of ``value`` that a run's ``config.json`` cannot record (the
    runner writes options with ``json.dumps(..., default=config_default)``): checked when a workload or rule is
    made, not as a ``TypeError`` from inside the first run.

    Example:
        >>> check_config_values("model_options", {"hidden": (8, 8)})
        >>> try:
        ...     check_config_values("rule_options", {"sgd": {"x": object()}})
        ... except ValueError as exc:
        ...     print(str(exc).split(": ", 1)[1])
        rule_options['sgd']['x'] is of type object
    """
    try:
        json.dumps(value, default=config_default)
    except (TypeError, ValueError) as exc:
        where = _unrecordable(value, name, set()) or str(exc)
        raise ValueError(
            f"{name} must hold only what config.json can record (numbers, strings, None, lists and mappings): {where}"
        ) from None


def config_default(value: Any) -> Any:
    """The ``default`` of the JSON encoding of ``config.json``: a NumPy scalar or one-element tensor as its Python
    number, any other iterable (a tuple, a set, an array) as a list; ``TypeError`` otherwise."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1 and value.ndim == 0):
        return value.item()
    return list(value)


def _unrecordable(value: Any, path: str, seen: set[int]) -> str:
    """Where ``json.dumps(value, default=config_default)`` fails (``""`` when it does not)."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if value is None or isinstance(value, (str, int, float)):
        return ""
    if id(value) in seen:
        return f"{path} contains itself"
    seen.add(id(value))
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key is not None and not isinstance(key, (str, int, float)):
                return f"{path} has the key {key!r}, of type {type(key).__name__}"
            found = _unrecordable(item, f"{path}[{key!r}]", seen)
            if found:
                return found
        return ""
    try:
        items = list(value)
    except TypeError:
        return f"{path} is of type {type(value).__name__}"
    return next((f for i, item in enumerate(items) if (f := _unrecordable(item, f"{path}[{i}]", seen))), "")


def _json_safe(value: Any, non_finite: Callable[[float], Any]) -> Any:
    """``value`` with one-element tensors and NumPy scalars as Python numbers, each non-finite float replaced by
    ``non_finite(x)``, mappings as dicts with string keys and lists, tuples and sets as lists (recursively)."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return non_finite(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v, non_finite) for v in value]
    return value


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so that every reader accepts the file. One-element tensors and NumPy
    scalars are taken as Python numbers first, so that theirs are caught too (a tensor's inf became ``Infinity``)."""
    return _json_safe(value, lambda x: None)


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_LEGACY_NON_FINITE = "__float__"  # the reproduction's analytic caches wrote {"__float__": "inf"} before


def _non_finite_name(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def encode_non_finite(value: Any) -> Any:
    """``value`` made JSON-safe without losing inf and NaN: NumPy scalars and one-element tensors become Python
    numbers, non-finite floats the strings ``"nan"``, ``"inf"`` and ``"-inf"``; dicts, lists, tuples and sets recurse.

    Example:
        >>> encode_non_finite({"a": [1.0, float("inf")], "b": float("nan")})
        {'a': [1.0, 'inf'], 'b': 'nan'}
        >>> decode_non_finite(encode_non_finite({"a": [1.0, float("-inf")]}))
        {'a': [1.0, -inf]}
    """
    return _json_safe(value, _non_finite_name)


def decode_non_finite(value: Any) -> Any:
    """The inverse of :func:`encode_non_finite` (it also reads the older ``{"__float__": "inf"}`` form)."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, Mapping):
        if set(value) == {_LEGACY_NON_FINITE}:
            return float(value[_LEGACY_NON_FINITE])
        return {k: decode_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_non_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (non-finite floats become ``null``)."""
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly; nan/inf as 'nan'/'inf'
    return str(value)


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts) as CSV atomically; the columns are the union of the rows' keys, in first-seen order.

    Floats are written with ``repr`` so that reading them back gives the same bits; a missing value is empty.
    """
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format_cell(row.get(c)) for c in columns])
    write_text(path, buffer.getvalue())


def _parse_cell(text: str | None) -> float | str | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, float | str | None]]:
    """Read a CSV written by :func:`write_csv`: numbers as floats, empty cells as ``None``.

    A last row cut short (fewer fields than the header, or no final newline: what a truncated copy or a crash of a
    non-atomic writer leaves) is dropped. Any other row with the wrong number of fields is a :class:`ValueError`
    naming the file and the line.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    try:
        records = [(number, record) for number, record in _records(text) if record]
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    if not records:
        return []
    (_, header), body = records[0], records[1:]
    if body and (len(body[-1][1]) < len(header) or not text.endswith("\n")):
        body = body[:-1]
    rows = []
    for number, record in body:
        if len(record) != len(header):
            raise ValueError(f"{path}: line {number} has {len(record)} fields, the header has {len(header)}")
        rows.append({key: _parse_cell(value) for key, value in zip(header, record)})
    return rows


def _records(text: str) -> list[tuple[int, list[str]]]:
    """The CSV records of ``text`` with the line each ends on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    return [(reader.line_num, record) for record in reader]


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """``torch.save`` ``state`` atomically.

    ``state`` must hold only what :func:`torch.load` accepts with ``weights_only=True``: tensors, numbers, strings,
    ``None`` and lists/tuples/dicts of them (RNG states are stored as the byte tensors torch returns).
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU, never unpickling arbitrary objects.

    Raises:
        whatever :func:`torch.load` raises for a truncated or foreign file (``RuntimeError``,
        ``pickle.UnpicklingError``, ...), and ``ValueError`` when the file holds something other than a dict.
    """
    result = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(result, dict):
        raise ValueError(f"{path} is not a theorylr checkpoint (expected a dict, got {type(result).__name__})")
    return result
