"""The report is drawn from files only: tables against hand computations from the same files, figures, redraw."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import theorylr
from tests.lab.conftest import TINY, TINY_BINARY
from tests.lab.conftest import hand_run as _run
from theorylr.lab import compare, get_workload, load_runs, performance_profile, report, summarize
from theorylr.lab._files import read_csv, read_json
from theorylr.lab.scores import best_trial, time_to_target
from theorylr.lab.workloads import Target

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    kwargs = {"out": out, "seeds": 2, "trials": 2, "verbose": False}
    compare(dataclasses.replace(TINY, epochs=3), "adam,momentum-cosine,lipschitz-sgd,lars,exact-adam", **kwargs)
    compare(TINY_BINARY, "adam,lipschitz-sgd-rigorous", **kwargs)
    diabetes = dataclasses.replace(get_workload("diabetes-leastsq"), epochs=3)
    compare(diabetes, "sgd@1e10,adam", **kwargs)
    return out


def _hand_median_final(directory: Path, rule: str, trial: int, column: str) -> float:
    values = []
    for seed_dir in sorted((directory / rule / f"trial-{trial:02d}").iterdir()):
        values.append(read_csv(seed_dir / "metrics.csv")[-1][column])
    return statistics.median(values)


def test_report_files_and_links(results: Path) -> None:
    paths = report(results, figures=False)
    markdown = paths.markdown.read_text()
    html = paths.html.read_text()
    assert paths.markdown == results / "report.md" and paths.html == results / "report.html"
    for workload in ("tiny-wine-mlp", "tiny-cancer-logreg", "diabetes-leastsq"):
        assert f"## Workload {workload}" in markdown and f"Workload {workload}</h2>" in html
    for rule in ("adam", "momentum-cosine", "lipschitz-sgd", "lars", "exact-adam", "lipschitz-sgd-rigorous"):
        assert f"| {rule} |" in markdown and f"<td>{rule}</td>" in html
    assert "performance profile" in markdown and "<img " not in html


def test_report_figures(results: Path, tmp_path: Path) -> None:
    shutil.copytree(results / "tiny-wine-mlp", tmp_path / "tiny-wine-mlp")  # one workload: fewer figures to draw
    paths = report(tmp_path)
    markdown = paths.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links and len(links) == len(paths.figures) == paths.html.read_text().count("<img ")
    for link in links:
        assert (tmp_path / link).read_bytes().startswith(PNG)
    names = {p.name for p in paths.figures}
    assert names == {
        "curves_epoch.png",
        "curves_time.png",
        "lr.png",
        "trust_ratios.png",
        "estimates.png",
        "tuning.png",
        "profile.png",
    }
    # a redraw without the LARS runs: their trust-ratio figure goes (it would look current); a user's file stays
    shutil.rmtree(tmp_path / "tiny-wine-mlp" / "lars")
    (tmp_path / "figures" / "tiny-wine-mlp" / "mine.png").write_bytes(PNG)
    redrawn = report(tmp_path)
    assert {p.name for p in redrawn.figures} == names - {"trust_ratios.png"}
    assert not (tmp_path / "figures" / "tiny-wine-mlp" / "trust_ratios.png").exists()
    assert (tmp_path / "figures" / "tiny-wine-mlp" / "mine.png").exists()
    assert all(p.exists() for p in redrawn.figures)


def test_best_trial_and_costs_match_a_hand_computation(results: Path) -> None:
    directory = results / "tiny-wine-mlp"
    scores = [_hand_median_final(directory, "adam", t, "train_loss") for t in (0, 1)]
    best = scores.index(min(scores))
    rows = {s.rule: s for s in summarize(load_runs(results))["tiny-wine-mlp"]}
    adam = rows["adam"]
    assert adam.best_trial == best and adam.tuned and adam.trials == 2 and adam.seeds == 2
    assert adam.final_train_loss == pytest.approx(scores[best], rel=1e-15)

    # time to target (train_accuracy >= 0.6) and its cost-inclusive version, per seed, by hand from the files
    plain, inclusive = [], []
    for seed in (0, 1):
        rows_best = read_csv(directory / "adam" / f"trial-{best:02d}" / f"seed-{seed}" / "metrics.csv")
        hit = next((r for r in rows_best if r["train_accuracy"] >= 0.6), None)
        t = math.inf if hit is None else hit["wall_time"]
        other = read_json(directory / "adam" / f"trial-{1 - best:02d}" / f"seed-{seed}" / "meta.json")["wall_time"]
        plain.append(t)
        inclusive.append(t + other)
    assert adam.time_to_target == pytest.approx(statistics.median(plain))
    assert adam.time_to_target_cost_inclusive == pytest.approx(statistics.median(inclusive))
    total = sum(read_json(p)["wall_time"] for p in (directory / "adam").rglob("meta.json"))
    assert adam.total_compute == pytest.approx(total)
    # untuned rules: one trial, no tuning charge
    lipschitz = rows["lipschitz-sgd"]
    assert lipschitz.trials == 1 and lipschitz.time_to_target_cost_inclusive == lipschitz.time_to_target


def test_divergence_shows_in_the_report(results: Path) -> None:
    rows = {s.rule: s for s in summarize(load_runs(results))["diabetes-leastsq"]}
    assert rows["sgd@1e+10"].diverged == 2 and math.isinf(rows["sgd@1e+10"].final_train_loss)
    markdown = report(results, figures=False).markdown.read_text()
    meta = read_json(results / "diabetes-leastsq" / "sgd@1e+10" / "trial-00" / "seed-0" / "meta.json")["diverged"]
    assert meta["loss"] in ("nan", "inf") and meta["step"] >= 1
    line = (  # trials numbered from 0, as in compare's output and the trial-NN directories
        f"sgd@1e+10 trial 0 seed 0: diverged ({meta['where']} = {meta['loss']}) at epoch {meta['epoch']}, "
        f"step {meta['step']}"
    )
    assert line in markdown
    assert "| sgd@1e+10 | baseline |" in markdown and "| diverged |" in markdown


def test_report_redraws_from_files_only(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    for extra in ("report.md", "report.html", "figures"):
        target = copy / extra
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    first = report(copy, figures=False).markdown.read_text()
    second = report(copy, figures=False).markdown.read_text()

    def strip(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("Drawn "))

    assert strip(first) == strip(second)
    assert strip(first) == strip(report(results, figures=False).markdown.read_text())


def test_invocations_that_did_not_complete_are_named(results: Path, tmp_path: Path) -> None:
    shutil.copytree(results / "tiny-wine-mlp", tmp_path / "tiny-wine-mlp")
    path = tmp_path / "tiny-wine-mlp" / "compare.json"
    record = read_json(path)
    assert {inv["status"] for inv in record["invocations"]} == {"complete"}
    assert "did not complete" not in report(tmp_path, figures=False).markdown.read_text()
    record["invocations"] += [
        {**record["invocations"][0], "time": "2026-12-07T10:00:00", "status": "interrupted"},
        {**record["invocations"][0], "time": "2026-12-07T11:00:00", "status": "running"},
        {k: v for k, v in record["invocations"][0].items() if k != "status"},  # written before statuses existed
    ]
    path.write_text(json.dumps(record))
    text = report(tmp_path, figures=False).markdown.read_text()
    assert (
        "2 of the 4 'theorylr compare' invocations recorded for this workload did not complete "
        "(2026-12-07T10:00:00: interrupted; 2026-12-07T11:00:00: running, or killed)"
    ) in text


def test_unfinished_runs_are_listed(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(results / "tiny-cancer-logreg", copy / "tiny-cancer-logreg")
    meta_path = copy / "tiny-cancer-logreg" / "adam" / "trial-00" / "seed-1" / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"finished"', '"running"'))
    markdown = report(copy, figures=False).markdown.read_text()
    assert "adam trial 0 seed 1: running (rerun the same compare command to resume it)" in markdown


def test_report_of_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no runs"):
        report(tmp_path)


def test_time_to_target_and_best_trial_by_hand() -> None:
    rows = [
        {"epoch": 0.0, "step": 0.0, "wall_time": 0.5, "test_accuracy": 0.5, "train_loss": 2.0},
        {"epoch": 1.0, "step": 10.0, "wall_time": 1.5, "test_accuracy": 0.89, "train_loss": 1.0},
        {"epoch": 2.0, "step": 20.0, "wall_time": 2.5, "test_accuracy": 0.91, "train_loss": 0.5},
    ]
    assert time_to_target(_run(rows), Target("test_accuracy", 0.9)) == (20.0, 2.5)
    assert time_to_target(_run(rows), Target("test_accuracy", 0.95)) == (math.inf, math.inf)
    assert time_to_target(_run(rows), Target("train_loss", 1.0)) == (10.0, 1.5)
    good = [_run(rows, trial=1, seed=s) for s in (0, 1)]
    lower = [dict(r, train_loss=r["train_loss"] / 2) for r in rows]
    better_but_diverged = [_run(lower, trial=0, seed=0), _run(lower, "diverged", trial=0, seed=1)]
    better = [_run(lower, trial=2, seed=s) for s in (0, 1, 2)]
    assert best_trial({0: better_but_diverged, 1: good}, "train_loss") == 1  # median of (0.25, inf) = inf
    assert best_trial({0: better_but_diverged, 1: good, 2: better}, "train_loss") == 2
    assert best_trial({0: good, 1: better}, "test_accuracy") == 0  # equal accuracy: the lower index


def test_an_unfinished_trial_is_not_the_best_while_an_ended_one_exists() -> None:
    """A report drawn while a comparison runs: an interrupted trial's last epoch so far is not its final one, so it
    competes only when no trial has ended; its summary cells say they are partial."""
    from theorylr.lab.report import _loss_text
    from theorylr.lab.scores import summarize

    rows = [{"epoch": float(e), "step": 10.0 * e, "wall_time": 1.0 + e, "train_loss": 2.0 / (e + 1)} for e in range(4)]
    finished = [_run(rows, trial=0, seed=s) for s in (0, 1)]
    early = [dict(r, train_loss=r["train_loss"] / 10) for r in rows[:2]]  # 1 of 3 epochs, lower loss so far
    unfinished = [_run(early, "interrupted", trial=1, seed=0), _run(early, "running", trial=1, seed=1)]
    for run in unfinished:
        run.config["epochs"] = 3
    assert best_trial({0: finished, 1: unfinished}, "train_loss") == 0
    assert best_trial({1: unfinished}, "train_loss") == 1  # nothing has ended: the best so far
    (alone,) = summarize(unfinished)["w"]
    assert _loss_text(alone.final_train_loss, alone).endswith("(partial: 1/3 epochs)")
    (both,) = summarize([*finished, *unfinished])["w"]
    assert both.best_trial == 0 and "partial" not in _loss_text(both.final_train_loss, both)


def test_performance_profile_by_hand() -> None:
    times = {
        "w1": {"a": 1.0, "b": 2.0, "c": math.inf},
        "w2": {"a": 6.0, "b": 3.0},  # c did not run here
        "w3": {"a": math.inf, "b": math.inf},  # nobody reached: left out
    }
    profile = performance_profile(times, [1.0, 2.0, 4.0])
    assert profile == {"a": [0.5, 1.0, 1.0], "b": [0.5, 1.0, 1.0], "c": [0.0, 0.0, 0.0]}
    assert math.isnan(performance_profile({"w": {"a": math.inf}}, [1.0])["a"][0])  # no usable workload


def _section(markdown: str, workload: str) -> str:
    return markdown.split(f"## Workload {workload}\n", 1)[1].split("\n## ", 1)[0]


def test_trials_are_numbered_from_zero_as_the_directories(results: Path) -> None:
    best = {s.rule: s for s in summarize(load_runs(results))["tiny-wine-mlp"]}["adam"].best_trial
    section = _section(report(results, figures=False).markdown.read_text(), "tiny-wine-mlp")
    assert re.search(rf"\| adam \| tuned \| [^|]+ \(trial {best} of 0-1\) \|", section)
    assert f"| adam | {best} (best) |" in section and f"| adam | {1 - best} |" in section
    assert "'not reached' when at least half of the seeds never reach the target" in section


def test_failed_and_diverged_trials_are_labelled_and_drawn(results: Path, tmp_path: Path) -> None:
    """Every trial of the only tuned rule failed or diverged: the grid says which, and the figures are drawn (a log
    axis with nothing finite on it used to stop the report)."""
    copy = tmp_path / "copy"
    shutil.copytree(results / "tiny-cancer-logreg", copy / "tiny-cancer-logreg")
    adam = copy / "tiny-cancer-logreg" / "adam"
    degenerate = {"epoch": 2, "step": None, "loss": None, "where": "DegenerateLipschitzError: L = 0.0"}
    for trial, status, extra in ((0, "failed", {"error": "RuntimeError: boom"}), (1, "diverged", {})):
        for meta_path in (adam / f"trial-{trial:02d}").glob("seed-*/meta.json"):
            meta = read_json(meta_path)
            meta.update(status=status, **extra)
            if status == "diverged":
                meta["diverged"] = degenerate
            meta_path.write_text(json.dumps(meta))
    paths = report(copy)
    assert "tuning.png" in {p.name for p in paths.figures}
    assert (copy / "figures" / "tiny-cancer-logreg" / "tuning.png").read_bytes().startswith(PNG)
    markdown = paths.markdown.read_text()
    assert re.search(r"\| adam \| 0 \(best\) \| [^|]+ \| failed \|", markdown)
    assert re.search(r"\| adam \| 1 \| [^|]+ \| diverged \|", markdown)
    assert re.search(r"\| adam \| tuned \| [^|]+ \| failed \| failed \|", markdown)  # the best trial (0) failed
    assert "adam trial 1 seed 0: diverged (DegenerateLipschitzError: L = 0.0) at epoch 2\n" in markdown
    assert "adam trial 0 seed 1: failed: RuntimeError: boom" in markdown


def test_range_test_shows_the_lr_it_chose(tmp_path: Path) -> None:
    """The range test trains at the lr it chose (meta.json's chosen_lr, metrics.csv's lr), not at its configured
    one (the rule's default 0.001): the report shows the chosen lr."""
    compare(dataclasses.replace(TINY, epochs=1), "adam-range-test", out=tmp_path, verbose=False)
    run_dir = tmp_path / TINY.name / "adam-range-test" / "trial-00" / "seed-0"
    chosen = read_json(run_dir / "meta.json")["setup"]["chosen_lr"]
    assert read_csv(run_dir / "metrics.csv")[-1]["lr"] == pytest.approx(chosen)
    assert f"{chosen:.3g}" != "0.001"  # else this test could not tell the two apart
    markdown = report(tmp_path, figures=False).markdown.read_text()
    assert f"| adam-range-test | baseline | {chosen:.3g} (range test) |" in markdown


def test_report_text_helpers_from_the_review() -> None:
    """A median step count of two seeds may end in .5 (it printed '0' for 0.5: 'reached before training'); names
    holding HTML are shown in the Markdown, not rendered."""
    from theorylr.lab.report import _Doc, _steps

    assert (_steps(0.5), _steps(12.0), _steps(math.inf)) == ("0.5", "12", "not reached")
    doc = _Doc()
    doc.p("rule <script>alert(1)</script>")
    doc.table(["rule"], [["<i>x</i>"]])
    text = doc.markdown()
    assert re.search(r"(?<!\\)<", text) is None  # every < escaped
    assert "\\<script>" in text and "\\<i>x\\</i>" in text


def test_rules_modules_imported_before_the_timed_set_up_exist() -> None:
    import importlib

    from theorylr.lab.runner import _RULE_MODULES

    for name in _RULE_MODULES:
        importlib.import_module(name)


def test_report_leaves_the_callers_matplotlib_backend_alone(results: Path, tmp_path: Path) -> None:
    """``report`` called ``matplotlib.use("Agg")``: a notebook's inline backend was switched under the user."""
    shutil.copytree(results / "tiny-cancer-logreg", tmp_path / "tiny-cancer-logreg")
    script = (
        "import sys, matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt\n"
        "from theorylr.lab import report\n"
        f"paths = report({str(tmp_path)!r})\n"
        "assert paths.figures, 'no figures drawn'\n"
        "print(matplotlib.get_backend(), plt.get_fignums())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "[]"]


def test_no_module_of_the_package_imports_pyplot() -> None:
    """Figures are drawn on bare ``Figure`` objects (``plots.subplots``), never through pyplot's global state."""
    root = Path(theorylr.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            assert "matplotlib.pyplot" not in names and not (module == "matplotlib" and "pyplot" in names), path


def test_the_environment_lists_the_thread_counts_of_resumed_parts() -> None:
    """A run started with 1 thread and resumed with 2 showed "torch threads per run: 1" (meta.json records both)."""
    from tests.lab.conftest import hand_run
    from theorylr.lab.report import _environment_lines

    run = hand_run([{"epoch": 0}])
    run.meta.update({"torch": "2.13.0", "threads": 1, "device": "cpu"})
    run.meta["resumed_environment"] = [{"started": "t", "threads": 2}]
    line = next(x for x in _environment_lines([run]) if "threads per run" in x)
    assert line.endswith("torch threads per run: 1, 2")


def test_the_environment_lists_every_version_commit_and_cpu_the_runs_recorded() -> None:
    """The lines showed the first run's torch, commit and CPU only, and never git_dirty: a results directory mixing
    two commits (one with uncommitted changes) and two machines read as one clean run."""
    from tests.lab.conftest import hand_run
    from theorylr.lab.report import _environment_lines

    first, second = hand_run([{"epoch": 0}]), hand_run([{"epoch": 0}], seed=1)
    common = {"theorylr": "0.1", "python": "3.11", "threads": 1, "device": "cpu", "cpu_count": 2, "gpu": None}
    first.meta.update(common, torch="2.13.0", git_commit="aaa", git_dirty=False, cpu="X")
    second.meta.update(common, torch="2.12.0", git_commit="bbb", git_dirty=True, cpu="Y")
    lines = _environment_lines([first, second])
    assert lines[0] == "theorylr 0.1, torch 2.12.0 / 2.13.0 (the runs differ), Python 3.11"
    assert lines[1] == "git commit: aaa / bbb (the runs differ), with uncommitted changes in 1 of 2 runs"
    assert lines[2] == "CPU: X / Y (the runs differ) (2 logical cores), torch threads per run: 1"
    assert lines[3] == "GPU: none; device(s) used: cpu"
    assert _environment_lines([first])[:2] == ["theorylr 0.1, torch 2.13.0, Python 3.11", "git commit: aaa"]


def test_curves_count_a_diverged_seed_as_the_worst_value_and_mark_where_it_diverged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one seed of two diverged, the "median" line was the other seed alone, with no sign of the divergence
    (and a rule whose seeds all diverged at once had a legend entry and nothing drawn)."""
    from tests.lab.conftest import hand_run
    from theorylr.lab import plots
    from theorylr.lab.scores import summarize_rule

    def rows(losses: list[float]) -> list[dict]:
        return [{"epoch": float(e), "wall_time": e / 10, "train_loss": v, "grad_norm": v} for e, v in enumerate(losses)]

    runs = [hand_run(rows([4.0, 3.0]), status="diverged"), hand_run(rows([4.0, 2.0, 1.0, 0.5]), seed=1)]
    med, lo, hi = plots._band(runs, "train_loss", after_divergence=math.inf)
    assert med.tolist() == [4.0, 2.5, math.inf, math.inf]
    assert lo.tolist() == [4.0, 2.0, 1.0, 0.5] and hi.tolist() == [4.0, 3.0, 1.0, 0.5]
    assert plots._band(runs, "train_loss")[0].tolist() == [4.0, 2.5, 1.0, 0.5]  # without it: the survivor alone

    drawn: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or Path(path))
    plots.plot_curves([summarize_rule("r", {0: runs})], tmp_path / "curves.png")
    loss_axes = drawn[0].axes[0]
    marks = [line for line in loss_axes.get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in marks] == [([1.0], [3.0])]
    assert any("diverged" in str(t.get_text()) for t in drawn[0].legends[0].get_texts())
