"""Atomic writes, exact CSV round trips and safe checkpoints."""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from theorylr.lab import _files
from theorylr.lab._files import (
    atomic_write_bytes,
    load_checkpoint,
    read_csv,
    read_json,
    save_checkpoint,
    write_csv,
    write_json,
    write_text,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_crash_mid_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    path = tmp_path / "metrics.csv"
    write_text(path, "old content\n")

    class Crash(BaseException):  # not an Exception: like a kill, nothing may swallow it
        pass

    def boom(*args: object, **kwargs: object) -> None:
        raise Crash

    if fail_at == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle: object) -> None:
                self.handle = handle

            def __enter__(self) -> HalfWriter:
                return self

            def __exit__(self, *exc: object) -> None:
                self.handle.close()  # type: ignore[attr-defined]

            def write(self, data: bytes) -> None:
                self.handle.write(data[:3])  # type: ignore[attr-defined]
                self.handle.flush()  # type: ignore[attr-defined]
                raise Crash

        monkeypatch.setattr(_files.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    elif fail_at == "fsync":
        monkeypatch.setattr(_files.os, "fsync", boom)
    else:
        monkeypatch.setattr(_files.os, "replace", boom)
    with pytest.raises(Crash):
        write_text(path, "new content that must never be seen half-written\n")
    monkeypatch.undo()
    assert path.read_text() == "old content\n"
    assert _leftovers(tmp_path) == []


def test_atomic_write_creates_parents_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"1")
    atomic_write_bytes(path, b"22")
    assert path.read_bytes() == b"22"
    assert _leftovers(path.parent) == []


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    values = [0.1, 1 / 3, 2.0**-60, 1e300, -0.0, math.pi]
    rows = [{"epoch": i, "x": v} for i, v in enumerate(values)]
    rows.append({"epoch": 6, "x": math.nan, "extra": math.inf})
    write_csv(tmp_path / "m.csv", rows)
    back = read_csv(tmp_path / "m.csv")
    assert [r["x"] for r in back[:-1]] == values  # bit-exact (repr round-trips)
    assert math.isnan(back[-1]["x"]) and back[-1]["extra"] == math.inf
    assert back[0]["extra"] is None  # a column missing from a row is empty, read as None
    assert list(back[0]) == ["epoch", "x", "extra"]


def test_json_writes_non_finite_as_null(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"a": math.nan, "b": [1.0, math.inf], "c": (1, 2), "t": torch.tensor(2.5)})
    assert read_json(tmp_path / "x.json") == {"a": None, "b": [1.0, None], "c": [1, 2], "t": 2.5}


def test_json_writes_non_finite_tensors_and_numpy_scalars_as_null(tmp_path: Path) -> None:
    """A one-element tensor's inf was written as ``Infinity`` (not JSON: strict readers refuse the file), and a
    NumPy float32 could not be written at all."""
    import numpy as np

    values = {"t": torch.tensor(math.inf), "n": np.float32("nan"), "f": np.float32(0.5), "i": np.int64(3)}
    values["s"] = {math.inf}  # a set is written as a list: its non-finite values too
    write_json(tmp_path / "x.json", values)
    text = (tmp_path / "x.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert read_json(tmp_path / "x.json") == {"t": None, "n": None, "f": 0.5, "i": 3, "s": [None]}


def test_checkpoint_round_trip_and_refuses_arbitrary_objects(tmp_path: Path) -> None:
    state = {
        "model": {"w": torch.randn(3, 2)},
        "rng": torch.get_rng_state(),
        "rows": [{"epoch": 0, "loss": 1.5}],
        "history": [{"lr": [0.1], "source": "epoch", "k_z": None}],
    }
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert torch.equal(back["rng"], state["rng"])
    assert back["rows"] == state["rows"] and back["history"] == state["history"]

    # A file holding a pickled arbitrary object must not be unpickled.
    torch.save({"evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "evil.pt")


class _Payload:
    pass


@pytest.mark.parametrize(
    "cut",
    [
        "0,0.5,1.0\n1,0.25,0",  # a value cut short, no final newline
        "0,0.5,1.0\n1,0.25",  # a row cut short: missing cells
        "0,0.5,1.0\n1,",
        "0,0.5,1.0\n",  # cut exactly after a row: nothing lost
    ],
)
def test_read_csv_drops_a_last_row_cut_short(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss,lr\n" + cut)
    assert read_csv(path) == [{"epoch": 0.0, "loss": 0.5, "lr": 1.0}]
    path.write_text("epoch,loss,lr\n0,0.5")  # only row cut short
    assert read_csv(path) == []
    path.write_text("epo")  # the header cut short
    assert read_csv(path) == []


def test_read_csv_refuses_a_ragged_row_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss\n0,0.5\n1\n2,0.1\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: line 3 has 1 fields, the header has 2"):
        read_csv(path)
    path.write_text("epoch,loss\n0,0.5,7\n1,0.1\n")
    with pytest.raises(ValueError, match="line 2 has 3 fields"):
        read_csv(path)


def test_load_runs_never_raises_on_damaged_files(tmp_path: Path) -> None:
    from theorylr.lab import load_runs

    def run_dir(name: str, config: object) -> Path:
        directory = tmp_path / name
        write_json(directory / "config.json", config)
        return directory

    good = {"workload": {"name": "w"}, "rule": {"name": "r", "kind": "baseline"}, "trial": 0, "seed": 0, "lr": 0.1}
    truncated = run_dir("truncated", good)
    write_json(truncated / "meta.json", {"status": "finished"})
    write_csv(truncated / "metrics.csv", [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5}])
    text = (truncated / "metrics.csv").read_text()
    (truncated / "metrics.csv").write_text(text[: text.rindex(",") + 2])  # "1,0" of the last row
    ragged = run_dir("ragged", {**good, "seed": 1})
    (ragged / "metrics.csv").write_text("epoch,train_loss\n0\n1,0.5\n")
    (ragged / "meta.json").write_text("[1, 2]")  # JSON, but not a meta record
    binary = run_dir("binary", {**good, "seed": 2})
    (binary / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")
    (binary / "meta.json").write_bytes(b"\xff\xfe")
    for name, config in [
        ("rule-not-a-dict", {**good, "rule": "r"}),
        ("no-trial", {k: v for k, v in good.items() if k != "trial"}),
        ("bad-seed", {**good, "seed": "x"}),
        ("workload-a-list", {**good, "workload": ["w"]}),
        ("a-list", [good]),
    ]:
        run_dir(name, config)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"rule": ')

    with pytest.warns(RuntimeWarning) as caught:  # each damaged meta.json and metrics.csv named, none raised
        runs = load_runs(tmp_path)
    named = sorted(
        Path(str(w.message).split(" ")[0]).parent.name + "/" + Path(str(w.message).split(" ")[0]).name for w in caught
    )
    assert named == [
        "binary/meta.json",
        "binary/metrics.csv",
        "ragged/meta.json",
        "ragged/metrics.csv",
        "truncated/metrics.csv",
    ]
    assert [(r.directory.name, r.status, len(r.rows)) for r in runs] == [
        ("truncated", "incomplete", 1),  # finished by its meta.json, but its last row was cut: not a result
        ("ragged", "missing", 0),
        ("binary", "missing", 0),
    ]
    assert runs[0].column("train_loss").tolist() == [1.0]


def test_written_files_get_the_umask_mode_not_mkstemps_private_one(tmp_path: Path) -> None:
    """mkstemp creates 0o600; results, reports and figures must be readable as any file the user creates."""
    import os
    import stat

    from theorylr.lab._files import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        import theorylr.lab._files as files

        files._UMASK.clear()  # read again under this umask
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    finally:
        os.umask(previous)
        files._UMASK.clear()
