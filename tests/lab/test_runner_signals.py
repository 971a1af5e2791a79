"""Stopping a comparison for real: Ctrl-C, SIGTERM and a killed parent, in a subprocess (POSIX only).

The comparison runs a deliberately slow rule (20 ms per step, seconds per run) on four seeds; each test waits until
the first runs have written an epoch, signals, and checks that the running runs were recorded as ``interrupted``,
that no queued run was started and that no process of the comparison outlives it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and process groups")

SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import torch

    from theorylr.lab import Rule, RuleSetup, Workload, compare


    def slow_sgd(ctx):
        return RuleSetup(torch.optim.SGD(ctx.model.parameters(), lr=0.01), after_step=lambda: time.sleep(0.02))


    WORKLOAD = Workload(
        name="tiny-slow",
        description="wine, MLP 13-8-3, batch 48 (tests)",
        dataset="wine",
        model="mlp",
        model_options={"hidden": (8,)},
        loss="cross_entropy",
        batch_size=48,
        epochs=200,
    )
    RULE = Rule("slow-sgd", "baseline", "SGD sleeping 20 ms per step (tests)", slow_sgd, defaults={"lr": 0.01})

    if __name__ == "__main__":
        if len(sys.argv) > 3 and sys.argv[3] == "cut-shutdown":
            # A second Ctrl-C cuts the pool's shutdown short, and the idle workers never get the sentinels that tell
            # them to exit (neither from the shutdown nor from the executor's exit hook, removed here).
            import concurrent.futures.process
            import threading

            def cut_shutdown(self, wait=True, *, cancel_futures=False):
                raise KeyboardInterrupt

            concurrent.futures.ProcessPoolExecutor.shutdown = cut_shutdown
            threading._threading_atexits[:] = [
                hook for hook in threading._threading_atexits
                if getattr(hook, "func", None) is not concurrent.futures.process._python_exit
            ]
        try:
            compare(WORKLOAD, [RULE], out=sys.argv[1], seeds=4, jobs=int(sys.argv[2]), threads=1, verbose=False)
        except KeyboardInterrupt:
            sys.exit(130)
    """
)
TIMEOUT = 60.0


def _session_alive(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(sid, 0)
        except ProcessLookupError:
            return []
        return [sid]
    alive = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = Path(stat).read_text().rpartition(")")[2].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
                alive.append(int(Path(stat).parent.name))
    return alive


def _statuses(out: Path) -> dict[str, str]:
    return {
        Path(path).parent.name: json.loads(Path(path).read_text())["status"]
        for path in sorted(glob.glob(str(out / "**" / "meta.json"), recursive=True))
    }


def _wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _started(out: Path) -> int:
    """How many runs have written epoch 1 (header, epoch 0, epoch 1 at least)."""
    count = 0
    for path in glob.glob(str(out / "**" / "metrics.csv"), recursive=True):
        with contextlib.suppress(OSError):
            count += len(Path(path).read_text().splitlines()) >= 3
    return count


def _start(tmp_path: Path, jobs: int, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "slow_compare.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "wb") as stderr:  # a file, not a pipe: a stray worker cannot block a read
        process = subprocess.Popen(
            [sys.executable, str(script), str(out), str(jobs), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: Ctrl-C is simulated by signalling the whole group
        )
    return process, out


@contextlib.contextmanager
def _comparison(tmp_path: Path, jobs: int, *extra: str):  # type: ignore[no-untyped-def]
    process, out = _start(tmp_path, jobs, *extra)
    try:
        _wait_for(lambda: _started(out) >= jobs or process.poll() is not None, "the first runs to start")
        assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
        yield process, out
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _assert_stopped(process: subprocess.Popen[bytes], tmp_path: Path, failure: str) -> None:
    """The comparison exits with 130 (interrupted) within the timeout, and no worker of it outlives it."""
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(failure)
    assert code == 130, (tmp_path / "stderr.txt").read_text()
    _wait_for(lambda: not _session_alive(process.pid), "the workers to exit", timeout=10)


@pytest.mark.parametrize(
    ("signum", "whole_group", "jobs"),
    [
        (signal.SIGINT, True, 2),  # Ctrl-C in a terminal: every process of the group gets SIGINT
        (signal.SIGTERM, False, 2),  # kill PID: only the main process gets it
        (signal.SIGTERM, False, 1),
    ],
    ids=["ctrl-c-jobs-2", "sigterm-jobs-2", "sigterm-jobs-1"],
)
def test_a_signal_stops_the_comparison_promptly(tmp_path: Path, signum: int, whole_group: bool, jobs: int) -> None:
    with _comparison(tmp_path, jobs) as (process, out):
        (os.killpg if whole_group else os.kill)(process.pid, signum)
        _assert_stopped(process, tmp_path, "the comparison did not stop")
        # the running runs are recorded as interrupted (resumable); the queued ones were never started
        assert _statuses(out) == {f"seed-{s}": "interrupted" for s in range(jobs)}


def test_a_second_ctrl_c_during_the_shutdown_does_not_hang(tmp_path: Path) -> None:
    """A review saw a comparison hang at exit once, under load, after a Ctrl-C cut the pool's shutdown short: idle
    workers waited for work and the exit joined them. Not reproduced since (this simulation of it exits with the old
    code too); the workers left after such a shutdown now get two seconds to record their runs, then are killed."""
    with _comparison(tmp_path, 2, "cut-shutdown") as (process, out):
        os.killpg(process.pid, signal.SIGINT)
        _assert_stopped(process, tmp_path, "the comparison hung after its shutdown was cut short")
        # recorded as interrupted, or left running if killed first: either way resumable
        assert set(_statuses(out).values()) <= {"interrupted", "running"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_do_not_outlive_a_killed_comparison(tmp_path: Path) -> None:
    with _comparison(tmp_path, 2) as (process, out):
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        _wait_for(lambda: not _session_alive(process.pid), "the orphaned workers to exit", timeout=15)
        assert _statuses(out) == {"seed-0": "interrupted", "seed-1": "interrupted"}


def test_a_run_directory_is_run_by_one_process_at_a_time(tmp_path: Path) -> None:
    """Two comparisons into one OUT ran the same cells twice and removed each other's temporary files mid-write
    (runs failed with FileNotFoundError). The second now waits for the first, then skips the ended run."""
    import threading

    from tests.lab.conftest import TINY
    from theorylr.lab._files import locked, write_csv, write_json
    from theorylr.lab.rules import get_rule
    from theorylr.lab.runner import plan_cells, run_cell

    cell = plan_cells(TINY, [get_rule("adam")], [0], 2, 1)[0]
    directory = cell.directory(tmp_path)
    results: list[Any] = []
    with locked(directory / ".run"):  # another process running this cell
        worker = threading.Thread(target=lambda: results.append(run_cell(cell, tmp_path)))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not (directory / "meta.json").exists()  # waiting, nothing written
        write_json(directory / "meta.json", {"status": "finished", "epochs_done": 0, "wall_time": 1.5})
        write_csv(directory / "metrics.csv", [{"epoch": 0, "train_loss": 1.0}])
    worker.join(timeout=60)
    assert results and results[0].skipped and results[0].status == "finished"


def test_reap_kills_the_workers_left_after_the_grace() -> None:
    import multiprocessing

    from theorylr.lab.runner import _reap

    context = multiprocessing.get_context("fork")
    stuck, done = context.Process(target=time.sleep, args=(60,)), context.Process(target=time.sleep, args=(0,))
    stuck.start()
    done.start()
    done.join()
    start = time.monotonic()
    _reap([done, stuck], grace=0.5)
    assert not stuck.is_alive() and time.monotonic() - start < 5
