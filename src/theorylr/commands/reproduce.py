"""``theorylr reproduce``: run the papers' experiments and write a claims table with a verdict per claim.

A thin wrapper over :func:`theorylr.lab.reproduce.reproduce`. Results are resumable: run the same command again
and finished runs are skipped. ``--quick`` is the CI-sized form (a few minutes on two CPU cores for ``all``); without
it the experiments are paper-sized (point ``--data-dir`` at MNIST/CIFAR-10 files and use a GPU for those).

Example::

    theorylr reproduce all --quick --out runs/reproduce
    theorylr reproduce exact-adam --data-dir ~/data --device cuda --out runs/reproduce
    theorylr reproduce all --quick --out /tmp/repro --page-out docs --figures-subdir reproduction
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from theorylr.commands._common import user_path

__all__ = ["add_arguments", "run"]

_TARGETS = ("lars", "exact-adam", "lipschitz", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr reproduce``."""
    parser.add_argument("target", choices=_TARGETS, help="which paper's claims to check (all: the three)")
    parser.add_argument("--quick", action="store_true", help="the CI-sized form (small networks, few epochs)")
    parser.add_argument(
        "--out", required=True, type=user_path, help="results directory (created; existing results are resumed)"
    )
    parser.add_argument(
        "--data-dir", default=None, type=user_path, help="folder with the MNIST / CIFAR-10 files (optional)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps, or auto (cuda if available)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the training runs (default 1)")
    parser.add_argument(
        "--page-out", default=None, type=user_path, help="write REPRODUCTION.md/.html here instead of --out"
    )
    parser.add_argument(
        "--figures-subdir", default=None, help="with --page-out: copy the figures to PAGE_OUT/SUBDIR/<paper>/"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    """Run the reproduction; print the verdict counts and the page's path. Returns 0, 2 on bad arguments or an output
    path that cannot be written, 130 on Ctrl-C. The errors' exit codes come as
    :class:`~theorylr.commands._common.CommandExitError`, which ``theorylr.cli.main`` returns."""
    from theorylr.commands._common import check_device, check_output_dir, command_errors
    from theorylr.lab.reproduce import reproduce

    # The arguments main() parsed (not sys.argv: main(argv) may be called from another program, e.g. a test).
    given = getattr(args, "cli_args", None)
    argv = list(given) if given is not None else sys.argv[1:]
    command = "theorylr " + " ".join(shlex.quote(a) for a in argv) if len(argv) > 1 else None
    with command_errors("reproduce", resume_dir=args.out):
        check_output_dir("--out", args.out)
        if args.page_out is not None:
            check_output_dir("--page-out", args.page_out)
        check_device("--device", args.device)
        if args.data_dir is not None and not os.path.isdir(args.data_dir):  # the MNIST/CIFAR claims would vanish
            raise ValueError(f"--data-dir {args.data_dir}: not a directory")
        result = reproduce(
            args.target,
            args.out,
            scale="quick" if args.quick else "full",
            data_dir=args.data_dir,
            device=args.device,
            jobs=args.jobs,
            verbose=not args.quiet,
            page_out=args.page_out,
            figures_subdir=args.figures_subdir,
            command=command,
        )
    for paper in result.results:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(paper.counts().items()))
        print(f"{paper.paper}: {len(paper.claims)} claims ({counts}) in {paper.wall_time:.1f} s")
    print(f"page: {result.markdown}")
    print(f"      {result.html}")
    print(f"wall time: {result.wall_time:.1f} s")
    return 0
