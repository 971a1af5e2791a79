"""``theorylr reproduce``'s analytic cache is keyed on the code that computed a result as well as its inputs: a
result written before an upgrade or an edit of theorylr is recomputed, not read back (it was reused silently)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from theorylr.lab._files import read_json
from theorylr.lab.reproduce import _common
from theorylr.lab.reproduce._common import Context, code_fingerprint
from theorylr.lab.reproduce.scale import QUICK


def test_a_result_written_by_other_code_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context(tmp_path, QUICK, verbose=False)
    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        return {"value": float(len(calls))}

    assert ctx.cached("exp", {"n": 1}, compute) == {"value": 1.0}
    assert ctx.cached("exp", {"n": 1}, compute) == {"value": 1.0} and calls == [1]  # same code, same inputs
    saved = read_json(tmp_path / "analytic" / "exp.json")
    assert saved["config"] == {"n": 1, "code": code_fingerprint()}

    monkeypatch.setattr(_common, "code_fingerprint", lambda: "0" * 64)  # theorylr changed since
    assert ctx.cached("exp", {"n": 1}, compute) == {"value": 2.0} and calls == [1, 1]
    assert read_json(tmp_path / "analytic" / "exp.json")["config"]["code"] == "0" * 64


def test_the_code_key_is_reserved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'code' is reserved"):
        Context(tmp_path, QUICK, verbose=False).cached("exp", {"code": 1}, dict)


def test_the_fingerprint_is_the_digest_of_every_source_file_of_the_package() -> None:
    package = Path(_common.__file__).resolve().parents[2]
    files = sorted(package.rglob("*.py"))
    assert package.name == "theorylr" and package / "lab" / "reproduce" / "_common.py" in files
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    assert code_fingerprint() == digest.hexdigest()
