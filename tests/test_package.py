"""The package surface: the public names exist and the core pays for torch alone."""

from __future__ import annotations

import subprocess
import sys

import theorylr


def test_public_names_resolve() -> None:
    for name in theorylr.__all__:
        assert getattr(theorylr, name) is not None, name
        if name != "__version__":
            assert getattr(theorylr, name).__doc__, f"{name} has no docstring"


def test_core_import_does_not_load_the_lab_or_plotting() -> None:
    code = (
        "import sys, theorylr\n"
        "theorylr.LARS, theorylr.LipschitzLR, theorylr.exact_step_adam\n"
        "names = ('theorylr.lab', 'matplotlib', 'sklearn', 'prodigyopt', 'schedulefree')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "theorylr.suggest\n"
        "assert 'theorylr.lab' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subpackages_resolve_after_import_theorylr() -> None:
    code = (
        "import sys, theorylr\n"
        "assert 'theorylr.distributed' not in sys.modules\n"
        "assert callable(theorylr.distributed.mean_reduce) and callable(theorylr.theory.lars.invariant_interval)\n"
        "assert 'distributed' in dir(theorylr)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_estimators_run_without_tqdm_when_no_bar_is_shown() -> None:
    code = (
        "import sys\n"
        "sys.modules['tqdm'] = None  # as if tqdm were not installed\n"
        "import torch, theorylr\n"
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))\n"
        "data = (torch.randn(8, 3), torch.randint(0, 2, (8,)))\n"
        "opt, info = theorylr.exact_step_adam(model, nn.CrossEntropyLoss(), data, 10, num_samples=2)\n"
        "assert info.alpha > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_and_version_do_not_need_torch() -> None:
    code = (
        "import sys\n"
        "from theorylr.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert theorylr.__version__ in out.stdout


def test_cli_rejects_an_unknown_command() -> None:
    out = subprocess.run([sys.executable, "-m", "theorylr.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr and "compare" in out.stderr
