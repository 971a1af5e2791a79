"""The ``theorylr`` command line.

Each sub-command lives in its own module under :mod:`theorylr.commands` and exposes two functions,
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported, so
``theorylr --help`` answers without importing torch.

Example::

    theorylr list
    theorylr compare --workload digits-mlp --rules lars,exact-adam,adam --seeds 2 --epochs 20 --out runs/x
    theorylr report runs/x
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from theorylr import __version__

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("theorylr.commands.demo", "run the main job on the embedded default data and write a report"),
    "list": ("theorylr.commands.list_", "list the registered workloads and rules"),
    "compare": ("theorylr.commands.compare", "run rules side by side on a workload (resumable)"),
    "report": ("theorylr.commands.report", "draw plots and a report from a results directory"),
    "reproduce": ("theorylr.commands.reproduce", "reproduce the papers' claims and write a verdict per claim"),
    "suggest": ("theorylr.commands.suggest", "every theory's learning rate for a model, beside a range test"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="theorylr",
        description="Learning rates from convergence theory, and a lab that checks whether they pay off.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("--version", action="version", version=f"theorylr {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``theorylr`` script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not args or args[0].startswith("-"):
        top.parse_args(args)  # prints help/version, or an error naming the allowed commands
        top.print_help()
        return 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        top.parse_args([name])  # exits with "invalid choice ... (choose from ...)"
    module_name, text = COMMANDS[name]
    try:  # a Ctrl-C while the command's modules (torch) load: nothing has started, so one line and 130
        module = importlib.import_module(module_name)
        sub = argparse.ArgumentParser(prog=f"theorylr {name}", description=text)
        module.add_arguments(sub)
        from theorylr.commands._common import CommandExitError, silence_stdout
    except KeyboardInterrupt:
        print(f"theorylr {name}: interrupted", file=sys.stderr)
        return 130

    namespace = sub.parse_args(rest)
    namespace.cli_args = [name, *rest]  # the command line as given (reproduce shows it on its page)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = format_warning  # restored below: main() may be called in-process (tests, notebooks)
    try:
        return int(module.run(namespace) or 0)
    except CommandExitError as stop:  # the command printed why
        return stop.code
    except BrokenPipeError:  # stdout closed by its reader (`| head`, a pager quit): stop quietly, as on SIGPIPE;
        silence_stdout()  # the runs done so far are kept, and a rerun resumes
        return 141
    finally:
        warnings.formatwarning = formatwarning


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """How the command line shows a warning: one line naming the program and the category, not a file and a line of
    the library (``theorylr: RuntimeWarning: ... the run is redone``). The lab's worker processes use it too."""
    return f"theorylr: {category.__name__}: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
