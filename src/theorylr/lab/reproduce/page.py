"""The verdict page: ``REPRODUCTION.md`` and ``REPRODUCTION.html`` with every paper's claims table and figures.

:func:`write_page` reads the ``claims.json`` files a reproduction wrote (``OUT/<paper>/<scale>/claims.json``), so the
page can be redrawn at any time without training. With ``out_dir`` elsewhere (e.g. ``docs/``) the figures are
copied beside the page under ``figures_subdir`` so the page is self-contained.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from theorylr.lab.reproduce.claims import HOLDS, Claim, PaperResult, write_result
    >>> out = Path(tempfile.mkdtemp())
    >>> claim = Claim("x-1", "lars", "§3", "a claim", "paper", "measured", "criterion", HOLDS)
    >>> _ = write_result(out / "lars" / "quick", PaperResult("lars", "A paper", "Gitman et al.", "quick", [claim]))
    >>> md, html = write_page(out, "quick")
    >>> "| x-1 |" in md.read_text().replace("**", ""), html.name
    (True, 'REPRODUCTION.html')
"""

from __future__ import annotations

import html
import os
import shutil
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from theorylr.lab._files import write_text
from theorylr.lab.environment import environment, now
from theorylr.lab.reproduce.claims import DOES_NOT_HOLD, HOLDS, PARTLY, PaperResult, fmt, read_result

__all__ = ["PAPERS", "write_page"]

#: The targets in page order.
PAPERS = ("lars", "exact-adam", "lipschitz")
_HEADERS = ("claim", "section", "the paper reported", "we measured", "criterion", "verdict")


@dataclass
class _Doc:
    """A list of blocks rendered to Markdown and to HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, value: Any) -> None:
        self.blocks.append((kind, value))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {line}" for line in value))
            elif kind == "code":
                out.append("```\n" + "\n".join(value) + "\n```")
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})\n\n*{value[1]}*")
            elif kind == "table":
                headers, rows = value
                lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(v)}</li>" for v in value) + "</ul>")
            elif kind == "code":
                body.append("<pre>" + e("\n".join(value)) + "</pre>")
            elif kind == "img":
                body.append(
                    f'<figure><img src="{e(value[0])}" alt="{e(value[1])}"><figcaption>{e(value[1])}</figcaption>'
                    "</figure>"
                )
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                cells = []
                for row in rows:
                    tds = "".join(
                        f'<td class="{_css(c)}">{e(c)}</td>' if h == "verdict" else f"<td>{e(c.replace('**', ''))}</td>"
                        for h, c in zip(headers, row)
                    )
                    cells.append(f"<tr>{tds}</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody></table>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
            "th,td{border:1px solid #ccc;padding:4px 7px;vertical-align:top;text-align:left}th{background:#f3f3f3}"
            "td.holds{background:#e3f5e1}td.partly{background:#fff4d6}td.fails{background:#fbe0e0}"
            "td.notrun{background:#eee;color:#666}img{max-width:100%}figure{margin:1em 0}"
            "figcaption{color:#555;font-size:0.85em}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


def _provenance_lines(results: Sequence[PaperResult]) -> list[str]:
    """One line per target on what wrote its claims (a page can gather targets of several invocations)."""
    lines = []
    for r in results:
        p = r.provenance
        if not p:
            continue
        commit = str(p.get("git_commit") or "unknown")[:12] + (
            " with uncommitted changes" if p.get("git_dirty") else ""
        )
        data = f", --data-dir {p['data_dir']}" if p.get("data_dir") else ""
        command = f"; command: {p['command']}" if p.get("command") else ""
        lines.append(
            f"{r.paper} written {str(p.get('written', '?'))[:19].replace('T', ' ')} UTC by commit {commit}, torch "
            f"{p.get('torch', '?')}, device {p.get('device', '?')}{data}{command}"
        )
    return lines


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _css(verdict: str) -> str:
    return {HOLDS: "holds", PARTLY: "partly", DOES_NOT_HOLD: "fails"}.get(verdict, "notrun")


def _load(results_dir: Path, scale: str, papers: Sequence[str]) -> list[PaperResult]:
    out = []
    for paper in papers:
        directory = results_dir / paper / scale
        if (directory / "claims.json").exists():
            out.append(read_result(directory))
    return out


def _figure_link(results_dir: Path, out_dir: Path, result: PaperResult, rel: str, subdir: str | None) -> str:
    source = results_dir / result.paper / result.scale / rel
    if subdir is None:
        return os.path.relpath(source, out_dir).replace(os.sep, "/")
    target = out_dir / subdir / result.paper / Path(rel).name
    if source.exists() and source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return f"{subdir}/{result.paper}/{Path(rel).name}"


def write_page(
    results_dir: str | os.PathLike[str],
    scale: str,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    figures_subdir: str | None = None,
    papers: Sequence[str] = PAPERS,
    command: str | None = None,
) -> tuple[Path, Path]:
    """Write ``REPRODUCTION.md`` and ``REPRODUCTION.html`` for the ``scale`` results under ``results_dir``.

    Args:
        results_dir: the ``--out`` directory of ``theorylr reproduce``.
        scale: the scale's name (``quick``, ``full``, ...): which results to show.
        out_dir: where the page goes (default: ``results_dir``).
        figures_subdir: copy the figures to ``out_dir/figures_subdir/<paper>/`` and link them there (for a
            self-contained copy such as ``docs/``); default: link them where they are.
        papers: the targets to include, in order (those without results are left out).
        command: the command line that produced the results (shown on the page).

    Returns:
        ``(markdown path, html path)``.

    Raises:
        FileNotFoundError: when no target has results for ``scale``.
    """
    root = Path(results_dir)
    target = Path(out_dir) if out_dir is not None else root
    results = _load(root, scale, papers)
    if not results:
        raise FileNotFoundError(f"no claims.json under {root}/<paper>/{scale}: run 'theorylr reproduce' first")
    env = environment()
    doc = _Doc()
    title = "Reproducing the papers behind theorylr"
    doc.add("h", (1, title))
    doc.add(
        "p",
        f"Written {now()[:19].replace('T', ' ')} UTC from the claims files under {root.name}/ (scale '{scale}'). "
        "Every measured number comes from the run files of that directory (the lab's run directories, or the "
        "analytic results in analytic/*.json); the verdict of each claim is computed by the criterion shown beside "
        "it. A claim that does not hold is a result, reported as measured.",
    )
    if command:
        doc.add("code", [command])
    wall = sum(r.wall_time for r in results if r.wall_time == r.wall_time)
    doc.add(
        "ul",
        [
            f"theorylr {env['theorylr']}, torch {env['torch']}, Python {env['python']}; git commit "
            f"{env.get('git_commit') or 'unknown'}",
            f"CPU: {env['cpu']} ({env['cpu_count']} logical cores); GPU: {env.get('gpu') or 'none'}",
            "wall time of the invocation that wrote each target: "
            + ", ".join(f"{r.paper} {fmt(r.wall_time, 3)} s" for r in results)
            + f" (total {fmt(wall, 3)} s; a resumed run counts only the work it did)",
            *_provenance_lines(results),
        ],
    )
    if scale != "full":
        doc.add(
            "p",
            "This is not the full form: networks are smaller, runs shorter and seeds fewer than the papers', so a "
            "verdict here says what holds at this size. Each section lists the commands of the paper-sized run.",
        )
    doc.add("h", (2, "Summary"))
    summary_rows = []
    for r in results:
        counts = r.counts()
        not_run = sum(v for k, v in counts.items() if k.startswith("not run"))
        summary_rows.append(
            [
                r.paper,
                str(len(r.claims)),
                str(counts.get(HOLDS, 0)),
                str(counts.get(PARTLY, 0)),
                str(counts.get(DOES_NOT_HOLD, 0)),
                str(not_run),
            ]
        )
    doc.add("table", (["paper", "claims", HOLDS, PARTLY, DOES_NOT_HOLD, "not run or inconclusive"], summary_rows))
    verdict_rows = [[c.id, r.paper, c.claim, c.verdict] for r in results for c in r.claims]
    doc.add("table", (["id", "paper", "claim", "verdict"], verdict_rows))

    for r in results:
        doc.add("h", (2, r.title))
        doc.add("p", f"Source: {r.reference}. Target: theorylr reproduce {r.paper}.")
        rows = [[f"**{c.id}** {c.claim}", c.section, c.reported, c.measured, c.criterion, c.verdict] for c in r.claims]
        doc.add("table", (list(_HEADERS), rows))
        settings: list[str] = []
        seen: dict[str, str] = {}
        for c in r.claims:
            if c.setting:
                settings.append(f"{c.id}: " + (f"as {seen[c.setting]}" if c.setting in seen else c.setting))
                seen.setdefault(c.setting, c.id)
        if settings:
            doc.add("p", "Settings (ours, where they differ from the paper's):")
            doc.add("ul", settings)
        for table in r.tables:
            doc.add("h", (3, str(table["title"])))
            doc.add("table", (list(table["headers"]), [[str(c) for c in row] for row in table["rows"]]))
        if r.figures:
            doc.add("h", (3, "Figures (drawn from the run files)"))
            for rel, caption in r.figures:
                link = urllib.parse.quote(_figure_link(root, target, r, rel, figures_subdir))  # a URL: '#', ' '
                doc.add("img", (link, caption))
        if r.notes:
            doc.add("h", (3, "Departures from the paper and caveats"))
            doc.add("ul", r.notes)
        if r.commands:
            doc.add("h", (3, "Full form"))
            doc.add("code", r.commands)
    md_path, html_path = target / "REPRODUCTION.md", target / "REPRODUCTION.html"
    write_text(md_path, doc.markdown())
    write_text(html_path, doc.html(title))
    return md_path, html_path
