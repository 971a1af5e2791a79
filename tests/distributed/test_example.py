"""The README's torchrun example, ``examples/ddp_lars.py``, run as a user runs it: two gloo ranks on this machine,
LARS and the distributed LipschitzLR, one epoch each. It must exit 0 (torch 2.13's gloo aborted a rank at exit in
5 of 12 runs while the DDP model outlived the process group) and print what its docstring promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_lars.py"


def _torchrun(*args: str) -> str:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only, also on a host whose name does not resolve
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(EXAMPLE)]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_lars_example_runs_under_torchrun() -> None:
    out = _torchrun("--epochs", "1")
    assert "world 2 (gloo), global batch 64" in out
    line = re.search(
        r"epoch 0: train loss ([\d.]+), test accuracy ([\d.]+), .*median trust ratio .*replica spread "
        r"0\.0e\+00",
        out,
    )
    assert line is not None, out
    assert float(line.group(2)) > 0.5  # one epoch of LARS on digits learns something


def test_the_lipschitz_example_runs_under_torchrun() -> None:
    out = _torchrun("--epochs", "1", "--lipschitz", "--lr", "0.1")
    line = re.search(r"epoch 0: .* L ([\d.]+) \(global batch 64\), replica spread 0\.0e\+00", out)
    assert line is not None, out
    assert float(line.group(1)) > 0
