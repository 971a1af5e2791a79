"""Provenance: the commit a run records is theorylr's own, never that of a repository the package merely sits in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import theorylr

PACKAGE = Path(theorylr.__file__).resolve().parent
PROBE = "from theorylr.lab.environment import git_commit, git_dirty; print(git_commit(), git_dirty())"


def _git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}
    ).stdout.strip()


def _probe(site: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=site,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return out


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("x = 1\n")
    _git(tmp_path, "add", "app.py")
    _git(tmp_path, "commit", "-q", "-m", "user code")
    shutil.copytree(PACKAGE, tmp_path / "site" / "theorylr", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_package_untracked_by_the_enclosing_repository_records_no_commit(user_repo: Path) -> None:
    """A wheel installed into a virtual environment inside someone else's repository recorded their HEAD."""
    assert _probe(user_repo / "site") == ["None", "None"]


def test_a_tracked_package_records_its_commit_and_dirtiness(user_repo: Path) -> None:
    _git(user_repo, "add", "site")
    _git(user_repo, "commit", "-q", "-m", "vendored theorylr")
    head = _git(user_repo, "rev-parse", "HEAD")
    assert _probe(user_repo / "site") == [head, "False"]
    with open(user_repo / "site" / "theorylr" / "cli.py", "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    assert _probe(user_repo / "site") == [head, "True"]
