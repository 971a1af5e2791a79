"""The benchmark harness's logic (not its timings): how rows take turns, and how the targets read the results."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest
import torch
from benchmarks._timing import peak_transient_bytes, time_rounds
from benchmarks.run import targets


def _recorder(log: list[str], name: str) -> Callable[[], None]:
    return lambda: log.append(name)


def test_interleaved_schedule_steps_every_row_once_per_pass() -> None:
    log: list[str] = []
    steps = {name: _recorder(log, name) for name in "abc"}
    per_round = time_rounds(steps, rounds=2, repeats=3, schedule="interleaved")
    assert {name: len(times) for name, times in per_round.items()} == {"a": 2, "b": 2, "c": 2}
    passes = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert len(passes) == 6 and all(sorted(p) == ["a", "b", "c"] for p in passes)


def test_blocked_schedule_runs_each_rows_steps_back_to_back() -> None:
    log: list[str] = []
    rounds_done: list[int] = []
    steps = {name: _recorder(log, name) for name in "abc"}
    per_round = time_rounds(
        steps, rounds=2, repeats=3, schedule="blocked", after_round=lambda: rounds_done.append(len(log))
    )
    assert all(len(times) == 2 for times in per_round.values())
    # one untimed step and three timed ones per row and round, in runs of four
    runs = [log[i : i + 4] for i in range(0, len(log), 4)]
    assert len(runs) == 6 and all(len(set(run)) == 1 for run in runs)
    assert sorted(run[0] for run in runs[:3]) == ["a", "b", "c"]
    assert rounds_done == [12, 24]


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule must be one of interleaved, blocked"):
        time_rounds({"a": lambda: None}, rounds=1, repeats=1, schedule="random")


def _rows(lars: float, compiled: float) -> list[dict[str, object]]:
    def row(name: str, ms: float) -> dict[str, object]:
        return {
            "name": name,
            "median_ms": ms,
            "ratio_median": ms / 10.0,
            "ratio_min": ms / 10.0,
            "ratio_max": ms / 10.0,
        }

    return [
        row("torch SGD foreach (baseline)", 10.0),
        row("theorylr LARS foreach", lars),
        row("theorylr LARS compiled (inductor)", compiled),
        row("pytorch_optimizer LARS (peer)", 30.0),
    ]


def test_targets_judge_each_schedule() -> None:
    optim = {"rows": _rows(14.0, 11.0), "schedules": {"interleaved": _rows(14.0, 11.0), "blocked": _rows(12.0, 9.0)}}
    found = {t["target"]: t for t in targets({"optim_step": optim})}
    assert found["foreach LARS <= 1.3x torch SGD foreach"]["met"] is False
    assert found["foreach LARS <= 1.3x torch SGD foreach [blocked]"]["met"] is True
    assert found["compiled LARS <= 1.0x torch SGD foreach"]["measured"] == pytest.approx(1.1)
    assert found["compiled LARS <= 1.0x torch SGD foreach [blocked]"]["met"] is True
    peer = found["foreach LARS time / pytorch_optimizer LARS time <= 0.5 (2x faster) [blocked]"]
    assert peer["measured"] == pytest.approx(0.4)


def test_targets_read_results_written_before_schedules() -> None:
    found = {t["target"]: t for t in targets({"optim_step": {"rows": _rows(12.0, 9.0)}})}
    assert found["foreach LARS <= 1.3x torch SGD foreach"]["met"] is True
    assert not any("[blocked]" in name for name in found)
    missing = {t["target"]: t for t in targets({})}
    assert missing["foreach LARS <= 1.3x torch SGD foreach"]["measured"] is None


def test_hook_targets_are_judged_on_the_measured_overhead() -> None:
    """The hooks' target reads the measured epoch-time overhead; the component estimate is informational."""
    config = {
        "workload": "mlp128",
        "batch_size": 64,
        "measured_overhead": 0.05,
        "estimated_overhead": 0.015,
        "floor_overhead": 0.03,
    }
    found = {t["target"]: t for t in targets({"lipschitz_hooks": {"configs": [config]}})}
    judged = found["LipschitzLR hooks <= 2% per epoch (mlp128, batch 64)"]
    assert judged["measured"] == 0.05 and judged["met"] is False and not judged["informational"]
    estimate = found["LipschitzLR hooks <= 2%: component estimate (mlp128, batch 64)"]
    assert estimate["measured"] == 0.015 and estimate["informational"]
    floor = found["LipschitzLR hooks: floor, one norm per batch and nothing else (mlp128, batch 64)"]
    assert floor["measured"] == 0.03 and floor["informational"]


def test_hook_benchmark_reports_the_measured_overhead_and_its_noise(capsys: pytest.CaptureFixture[str]) -> None:
    """A short run of the hook benchmark: the judged figure is the lipschitz row's CPU-time ratio minus one, and the
    second plain copy's ratio is the noise printed beside it."""
    from benchmarks import lipschitz_hooks

    threads = torch.get_num_threads()
    try:
        result = lipschitz_hooks.main(workloads=["mlp128"], repeats=2)  # sets one thread
    finally:
        torch.set_num_threads(threads)
    (config,) = result["configs"]
    ratios = config["ratio_cpu"]
    assert set(ratios) == {"plain", "plain_again", "noop_hook", "norm_hook", "hooks", "lipschitz"}
    assert config["measured_overhead"] == pytest.approx(ratios["lipschitz"] - 1.0)
    assert config["floor_overhead"] == pytest.approx(ratios["norm_hook"] - 1.0)
    assert config["target_below_floor"] == (config["floor_overhead"] > 0.02)
    assert config["noise"] == pytest.approx(abs(ratios["plain_again"] - 1.0))
    assert config["meets_target"] == (config["measured_overhead"] <= 0.02)
    out = capsys.readouterr().out
    assert "measured overhead (lipschitz / plain, cpu time)" in out
    assert "floor (norm_hook / plain, cpu time)" in out


def test_peak_transient_bytes_sees_an_allocation_and_gives_stderr_back(capfd: pytest.CaptureFixture[str]) -> None:
    """The allocator peak of a call that makes a 4 MiB tensor, with kineto's start and stop lines kept off stderr
    while the call's own writes to stderr still get through."""

    def allocate() -> None:
        torch.empty(1 << 20, dtype=torch.float32).fill_(1.0)
        os.write(2, b"inside the call\n")

    before = os.fstat(2)
    assert peak_transient_bytes(allocate) >= 4 << 20
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    sys.stderr.write("after the call\n")
    err = capfd.readouterr().err
    assert "inside the call" in err and "after the call" in err
    assert "USDT" not in err and "profiler_start" not in err
