"""The package surface: the public names exist and the core pays for torch alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

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


def test_distributions_carry_the_license_and_the_sdist_its_tests(tmp_path: Path) -> None:
    """The wheel and sdist had no LICENSE (MIT asks for the notice), and the sdist had six test files without the
    conftest, docs, examples and benchmarks they read."""
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs the git checkout")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    copy = tmp_path / "src"
    for name in filter(None, files):
        if (root / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, copy / name)
    build = "from setuptools import build_meta as b; print(b.build_sdist('dist')); print(b.build_wheel('dist'))"
    done = subprocess.run([sys.executable, "-c", build], cwd=copy, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (sdist_path,), (wheel_path,) = (copy / "dist").glob("*.tar.gz"), (copy / "dist").glob("*.whl")
    with tarfile.open(sdist_path) as sdist:
        top = sdist_path.name.removesuffix(".tar.gz")
        in_sdist = {m.name.removeprefix(top + "/") for m in sdist.getmembers()}
    for needed in ("LICENSE", "tests/conftest.py", "docs/suggest.md", "examples/lipschitz_lr.py", "benchmarks/run.py"):
        assert needed in in_sdist, needed
    with zipfile.ZipFile(wheel_path) as wheel:
        in_wheel = wheel.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in in_wheel)
    assert "theorylr/py.typed" in in_wheel and not any(n.startswith(("tests/", "benchmarks/")) for n in in_wheel)


def test_citations_name_the_papers_not_files_users_do_not_have() -> None:
    """``suggest``'s ref lines and REPRODUCTION.md cited ``papers/004_...txt``: files outside the package and repo."""
    root = Path(theorylr.__file__).parent
    for path in root.rglob("*.py"):
        assert "papers/" not in path.read_text(encoding="utf-8"), path
    from theorylr.lab.reproduce import exact_adam, lars, lipschitz

    assert "Gitman" in lars.REFERENCE and "Yedida" in lipschitz.REFERENCE and "Exact" in exact_adam.REFERENCE


def test_every_lazy_subpackage_is_typed_for_checkers() -> None:
    """``theorylr.distributed.mean_reduce`` typed as ``Any`` in a user's mypy run: ``__getattr__`` loads the
    subpackages, so ``__init__`` must also import each under ``TYPE_CHECKING``."""
    import ast

    tree = ast.parse(Path(theorylr.__file__).read_text(encoding="utf-8"))
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {a.asname or a.name for n in guarded.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert set(theorylr._SUBMODULES) <= typed
    assert set(theorylr.__all__) - {"__version__"} <= typed
