"""Checks the commands share: output paths and ``--device``, checked before any work, and one-line OS errors.

Each check raises :class:`ValueError` with a message that starts with the flag and its value, so that a command
prints ``theorylr CMD: error: --out runs/x: ...`` and returns 2, as it does for any other bad argument.

Example:
    >>> check_device("--device", "tpu")
    Traceback (most recent call last):
    ...
    ValueError: --device: device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto' (got 'tpu')
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "CommandExitError",
    "check_device",
    "check_output_dir",
    "check_output_file",
    "command_errors",
    "os_error_text",
    "user_path",
]


def user_path(text: str) -> str:
    """A path argument with a leading ``~`` or ``~user`` expanded (argparse ``type=``).

    The shell expands ``--out ~/runs`` but not ``--out=~/runs``, which would otherwise create a directory named
    ``~`` in the working directory (or look for data in one).
    """
    return os.path.expanduser(text)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``.`` for a relative path with no existing part)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_creatable(flag: str, value: str, directory: Path) -> None:
    """``directory`` exists as a writable directory, or could be created (its nearest existing ancestor is one)."""
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise ValueError(f"{flag} {value}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {value}: {existing} is not writable")


def check_output_dir(flag: str, value: str | os.PathLike[str]) -> None:
    """Check that ``value`` can be the output directory: an existing writable directory, or creatable.

    Raises:
        ValueError: the path is a file, lies under a file, or under a directory that cannot be written (the
            message names ``flag`` and the path). Checked without creating anything; what the operating system
            refuses later (a read-only file system) is reported by the command through :func:`os_error_text`.
    """
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {value}: exists and is not a directory")
    _check_creatable(flag, str(value), path)


def check_output_file(flag: str, value: str | os.PathLike[str]) -> None:
    """Check that a file can be written at ``value`` (not a directory; its folder exists or can be created)."""
    path = Path(value)
    if path.is_dir():
        raise ValueError(f"{flag} {value}: is a directory (expected a file name)")
    _check_creatable(flag, str(value), path.parent)


def check_device(flag: str, value: str) -> None:
    """Check ``--device`` as the lab resolves it (:func:`theorylr.lab.runner.resolve_device`): ``cpu``, ``cuda``,
    ``cuda:N``, ``mps`` or ``auto``, and a GPU only where torch sees one.

    Raises:
        ValueError: another value, or a device that is not available here (the message starts with ``flag``).
    """
    from theorylr.lab.runner import resolve_device

    try:
        resolve_device(value)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def os_error_text(exc: OSError) -> str:
    """One line for an operating-system error, naming the path(s): ``PATH: Not a directory``."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{where}: {exc.strerror}"


class CommandExitError(Exception):
    """Ends a command with ``code`` once its message is printed (``theorylr.cli.main`` returns the code)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@contextlib.contextmanager
def command_errors(command: str, *, resume_dir: str | None = None) -> Iterator[None]:
    """Turn a command's expected failures into one printed line and an exit code (:class:`CommandExitError`).

    ``ValueError`` (a bad argument) and ``OSError`` (a path that cannot be read or written) print
    ``theorylr COMMAND: error: ...`` on stderr and exit with 2. With ``resume_dir`` (a command that resumes its
    runs), Ctrl-C prints how to resume and exits with 130; without, it propagates. A closed stdout (``| head``,
    ``BrokenPipeError``) propagates to ``theorylr.cli.main``, which stops quietly with 141, as on SIGPIPE.
    """
    try:
        yield
    except KeyboardInterrupt:
        if resume_dir is None:
            raise
        print(f"\ninterrupted: run the same command again to resume (results in {resume_dir})", file=sys.stderr)
        raise CommandExitError(130) from None
    except BrokenPipeError:  # not an error to print (an OSError below): theorylr.cli.main stops quietly with 141
        raise
    except ValueError as exc:
        print(f"theorylr {command}: error: {exc}", file=sys.stderr)
        raise CommandExitError(2) from None
    except OSError as exc:
        print(f"theorylr {command}: error: {os_error_text(exc)}", file=sys.stderr)
        raise CommandExitError(2) from None


def silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush of a closed pipe raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
