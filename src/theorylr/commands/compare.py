"""``theorylr compare``: run rules side by side on a workload, one directory per (rule, trial, seed); resumable.

A thin wrapper over :func:`theorylr.lab.compare` (see ``docs/lab.md``). Interrupt it at any time (Ctrl-C, or
kill -9) and run the same command again: finished runs are skipped and an unfinished one resumes from its last
epoch.

Example::

    theorylr compare --workload digits-mlp --rules lars,exact-adam,adam --seeds 3 --epochs 100 --out runs/demo
    theorylr compare --workload mnist-lenet --data-dir ~/data/mnist --jobs 2 --out runs/mnist
"""

from __future__ import annotations

import argparse
import sys

from theorylr.commands._common import user_path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr compare``."""
    parser.add_argument(
        "--workload", default=None, help="a registered workload (default: digits-mlp; see 'theorylr list')"
    )
    parser.add_argument(
        "--rules",
        default=None,
        help="comma-separated rule names, NAME@LR for a fixed lr (default: the theory rules, tuned Adam/momentum, "
        "the range test and the installed peers)",
    )
    parser.add_argument(
        "--seeds", default="1", help="a count (3 = seeds 0,1,2) or a list '0,5,7' (one seed 7: '7,') (default 1)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the workload's)")
    parser.add_argument("--trials", type=int, default=5, help="lr grid points per tuned rule (default 5)")
    parser.add_argument(
        "--out", required=True, type=user_path, help="results directory (created; existing results are resumed)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: in this process)")
    parser.add_argument("--data-dir", default=None, type=user_path, help="folder with the MNIST / CIFAR-10 files")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps, or auto (cuda if available)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: torch's, or cores/jobs with --jobs)"
    )
    parser.add_argument("--report", action="store_true", help="write the report when the runs are done")
    parser.add_argument("--quiet", action="store_true", help="no per-run lines")


def run(args: argparse.Namespace) -> int:
    """Run the comparison; returns 0 when every cell finished or diverged, 1 when some failed or a worker process
    died (``--jobs``), 2 on a bad argument or an output path that cannot be written, 130 on Ctrl-C. The errors' exit
    codes come as :class:`~theorylr.commands._common.CommandExitError`, which ``theorylr.cli.main`` returns."""
    from theorylr.commands._common import (
        CommandExitError,
        check_device,
        check_output_dir,
        command_errors,
        os_error_text,
    )
    from theorylr.lab import DEFAULT_WORKLOAD, compare, get_workload, report
    from theorylr.lab.runner import WorkerDiedError

    with command_errors("compare", resume_dir=args.out):
        check_output_dir("--out", args.out)
        check_device("--device", args.device)
        workload = get_workload(DEFAULT_WORKLOAD if args.workload is None else args.workload)
        if args.data_dir is not None and not workload.needs_data_dir:
            print(
                f"theorylr compare: note: --data-dir is not used: workload {workload.name!r} has built-in data "
                f"({workload.dataset})",
                file=sys.stderr,
            )
        try:
            result = compare(
                DEFAULT_WORKLOAD if args.workload is None else args.workload,  # "" is an error, not the default
                args.rules,
                out=args.out,
                seeds=args.seeds,
                epochs=args.epochs,
                trials=args.trials,
                jobs=args.jobs,
                data_dir=args.data_dir,
                device=args.device,
                threads=args.threads,
                verbose=not args.quiet,
            )
        except WorkerDiedError as exc:  # the runs are resumable: a line, not a traceback
            print(f"theorylr compare: error: {exc} (results in {args.out})", file=sys.stderr)
            raise CommandExitError(1) from None
    counts = result.counts()
    print(
        f"{result.workload}: {len(result.results)} runs ("
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f") in {result.out}"
        + (f"; {len(result.skipped_rules)} rules skipped" if result.skipped_rules else "")
    )
    if result.skipped_rules and args.quiet:  # without --quiet each was printed when skipped
        for name, reason in result.skipped_rules:
            print(f"  skipped {name}: {reason}")
    if args.report:
        try:
            paths = report(args.out)
        except OSError as exc:
            print(f"theorylr compare: error: writing the report: {os_error_text(exc)}", file=sys.stderr)
            return 2
        except ValueError as exc:  # runs of other settings in the same directory (check_consistent)
            print(f"theorylr compare: error: the report: {exc}", file=sys.stderr)
            return 2
        print(f"report: {paths.markdown} and {paths.html}")
    return 1 if counts.get("failed") else 0
