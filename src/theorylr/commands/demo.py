"""``theorylr demo``: the main job on the embedded default data (what ``make demo`` runs).

It runs the lab's default comparison (the ``digits-mlp`` workload: the theory rules against tuned Adam/SGD and the
installed learning-rate-free peers), draws the report from the run files, and adds the LARS 1-D/2-D theory
demonstration. Rerunning it resumes: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from theorylr.commands._common import user_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr demo``."""
    parser.add_argument(
        "--out", default="results/demo", type=user_path, help="results directory (default: results/demo)"
    )
    parser.add_argument("--seeds", default="2", help="number of seeds or a list such as 0,1 (default: 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the workload's)")
    parser.add_argument("--trials", type=int, default=4, help="lr trials of each tuned rule (default: 4)")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: 2 where possible)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the comparison, the report and the LARS theory demonstration; print where they are. Returns 0, 2 on a bad
    argument or an output path that cannot be written, 130 on Ctrl-C (rerun the same command to resume). The errors'
    exit codes come as :class:`~theorylr.commands._common.CommandExitError`, which ``theorylr.cli.main`` returns."""
    from theorylr import lab
    from theorylr.commands._common import check_output_dir, command_errors
    from theorylr.lab.lars_theory_demo import run_lars_theory_demo

    out = Path(args.out)
    with command_errors("demo", resume_dir=args.out):
        check_output_dir("--out", args.out)
        result = lab.compare(
            lab.DEFAULT_WORKLOAD,
            None,
            out=out,
            seeds=args.seeds,
            epochs=args.epochs,
            trials=args.trials,
            jobs=args.jobs,
        )
        paths = lab.report(out)
        theory = run_lars_theory_demo(out / "lars_theory")
    counts = result.counts()
    print(f"runs: {sum(counts.values())} (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")")
    print(f"report: {paths.markdown}  (HTML: {paths.html})")
    for name, path in sorted(theory.items()):
        print(f"LARS theory {name}: {path}")
    return 0
