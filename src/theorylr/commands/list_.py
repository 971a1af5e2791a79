"""``theorylr list``: the registered workloads and rules (name, kind, one-line description).

Example::

    theorylr list                 # both tables
    theorylr list rules --kind theory
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "format_listing", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``theorylr list``."""
    parser.add_argument(
        "what", nargs="?", choices=("all", "workloads", "rules"), default="all", help="what to list (default: all)"
    )
    parser.add_argument(
        "--kind",
        choices=("theory", "lr-free", "tuned", "baseline"),
        help="only rules of this kind (with 'rules' or 'all'; workloads have no kind)",
    )


def format_listing(what: str = "all", kind: str | None = None) -> str:
    """The text ``theorylr list`` prints.

    Raises:
        ValueError: for ``kind`` with ``what="workloads"`` (a kind is a rule's: the filter would list everything).
    """
    from theorylr.lab import DEFAULT_RULES, DEFAULT_WORKLOAD, RULES, WORKLOADS

    if what == "workloads" and kind is not None:
        raise ValueError(
            f"--kind {kind} filters rules and workloads have no kind: use 'theorylr list rules --kind {kind}', or "
            "'theorylr list workloads' without --kind"
        )

    lines: list[str] = []
    if what in ("all", "workloads"):
        lines.append("Workloads (--workload NAME; * = default, [data] = needs --data-dir):")
        width = max(len(n) for n in WORKLOADS)
        for name, w in WORKLOADS.items():
            mark = "*" if name == DEFAULT_WORKLOAD else " "
            data = " [data]" if w.needs_data_dir else ""
            lines.append(f" {mark} {name:<{width}}  {w.description}{data}")
        lines.append("")
    if what in ("all", "rules"):
        lines.append(
            "Rules (--rules A,B,...; NAME@LR fixes the lr, except for the range tests; * = in the default set, [pkg] = "
            "needs that package):"
        )
        order = {"theory": 0, "lr-free": 1, "tuned": 2, "baseline": 3}
        rows = sorted((r for r in RULES.values() if kind is None or r.kind == kind), key=lambda r: order.get(r.kind, 9))
        width = max((len(r.name) for r in rows), default=4)
        for rule in rows:
            mark = "*" if rule.name in DEFAULT_RULES else " "
            extra = ""
            if rule.requires is not None:
                extra = f" [{rule.package or rule.requires}{'' if rule.available() else ': not installed'}]"
            lines.append(f" {mark} {rule.name:<{width}}  {rule.kind:<8}  {rule.description}{extra}")
    return "\n".join(lines).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    """Print the listing; returns 0 (2, with the reason on stderr, for ``--kind`` beside ``workloads``)."""
    try:
        text = format_listing(args.what, args.kind)
    except ValueError as error:
        print(f"theorylr list: error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0
