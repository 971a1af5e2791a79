"""The report: ``report.md`` and ``report.html`` with PNG figures, drawn from a results directory's files only.

:func:`report` reads every run under the directory (:func:`~theorylr.lab.results.load_runs`), scores them
(:mod:`theorylr.lab.scores`), draws the figures (:mod:`theorylr.lab.plots`) and writes the same content as Markdown
and as a self-contained HTML page (figures referenced by relative path). Nothing is retrained, so a report can be
redrawn at any time -- after a partial run, or on another machine.

Example:
    >>> import tempfile
    >>> from theorylr.lab.runner import compare
    >>> out = tempfile.mkdtemp()
    >>> _ = compare("iris-softmax", "adam,sgd", out=out, epochs=3, trials=2, verbose=False)
    >>> paths = report(out)
    >>> paths.markdown.name, paths.html.name, len(paths.figures) >= 3
    ('report.md', 'report.html', True)
"""

from __future__ import annotations

import html
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from theorylr.lab import plots
from theorylr.lab._files import read_json, write_text
from theorylr.lab.environment import now
from theorylr.lab.results import Run, check_consistent, load_runs
from theorylr.lab.scores import ENDED, RuleSummary, performance_profile, summarize, target_of, tuning_metric_of

__all__ = ["ReportPaths", "report"]

#: The tau values of the performance-profile table (the figure is continuous).
PROFILE_TAUS = (1.0, 1.5, 2.0, 4.0, 10.0)


@dataclass
class ReportPaths:
    """Where :func:`report` wrote its files."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# a tiny document model rendered to Markdown and HTML


def _md(text: str) -> str:
    """``text`` for Markdown: a ``<`` escaped, so that a name or message holding ``<script>`` or ``<i>`` is shown, not
    rendered as HTML (the HTML report escapes everything)."""
    return str(text).replace("<", "\\<")


@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, lines: Sequence[str]) -> None:
        if lines:
            self.blocks.append(("ul", list(lines)))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(headers), [list(r) for r in rows])))

    def img(self, path: str, alt: str) -> None:
        """A figure at ``path`` (relative, ``/``-separated), percent-encoded as a URL: a workload named ``wine#2``
        or ``a b`` must not cut the link at its ``#`` or space."""
        self.blocks.append(("img", (urllib.parse.quote(path), alt)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + _md(value[1]))
            elif kind == "p":
                out.append(_md(value))
            elif kind == "ul":
                out.append("\n".join(f"- {_md(line)}" for line in value))
            elif kind == "table":
                headers, rows = value
                lines = ["| " + " | ".join(map(_md, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
                lines += ["| " + " | ".join(_md(c).replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})")
            elif kind == "code":
                out.append("```\n" + value + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body: list[str] = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                rows_html = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "img":
                body.append(
                    f'<figure><img src="{e(value[0])}" alt="{e(value[1])}"><figcaption>{e(value[1])}'
                    "</figcaption></figure>"
                )
            elif kind == "code":
                body.append(f"<pre>{e(value)}</pre>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
            "figure{margin:1em 0}figcaption{color:#555;font-size:0.85em}pre{background:#f6f6f6;padding:.6em}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


# ----------------------------------------------------------------------------------------------------------------
# formatting


def _num(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "not reached"
    return f"{value:.2f}" if value >= 1.0 else f"{value:.3g}"  # sub-second times keep 3 significant digits


def _steps(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "not reached"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"  # a median of two seeds may end in .5


def _chosen_lrs(runs: Sequence[Run]) -> list[float]:
    """The lr each run's set-up chose (the range test's ``chosen_lr`` in ``meta.json``), where recorded."""
    out = []
    for r in runs:
        value = (r.meta.get("setup") or {}).get("chosen_lr")
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append(float(value))
    return out


def _chooses_lr(s: RuleSummary) -> bool:
    """Whether the rule chooses its lr at set-up (the range test), from ``config.json`` or ``meta.json``."""
    runs = s.best_runs
    factory = str(runs[0].config["rule"].get("factory", "")) if runs else ""
    return factory.endswith(":build_range_test") or bool(_chosen_lrs(runs))


def _lr_text(s: RuleSummary) -> str:
    if s.tuned:
        edge = ", grid edge" if s.trials >= 3 and s.best_trial in (0, s.trials - 1) else ""
        return f"{s.lr:.3g} (trial {s.best_trial} of 0-{s.trials - 1}{edge})"
    if _chooses_lr(s):  # trained at the lr its set-up chose, not at the rule's configured one
        chosen = _chosen_lrs(s.best_runs)
        if not chosen:
            return "- (range test: not run)"
        low, high = min(chosen), max(chosen)
        return f"{low:.3g} (range test)" if low == high else f"{low:.3g}-{high:.3g} (range test, per seed)"
    multiplier = bool(s.best_runs and s.best_runs[0].config["rule"].get("multiplier"))
    return f"x{s.lr:g}" if multiplier else f"{s.lr:.3g}"


def _bad_label(runs: Sequence[Run]) -> str:
    """Why runs have no finite score: their statuses other than finished (``failed``, ``diverged``, ...)."""
    statuses = sorted({r.status for r in runs if r.status != "finished"})
    return "/".join(statuses) if statuses else "not finite"


def _loss_text(value: float, summary: RuleSummary) -> str:
    if math.isinf(value):
        return _bad_label(summary.best_runs)
    unfinished = [r for r in summary.best_runs if r.status not in ENDED]
    if unfinished:  # its last epoch so far, not its final one (a report drawn while the comparison runs, a run
        # whose metrics.csv is incomplete)
        done = max(0, min(len(r.column("epoch")) - 1 for r in unfinished))
        return f"{_num(value)} (partial: {done}/{unfinished[0].config.get('epochs', '?')} epochs)"
    return _num(value)


# ----------------------------------------------------------------------------------------------------------------
# sections


def _every_part(meta: Mapping[str, Any], key: str) -> list[Any]:
    """``meta[key]`` of the run's first part, and of each resumed part that changed it (``resumed_environment``):
    a run resumed with another thread count ran under both."""
    parts = meta.get("resumed_environment")
    later = [p[key] for p in parts if isinstance(p, dict) and key in p] if isinstance(parts, list) else []
    return [meta.get(key, "?"), *later]


def _environment_lines(runs: Sequence[Run]) -> list[str]:
    """The versions, commit, CPU, GPU, threads and devices of the runs: each line lists every value that some run
    (or a resumed part of one) recorded, and says when the runs differ."""
    metas = [r.meta for r in runs if r.meta.get("torch")]
    if not metas:
        return []

    def values(key: str, missing: str = "?") -> list[str]:
        found = {missing if v in (None, "", "?") else str(v) for m in metas for v in _every_part(m, key)}
        return sorted(found)

    def listed(key: str, missing: str = "?") -> str:
        found = values(key, missing)
        return found[0] if len(found) == 1 else " / ".join(found) + " (the runs differ)"

    dirty = sum(any(v is True for v in _every_part(m, "git_dirty")) for m in metas)
    uncommitted = f", with uncommitted changes in {dirty} of {len(metas)} runs" if dirty else ""
    return [
        f"theorylr {listed('theorylr')}, torch {listed('torch')}, Python {listed('python')}",
        f"git commit: {listed('git_commit', 'unknown')}{uncommitted}",
        f"CPU: {listed('cpu')} ({listed('cpu_count')} logical cores), torch threads per run: "
        f"{', '.join(values('threads'))}",
        f"GPU: {listed('gpu', 'none')}; device(s) used: {', '.join(values('device'))}",
        "wall times are set-up plus training (evaluations excluded), measured on this machine while it may have "
        "been shared: compare them within one report only",
    ]


# The figures a report draws: figures/profile.png, and these under figures/<workload>/ (the drawing code takes its
# file names from here, so that _remove_stale_figures knows every one).
_PROFILE_FIGURE = "profile.png"
_WORKLOAD_FIGURES = ("curves_epoch.png", "curves_time.png", "lr.png", "trust_ratios.png", "estimates.png", "tuning.png")


def _remove_stale_figures(target_dir: Path, workloads: list[str], drawn: list[Path]) -> None:
    """Delete the figures an earlier report drew that this one did not (a rule's runs removed, no trust ratios any
    more): left in place they would look current. Only the report's own file names are touched, for the
    workloads of this report; any other file under ``figures/`` stays."""
    keep = {path.resolve() for path in drawn}
    candidates = [target_dir / "figures" / _PROFILE_FIGURE]
    candidates += [target_dir / "figures" / w / name for w in workloads for name in _WORKLOAD_FIGURES]
    for path in candidates:
        if path.is_file() and path.resolve() not in keep:
            path.unlink()


def _invocations(results_dir: Path, workload: str) -> list[dict[str, Any]]:
    """The invocations that ``compare.json`` records for ``workload`` (those that are JSON objects: a file edited
    by hand, or damaged, loses its malformed entries, never the report)."""
    path = results_dir / workload / "compare.json"
    if not path.exists():
        return []
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return []
    listed = data.get("invocations") if isinstance(data, dict) else None
    return [inv for inv in listed if isinstance(inv, dict)] if isinstance(listed, list) else []


def _workload_section(
    doc: _Doc,
    results_dir: Path,
    out_dir: Path,
    workload: str,
    summaries: list[RuleSummary],
    runs: list[Run],
    figures: bool,
    colors: dict[str, Any],
) -> list[Path]:
    first = runs[0]
    spec = first.config["workload"]
    target = target_of(first)
    metric = tuning_metric_of(first)
    doc.h(2, f"Workload {workload}")
    seeds = sorted({r.seed for r in runs})
    epochs = [str(n) for n in sorted({int(r.config["epochs"]) for r in runs if r.config.get("epochs") is not None})]
    doc.p(
        f"{spec.get('description', '')}. Budget: {', '.join(epochs) or '?'} epochs, seeds {seeds}; "
        f"batch size {spec.get('batch_size') or 'full batch'}. Target: "
        f"{target.describe() if target else 'none (no time-to-target)'}. Tuned rules pick the trial with the best "
        f"median final {metric}."
    )
    invocations = _invocations(results_dir, workload)
    skipped: dict[str, str] = {}
    for inv in invocations:
        entries = inv.get("skipped")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and "rule" in entry:
                skipped[str(entry["rule"])] = str(entry.get("reason", ""))
    ran = {s.rule for s in summaries}
    notes = [reason for rule, reason in sorted(skipped.items()) if rule not in ran]
    if notes:
        doc.p("Rules not run here:")
        doc.items(notes)
    unfinished = [inv for inv in invocations if str(inv.get("status", "complete")) != "complete"]
    if unfinished:  # compare.json's record of how each invocation ended (absent from records before it existed)
        ended = {"running": "running, or killed"}
        doc.p(
            f"{len(unfinished)} of the {len(invocations)} 'theorylr compare' invocations recorded for this workload "
            "did not complete ("
            + "; ".join(
                f"{str(inv.get('time', '?'))[:19]}: {ended.get(str(inv['status']), str(inv['status']))}"
                for inv in unfinished
            )
            + "): the same command again resumes their runs; unfinished runs are listed below."
        )

    doc.h(3, "Summary (best trial per rule; medians over seeds)")
    headers = [
        "rule",
        "kind",
        "lr",
        "final train loss",
        "final grad norm",
        "best test acc" if any(math.isfinite(s.best_test_accuracy) for s in summaries) else "final test loss",
        "steps to target",
        "time to target (s)",
        "time to target incl. tuning (s)",
        "reached",
        "diverged/runs",
        "total compute (s)",
    ]
    rows = []
    for s in summaries:
        quality = _num(s.best_test_accuracy) if headers[5] == "best test acc" else _loss_text(s.final_test_loss, s)
        rows.append(
            [
                s.rule,
                s.kind,
                _lr_text(s),
                _loss_text(s.final_train_loss, s),
                _loss_text(s.final_grad_norm, s),
                quality,
                _steps(s.steps_to_target) if target else "-",
                _seconds(s.time_to_target) if target else "-",
                _seconds(s.time_to_target_cost_inclusive) if target else "-",
                f"{s.reached}/{s.seeds}" if target else "-",
                f"{s.diverged}/{s.runs}",
                f"{s.total_compute:.2f}",
            ]
        )
    doc.table(headers, rows)
    doc.p(
        "lr: the chosen grid point for tuned rules (trials are numbered from 0, as in the trial-NN directories); "
        "xM = a multiplier M on the step the rule derives (x1 = the paper); for the range tests the lr the test "
        "chose and the runs trained at (chosen_lr in meta.json); otherwise the fixed lr (LARS/PercentDelta: the "
        "global lr before the trust ratios). A best trial at the 'grid edge' means the search range may not contain "
        "the best lr. Steps and time to target are medians over seeds: 'not reached' when at least half of the seeds "
        "never reach the target ('reached' counts those that do). A seed that diverged counts for what it did "
        "before: a target reached and its best test accuracy (AlgoPerf's convention); its final losses count as "
        "+inf in the medians. "
        "'incl. tuning' charges a tuned rule with the wall time of all its "
        "other trials (same seed); theory rules already pay their estimates inside their own time. Total compute "
        "sums every run of the rule (all trials and seeds)."
    )

    figure = {name: out_dir / "figures" / workload / name for name in _WORKLOAD_FIGURES}
    made: list[Path] = []

    def add(path: Path | None, alt: str) -> None:
        if path is not None:
            made.append(path)
            doc.img(os.path.relpath(path, out_dir).replace(os.sep, "/"), alt)

    if figures:
        doc.h(3, "Figures")
        add(
            plots.plot_curves(summaries, figure["curves_epoch.png"], x="epoch", colors=colors),
            "training curves against epochs",
        )
        add(
            plots.plot_curves(summaries, figure["curves_time.png"], x="wall_time", colors=colors),
            "training curves against wall time",
        )
        add(plots.plot_lr(summaries, figure["lr.png"], colors=colors), "effective learning rate per rule")
        add(plots.plot_trust_ratios(summaries, figure["trust_ratios.png"]), "LARS per-layer trust ratios")
        add(
            plots.plot_estimates(summaries, figure["estimates.png"], colors=colors),
            "K/L estimates of the theory rules",
        )
        add(
            plots.plot_tuning(summaries, figure["tuning.png"], metric=metric, colors=colors),
            "tuning grid of the tuned rules",
        )

    tuned = [s for s in summaries if s.tuned]
    if tuned:
        doc.h(3, "Tuning grid")
        grid_rows = []
        for s in tuned:
            for trial, (lr, score) in s.trial_scores.items():
                shown = -score if metric.endswith("accuracy") and math.isfinite(score) else score
                mark = " (best)" if trial == s.best_trial else ""
                trial_runs = [r for r in runs if r.rule == s.rule and r.trial == trial]
                text = _num(shown) if math.isfinite(shown) else _bad_label(trial_runs)
                grid_rows.append([s.rule, f"{trial}{mark}", f"{lr:.3g}", text])
        doc.table(["rule", "trial", "lr", f"median final {metric}"], grid_rows)

    problems = []
    for r in runs:
        where = f"{r.rule} trial {r.trial} seed {r.seed}"
        damaged = f"; {r.problem} (rerun the same compare command to redo it)" if r.problem else ""
        if r.status == "diverged":
            d = r.meta.get("diverged") or {}
            if d.get("loss") is None:  # raised by the rule (e.g. LipschitzLR's L = 0): no loss value, no step
                problems.append(
                    f"{where}: diverged ({d.get('where', 'unknown cause')}) at epoch {d.get('epoch')}{damaged}"
                )
            else:
                problems.append(
                    f"{where}: diverged ({d.get('where', 'loss')} = {d.get('loss')}) at epoch {d.get('epoch')}, "
                    f"step {d.get('step')}{damaged}"
                )
        elif r.status == "failed":
            problems.append(f"{where}: failed: {r.meta.get('error', 'unknown error')}{damaged}")
        elif r.status == "incomplete":  # finished, but its metrics.csv lacks epochs: its last row is no result
            problems.append(f"{where}: finished, but {r.problem} (rerun the same compare command to redo it)")
        elif r.status not in ("finished",):
            problems.append(f"{where}: {r.status}{damaged or ' (rerun the same compare command to resume it)'}")
    if problems:
        doc.h(3, "Diverged, failed and unfinished runs")
        doc.items(problems)
    return made


def report(
    results_dir: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    title: str = "theorylr lab report",
    figures: bool = True,
) -> ReportPaths:
    """Write ``report.md``, ``report.html`` and ``figures/`` for every run under ``results_dir``.

    Args:
        results_dir: a directory written by :func:`theorylr.lab.compare` (one or several workloads).
        out_dir: where to write (default: ``results_dir``).
        title: the report's title.
        figures: draw the PNG figures (``False``: tables only, much faster, and ``figures/`` is left as it is).
            A redraw deletes the figures of an earlier report that this one does not draw (same file names, for
            the same workloads), so that none looks current by mistake.

    Returns:
        the :class:`ReportPaths`.

    Raises:
        FileNotFoundError: when the directory holds no runs.
        ValueError: when the runs of a trial are not seeds of one configuration
            (:func:`~theorylr.lab.results.check_consistent`): nothing is written.
    """
    root = Path(results_dir)
    runs = load_runs(root)
    if not runs:
        raise FileNotFoundError(f"no runs (config.json files) under {root}: run 'theorylr compare --out {root}' first")
    check_consistent(runs)
    target_dir = Path(out_dir) if out_dir is not None else root
    summaries = summarize(runs)
    doc = _Doc()
    doc.h(1, title)
    n_workloads = len(summaries)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    doc.p(
        f"Drawn {now()[:19].replace('T', ' ')} UTC from {root} : {len(runs)} runs on {n_workloads} workload(s) ("
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + "). The figures and tables come from the run files only; rerun 'theorylr report' to redraw them."
    )
    doc.items(_environment_lines(runs))
    doc.p(
        "How to read it: each rule is shown at its best trial (tuned rules searched a log-grid of learning "
        "rates; the protocol is in docs/lab.md of theorylr's source tree and sdist). Curves are medians over "
        "seeds with a min-max band. Time to target is the wall time of the first epoch whose evaluation "
        "reaches the workload's target; the 'incl. tuning' column and the cost-inclusive profile add the "
        "compute the tuning spent."
    )

    drawn: list[Path] = []
    kinds = {s.rule: s.kind for rows_ in summaries.values() for s in rows_}
    order = {"theory": 0, "lr-free": 1, "tuned": 2, "baseline": 3}
    colors = plots.color_map(sorted(kinds, key=lambda r: (order.get(kinds[r], 9), r))) if figures else {}
    by_workload: dict[str, list[Run]] = {}
    for r in runs:
        by_workload.setdefault(r.workload, []).append(r)

    best_times = {w: {s.rule: s.time_to_target for s in rows} for w, rows in summaries.items()}
    cost_times = {w: {s.rule: s.time_to_target_cost_inclusive for s in rows} for w, rows in summaries.items()}
    with_target = {w: t for w, t in best_times.items() if target_of(by_workload[w][0]) is not None}
    usable = [w for w, per in with_target.items() if any(math.isfinite(t) for t in per.values())]
    if with_target and not usable:
        doc.h(2, "Across workloads: performance profile")
        doc.p("No rule reached a workload's target, so there is no profile to draw.")
    elif with_target:
        doc.h(2, "Across workloads: performance profile")
        views = {
            "best trial": performance_profile(with_target, PROFILE_TAUS),
            "cost-inclusive": performance_profile({w: cost_times[w] for w in with_target}, PROFILE_TAUS),
        }
        doc.p(
            f"Fraction of the {len(usable)} workload(s) with a reached target ({', '.join(usable)}) on which a rule "
            "reaches the target within tau times the fastest rule's time (AlgoPerf style); '-' for a rule not run "
            "on any of them."
        )
        ran = {rule for w in usable for rule in with_target[w]}
        rows = []
        for rule in sorted(views["best trial"]):
            if rule not in ran:
                rows.append([rule] + ["-"] * (2 * len(PROFILE_TAUS)))
                continue
            rows.append(
                [rule]
                + [_num(v, 3) for v in views["best trial"][rule]]
                + [_num(v, 3) for v in views["cost-inclusive"][rule]]
            )
        doc.table(
            ["rule"] + [f"tau={t:g}" for t in PROFILE_TAUS] + [f"incl. tuning, tau={t:g}" for t in PROFILE_TAUS],
            rows,
        )
        taus = [1.0 + 0.05 * i for i in range(0, 181)]  # 1 .. 10
        curves = {
            "best trial": performance_profile(with_target, taus),
            "cost-inclusive": performance_profile({w: cost_times[w] for w in with_target}, taus),
        }
        path = (
            plots.plot_profile(curves, taus, kinds, target_dir / "figures" / _PROFILE_FIGURE, colors=colors)
            if figures
            else None
        )
        if path is not None:
            drawn.append(path)
            doc.img(os.path.relpath(path, target_dir).replace(os.sep, "/"), "performance profiles")

    for workload, rows_ in summaries.items():
        drawn += _workload_section(doc, root, target_dir, workload, rows_, by_workload[workload], figures, colors)

    if figures:
        _remove_stale_figures(target_dir, list(summaries), drawn)
    markdown_path = target_dir / "report.md"
    html_path = target_dir / "report.html"
    write_text(markdown_path, doc.markdown())
    write_text(html_path, doc.html(title))
    return ReportPaths(markdown_path, html_path, drawn)
