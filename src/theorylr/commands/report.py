"""``theorylr report DIR``: ``report.md`` and ``report.html`` with PNG figures, drawn from the run files only.

A thin wrapper over :func:`theorylr.lab.report`; it never trains, so it can be rerun at any time.

Example::

    theorylr report runs/demo
"""

from __future__ import annotations

import argparse

from theorylr.commands._common import user_path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr report``."""
    parser.add_argument("results", type=user_path, help="a directory written by 'theorylr compare'")
    parser.add_argument(
        "--out", default=None, type=user_path, help="where to write the report (default: the results directory)"
    )
    parser.add_argument("--title", default="theorylr lab report", help="the report's title")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no PNG figures; much faster)")


def run(args: argparse.Namespace) -> int:
    """Write the report and print its paths; returns 0, or 2 when the directory holds no runs or the report cannot be
    written there. The errors' exit codes come as :class:`~theorylr.commands._common.CommandExitError`, which
    ``theorylr.cli.main`` returns."""
    from theorylr.commands._common import check_output_dir, command_errors
    from theorylr.lab import report

    with command_errors("report"):
        if args.out is not None:
            check_output_dir("--out", args.out)
        paths = report(args.results, out_dir=args.out, title=args.title, figures=not args.no_figures)
    print(f"report: {paths.markdown}")
    print(f"        {paths.html}")
    if paths.figures:
        print(f"figures: {len(paths.figures)} PNG files under {paths.markdown.parent / 'figures'}")
    return 0
