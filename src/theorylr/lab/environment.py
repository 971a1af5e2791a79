"""What a run was measured on: versions, git commit, CPU/GPU (written to every ``meta.json``)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import theorylr

__all__ = ["environment", "git_commit", "git_dirty", "now"]


def now() -> str:
    """The current UTC time as ISO 8601 (``2025-01-31T12:00:00.123456+00:00``).

    Example:
        >>> now().endswith("+00:00")
        True
    """
    return datetime.now(timezone.utc).isoformat()


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """``git *args`` run in this package's folder, or ``None`` where git cannot run."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def _in_checkout() -> bool:
    """Whether this package's files are tracked by the git repository around them. A wheel installed into some
    other repository's virtual environment sits inside that repository too, but its files are not tracked there:
    that repository's commit says nothing about theorylr's code."""
    result = _git("ls-files", "--error-unmatch", "--", Path(theorylr.__file__).name)
    return result is not None and result.returncode == 0


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the theorylr checkout this code runs from, or ``None`` (an installed wheel, no git, or a
    package whose files the enclosing repository does not track).

    Example:
        >>> commit = git_commit()
        >>> commit is None or len(commit) == 40
        True
    """
    result = _git("rev-parse", "HEAD") if _in_checkout() else None
    text = result.stdout.strip() if result is not None else ""
    return text if result is not None and result.returncode == 0 and text else None


@functools.lru_cache(maxsize=1)
def git_dirty() -> bool | None:
    """Whether the theorylr checkout this code runs from has uncommitted changes to tracked files under ``src``
    (the code a run executes), or ``None`` (not a checkout, as for :func:`git_commit`): a run's ``git_commit``
    alone would not say so.

    Example:
        >>> git_dirty() in (True, False, None)
        True
    """
    here = Path(__file__).resolve().parent
    result = _git("status", "--porcelain", "--untracked-files=no", "--", str(here.parent)) if _in_checkout() else None
    if result is None or result.returncode != 0:
        return None
    return bool(result.stdout.strip())


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    info: dict[str, Any] = {
        "theorylr": theorylr.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "git_dirty": git_dirty() if git_commit() is not None else None,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Versions, git commit, CPU and GPU names, the device used and torch's thread count (what every run records).

    Example:
        >>> info = environment("cpu")
        >>> info["device"], info["threads"] == torch.get_num_threads()
        ('cpu', True)
    """
    return {**_static(), "device": str(device), "threads": torch.get_num_threads()}
