"""The lab's figures and the REPRODUCTION page, read back: the gaps a mutation review of theorylr.lab.plots and
theorylr.lab.reproduce.page found (102 mutants, 89 survivors, 85 of them killed here; the other 4 are equivalent or
need an out_dir that is its own figures folder). Figures are captured as matplotlib Figures, not PNG files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import hand_run
from theorylr.lab import plots
from theorylr.lab.reproduce.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_RUN_DATA,
    NOT_RUN_FULL,
    PARTLY,
    Claim,
    PaperResult,
    write_result,
)
from theorylr.lab.reproduce.page import write_page
from theorylr.lab.scores import summarize_rule


def _claim(id_: str, paper: str, verdict: str, setting: str = "", claim: str = "a claim") -> Claim:
    return Claim(id_, paper, "§1", claim, "paper said", "we saw", "criterion", verdict, setting=setting)


@pytest.fixture()
def page(tmp_path: Path) -> dict[str, Any]:
    results = tmp_path / "results"
    lars = PaperResult(
        "lars",
        "LARS title",
        "Gitman et al.",
        "quick",
        [
            _claim("l-1", "lars", HOLDS, setting="wine, 2 seeds", claim="a | piped\nclaim"),
            _claim("l-2", "lars", PARTLY, setting="wine, 2 seeds"),
            _claim("l-3", "lars", DOES_NOT_HOLD, setting="wine, 2 seeds"),
            _claim("l-4", "lars", NOT_RUN_DATA),
            _claim("l-5", "lars", NOT_RUN_FULL),
            _claim("l-6", "lars", DOES_NOT_HOLD),
        ],
        figures=[("figures/a fig#1.png", "the first figure")],
        tables=[{"title": "Extra table", "headers": ["h1", "h2"], "rows": [[1, 2.5]]}],
        notes=["a note on departures"],
        commands=["theorylr reproduce lars --scale full"],
        wall_time=2.0,
        provenance={
            "git_commit": "0123456789abcdef0123",
            "git_dirty": True,
            "written": "2026-01-02T03:04:05.678",
            "torch": "9.9",
            "device": "cpu",
            "data_dir": "/data",
            "command": "theorylr reproduce lars",
        },
    )
    lip = PaperResult("lipschitz", "Lipschitz title", "Ref B", "quick", [_claim("p-1", "lipschitz", HOLDS)])
    for r in (lars, lip):
        write_result(results / r.paper / "quick", r)
    fig = results / "lars" / "quick" / "figures" / "a fig#1.png"
    fig.parent.mkdir(parents=True, exist_ok=True)
    fig.write_bytes(b"png")
    out = tmp_path / "docs"
    md, html = write_page(results, "quick", out_dir=out, figures_subdir="figs", command="theorylr reproduce all")
    return {"md": md.read_text(), "html": html.read_text(), "out": out}


def test_page_summary_counts_each_verdict_in_its_column(page: dict[str, Any]) -> None:
    md = page["md"]
    assert f"| paper | claims | {HOLDS} | {PARTLY} | {DOES_NOT_HOLD} | not run or inconclusive |" in md
    assert "| lars | 6 | 1 | 1 | 2 | 2 |" in md
    assert "| lipschitz | 1 | 1 | 0 | 0 | 0 |" in md
    assert "| id | paper | claim | verdict |" in md and f"| l-3 | lars | a claim | {DOES_NOT_HOLD} |" in md


def test_page_markdown_cells_escape_pipes_and_newlines(page: dict[str, Any]) -> None:
    assert f"| l-1 | lars | a \\| piped claim | {HOLDS} |" in page["md"]


def test_page_headings_settings_tables_notes_and_commands(page: dict[str, Any]) -> None:
    md, html = page["md"], page["html"]
    assert md.startswith("# Reproducing the papers behind theorylr\n") and "\n## Summary\n" in md
    assert "\n## LARS title\n" in md and "\n### Extra table\n" in md
    assert "- l-1: wine, 2 seeds\n- l-2: as l-1\n- l-3: as l-1\n" in md and "- l-4:" not in md
    assert "| h1 | h2 |\n|---|---|\n| 1 | 2.5 |" in md
    assert "### Departures from the paper and caveats\n\n- a note on departures" in md
    assert "### Full form\n\n```\ntheorylr reproduce lars --scale full\n```" in md
    assert "```\ntheorylr reproduce all\n```" in md
    assert "This is not the full form" in md
    assert "wall time of the invocation that wrote each target: lars 2 s, lipschitz - s (total 2 s;" in md
    assert (
        "lars written 2026-01-02 03:04:05 UTC by commit 0123456789ab with uncommitted changes, torch 9.9, device "
        "cpu, --data-dir /data; command: theorylr reproduce lars" in md
    )
    assert "lipschitz written" not in md  # no provenance: no line
    assert f'<td class="partly">{PARTLY}</td>' in html and f'<td class="holds">{HOLDS}</td>' in html
    assert '<td class="fails">does not hold</td>' in html and '<td class="notrun">' in html
    assert "<td>l-1 a | piped\nclaim</td>" in html  # the Markdown bold is dropped in HTML
    assert "<h2>LARS title</h2>" in html


def test_page_copies_figures_beside_it_and_links_them_as_urls(page: dict[str, Any]) -> None:
    assert (page["out"] / "figs" / "lars" / "a fig#1.png").read_bytes() == b"png"
    assert "![the first figure](figs/lars/a%20fig%231.png)\n\n*the first figure*" in page["md"]
    assert '<img src="figs/lars/a%20fig%231.png" alt="the first figure">' in page["html"]


# ---------------------------------------------------------------------------------------------------------------
# plots: capture the Figure instead of writing a PNG


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    figs: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or Path(path))
    return figs


def _rows(key: str, values: list[float], **extra: list[float]) -> list[dict]:
    out = []
    for e, v in enumerate(values):
        row = {"epoch": float(e), "wall_time": e / 10, key: v}
        row.update({k: vs[e] for k, vs in extra.items()})
        out.append(row)
    return out


def test_band_median_of_three_seeds_is_the_median_not_the_mean() -> None:
    runs = [hand_run(_rows("train_loss", [v]), seed=i) for i, v in enumerate([1.0, 2.0, 10.0])]
    assert plots._band(runs, "train_loss")[0].tolist() == [2.0]


def test_band_min_of_an_accuracy_is_that_of_the_seeds_still_training() -> None:
    runs = [
        hand_run(_rows("test_accuracy", [0.5]), status="diverged"),
        hand_run(_rows("test_accuracy", [0.5, 0.7]), seed=1),
    ]
    med, lo, hi = plots._band(runs, "test_accuracy", after_divergence=-math.inf)
    assert med.tolist() == [0.5, -math.inf] and lo.tolist() == [0.5, 0.7] and hi.tolist() == [0.5, 0.7]


def test_curves_use_the_given_colours_and_fall_back_when_a_rule_is_missing(tmp_path: Path, drawn: list[Any]) -> None:
    s = summarize_rule("r", {0: [hand_run(_rows("train_loss", [2.0, 1.0], grad_norm=[1.0, 0.5]))]})
    plots.plot_curves([s], tmp_path / "c.png", colors={"r": "#123456"})
    assert drawn[0].axes[0].get_lines()[0].get_color() == "#123456"
    t = dataclasses.replace(s, rule="t")
    plots.plot_curves([s, t], tmp_path / "c.png", colors={"r": "#123456"})  # 't' missing: the default map
    assert [line.get_color() for line in drawn[1].axes[0].get_lines()] == list(plots.color_map(["r", "t"]).values())


def test_curves_panels_labels_scales_styles_and_band(tmp_path: Path, drawn: list[Any]) -> None:
    runs = [
        hand_run(_rows("train_loss", [2.0, 1.0], grad_norm=[1.0, 0.5], test_accuracy=[0.5, 0.6])),
        hand_run(_rows("train_loss", [3.0, 1.5], grad_norm=[1.0, 0.25], test_accuracy=[0.4, 0.8]), seed=1),
    ]
    s = dataclasses.replace(summarize_rule("r", {0: runs}), kind="lr-free")
    plots.plot_curves([s], tmp_path / "c.png", x="wall_time", title="T")
    fig = drawn[0]
    assert fig._suptitle.get_text() == "T"
    assert [ax.get_ylabel() for ax in fig.axes] == ["train loss", "full-batch gradient norm", "test accuracy"]
    assert {ax.get_xlabel() for ax in fig.axes} == {"wall time (s, set-up and training)"}
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "linear"]
    line = fig.axes[0].get_lines()[0]
    assert line.get_linestyle() == "--" and line.get_label() == "r"
    assert list(line.get_xdata()) == [0.0, 0.1] and list(line.get_ydata()) == [2.5, 1.25]
    assert len(fig.axes[0].collections) == 1  # the min-max band of two seeds
    ys = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == 1.0 and max(ys) == 3.0


def test_curves_use_test_loss_when_no_rule_has_an_accuracy(tmp_path: Path, drawn: list[Any]) -> None:
    with_acc = summarize_rule("a", {0: [hand_run(_rows("train_loss", [2.0, 1.0], test_accuracy=[0.1, 0.2]))]})
    without = summarize_rule("b", {0: [hand_run(_rows("train_loss", [2.0, 1.0], test_loss=[1.0, 0.5]))]})
    plots.plot_curves([with_acc, without], tmp_path / "c.png")
    assert drawn[0].axes[2].get_ylabel() == "test accuracy"  # one classifier is enough
    plots.plot_curves([without], tmp_path / "c.png")
    assert drawn[1].axes[2].get_ylabel() == "test loss"


def test_lr_prefers_effective_lr_masks_non_positive_and_is_log(tmp_path: Path, drawn: list[Any]) -> None:
    a = summarize_rule("a", {0: [hand_run(_rows("lr", [1.0, 1.0], effective_lr=[0.5, 0.0]))]})
    b = summarize_rule("b", {0: [hand_run(_rows("effective_lr", [0.2, 0.1]))]})
    plots.plot_lr([a, b], tmp_path / "lr.png", title="T")
    ax = drawn[0].axes[0]
    first, second = ax.get_lines()
    assert first.get_ydata()[0] == 0.5 and math.isnan(first.get_ydata()[1])
    assert list(second.get_ydata()) == [0.2, 0.1]  # a rule with effective_lr only is drawn
    assert ax.get_yscale() == "log" and ax.get_title() == "T"


def test_trust_ratios_label_layers_title_seed_and_log(tmp_path: Path, drawn: list[Any]) -> None:
    run = hand_run(_rows("trust_ratio/layer.0", [1.0, 2.0]), seed=3)
    plots.plot_trust_ratios([summarize_rule("r", {0: [run]})], tmp_path / "t.png")
    ax = drawn[0].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["layer.0"]
    assert ax.get_title() == "r (seed 3)" and ax.get_yscale() == "log"


def test_estimates_columns_panels_and_scales(tmp_path: Path, drawn: list[Any]) -> None:
    run = hand_run(_rows("K_hat", [1.0, 2.0], L=[-1.0, 1.0], **{"trust_ratio/x": [1.0, 1.0]}))
    other = hand_run(_rows("d", [3.0, 4.0]))
    summaries = [summarize_rule("r", {0: [run]}), summarize_rule("s", {0: [other]})]
    assert plots.estimate_columns(summaries) == ["K_hat", "L", "d"]
    plots.plot_estimates(summaries, tmp_path / "e.png")
    axes = drawn[0].axes
    assert [ax.get_title() for ax in axes[:3]] == ["K_hat", "L", "d"]
    assert [ax.get_yscale() for ax in axes[:3]] == ["log", "linear", "log"]
    assert [[line.get_label() for line in ax.get_lines()] for ax in axes[:3]] == [["r"], ["r"], ["s"]]


def test_estimates_hide_the_unused_panels(tmp_path: Path, drawn: list[Any]) -> None:
    run = hand_run(_rows("a", [1.0], b=[1.0], c=[1.0], d=[1.0]))
    plots.plot_estimates([summarize_rule("r", {0: [run]})], tmp_path / "e.png")
    assert [ax.get_visible() for ax in drawn[0].axes] == [True, True, True, True, False, False]


def _tuned(scores: dict[int, tuple[float, float]], best: int) -> Any:
    s = summarize_rule("r", {0: [hand_run(_rows("train_loss", [1.0]))]})
    return dataclasses.replace(s, tuned=True, kind="tuned", trial_scores=scores, best_trial=best)


def test_tuning_draws_accuracy_up_a_star_at_the_best_and_a_line_at_a_diverged_trial(
    tmp_path: Path, drawn: list[Any]
) -> None:
    # the tuning score of an accuracy is stored negated (lower is better)
    s = _tuned({0: (0.01, -0.8), 1: (0.1, -0.9), 2: (1.0, math.inf)}, best=1)
    plots.plot_tuning([s], tmp_path / "t.png", metric="test_accuracy")
    ax = drawn[0].axes[0]
    lines = ax.get_lines()
    assert list(lines[0].get_xdata()) == [0.01, 0.1, 1.0] and list(lines[0].get_ydata())[:2] == [0.8, 0.9]
    assert lines[0].get_linestyle() == ":"
    assert (list(lines[1].get_xdata()), list(lines[1].get_ydata()), lines[1].get_marker()) == ([0.1], [0.9], "*")
    assert [list(line.get_xdata()) for line in lines[2:]] == [[1.0, 1.0]]  # the dotted vertical line
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_ylabel() == "final test_accuracy (median over seeds)" and not ax.texts


def test_tuning_loss_is_log_and_says_when_nothing_is_finite(tmp_path: Path, drawn: list[Any]) -> None:
    plots.plot_tuning([_tuned({0: (0.01, 0.5), 1: (0.1, 0.2)}, best=1)], tmp_path / "t.png", metric="train_loss")
    assert drawn[0].axes[0].get_yscale() == "log"
    plots.plot_tuning([_tuned({0: (0.01, math.inf), 1: (0.1, math.nan)}, best=0)], tmp_path / "t.png", metric="x")
    ax = drawn[1].axes[0]
    assert ax.get_yscale() == "linear" and "nothing to plot" in ax.texts[0].get_text()
    assert len([line for line in ax.get_lines() if line.get_marker() == "*"]) == 0
    untuned = dataclasses.replace(_tuned({0: (0.01, 0.5), 1: (0.1, 0.2)}, best=1), tuned=False)
    assert plots.plot_tuning([untuned], tmp_path / "t.png", metric="train_loss") is None
    assert plots.plot_tuning([_tuned({0: (0.01, 0.5)}, best=0)], tmp_path / "t.png", metric="train_loss") is None


def test_profile_steps_after_each_tau_with_the_rules_style(tmp_path: Path, drawn: list[Any]) -> None:
    profiles = {"best trial": {"b": [0.0, 1.0], "a": [0.5, 1.0]}, "cost": {}}
    plots.plot_profile(profiles, [1.0, 2.0], {"a": "theory", "b": "tuned"}, tmp_path / "p.png")
    first = drawn[0].axes[0]
    b, a = first.get_lines()
    assert b.get_drawstyle() == "steps-post" and b.get_linestyle() == ":" and a.get_linestyle() == "-"
    assert first.get_xscale() == "log" and first.get_title() == "performance profile: best trial"
    assert b.get_color() == plots.color_map(["a", "b"])["b"]  # colours by sorted name
    assert plots.plot_profile({"v": {}}, [1.0], {}, tmp_path / "p.png") is None
    assert [t.get_text() for t in drawn[0].legends[0].get_texts()] == ["b", "a"]


def test_last_finite_skips_a_row_whose_x_is_missing() -> None:
    run = hand_run(
        [{"epoch": 0.0, "wall_time": 0.5, "train_loss": 3.0}, {"epoch": 1.0, "wall_time": math.nan, "train_loss": 2.0}]
    )
    assert plots._last_finite(run, "train_loss", "wall_time") == (0.5, 3.0)


def test_curves_count_a_diverged_seed_as_the_worst_accuracy(tmp_path: Path, drawn: list[Any]) -> None:
    def run(acc: list[float], seed: int, status: str = "finished") -> Any:
        return hand_run(_rows("train_loss", [1.0] * len(acc), test_accuracy=acc), status=status, seed=seed)

    runs = [run([0.5], 0, "diverged"), run([0.5, 0.7], 1), run([0.5, 0.8], 2)]
    plots.plot_curves([summarize_rule("r", {0: runs})], tmp_path / "c.png")
    median = drawn[0].axes[2].get_lines()[0]
    assert list(median.get_ydata()) == [0.5, 0.7]  # the diverged seed is below both: the median is the lower one


def test_curves_of_runs_without_rows_draw_nothing(tmp_path: Path) -> None:
    assert plots.plot_curves([summarize_rule("r", {0: [hand_run([])]})], tmp_path / "c.png") is None


def test_log_axes_need_a_positive_value(tmp_path: Path, drawn: list[Any]) -> None:
    a = summarize_rule("a", {0: [hand_run(_rows("lr", [0.5, 0.2]))]})
    zero = summarize_rule("z", {0: [hand_run(_rows("lr", [0.0, 0.0]))]})
    plots.plot_lr([a, zero], tmp_path / "lr.png")  # one rule with a positive lr is enough
    assert drawn[0].axes[0].get_yscale() == "log"
    plots.plot_trust_ratios([summarize_rule("r", {0: [hand_run(_rows("trust_ratio/w", [0.0, 0.0]))]})], tmp_path / "t")
    assert drawn[1].axes[0].get_yscale() == "linear"  # zeros only: no log axis


def test_curves_keep_a_linear_axis_for_a_diverged_seeds_non_positive_last_value(
    tmp_path: Path, drawn: list[Any]
) -> None:
    runs = [
        hand_run(_rows("train_loss", [1.0, -5.0]), status="diverged"),
        hand_run(_rows("train_loss", [1.0, 1.0, 1.0]), seed=1),
        hand_run(_rows("train_loss", [1.0, 2.0, 1.0]), seed=2),
    ]
    plots.plot_curves([summarize_rule("r", {0: runs})], tmp_path / "c.png")
    assert drawn[0].axes[0].get_yscale() == "linear"  # a log axis would hide the marker at -5


def test_profile_colours_follow_the_sorted_rule_names(tmp_path: Path, drawn: list[Any]) -> None:
    names = ["f", "e", "d", "c", "b", "a", "g", "h"]
    plots.plot_profile({"v": {n: [1.0] for n in names}}, [1.0], {}, tmp_path / "p.png")
    expected = plots.color_map(sorted(names))
    assert [line.get_color() for line in drawn[0].axes[0].get_lines()] == [expected[n] for n in names]


def test_page_escapes_html_and_skips_a_target_without_claims(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_result(
        results / "lars" / "quick", PaperResult("lars", "T", "<b>Ref</b>", "quick", [_claim("x", "lars", HOLDS)])
    )
    (results / "exact-adam" / "quick").mkdir(parents=True)  # an interrupted target: no claims.json yet
    md, html = write_page(results, "quick")
    assert "<p>Source: &lt;b&gt;Ref&lt;/b&gt;. Target: theorylr reproduce lars.</p>" in html.read_text()
    assert "| exact-adam |" not in md.read_text()


def test_page_links_figures_relative_to_itself(tmp_path: Path) -> None:
    result = PaperResult("lars", "T", "R", "quick", [_claim("x", "lars", HOLDS)], figures=[("figures/f.png", "cap")])
    write_result(tmp_path / "lars" / "quick", result)
    md, _ = write_page(tmp_path, "quick")
    assert "![cap](lars/quick/figures/f.png)" in md.read_text()


def test_estimate_columns_list_a_shared_column_once() -> None:
    a = summarize_rule("a", {0: [hand_run(_rows("K_hat", [1.0]))]})
    b = summarize_rule("b", {0: [hand_run(_rows("K_hat", [2.0]))]})
    assert plots.estimate_columns([a, b]) == ["K_hat"]
