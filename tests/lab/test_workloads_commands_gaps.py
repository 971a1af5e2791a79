"""Gaps found by mutation testing the workload registry, the lab's loss wrappers, the environment record and the
``theorylr`` command line (``lab/workloads.py``, ``lab/losses.py``, ``lab/environment.py``, ``commands/*``,
``cli.py``): each test fails on a mutant that the rest of the suite let through."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import theorylr.lab
from theorylr.cli import main
from theorylr.lab import DEFAULT_WORKLOAD, WORKLOADS, Target, Workload, get_workload, register_workload
from theorylr.lab.losses import LOSSES, get_loss
from theorylr.models import multiclass_hinge_loss

# --------------------------------------------------------------------------------------------------- lab/losses.py


def _logits(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_each_loss_is_the_mean_of_its_formula() -> None:
    z = _logits(6, 3)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    expected_ce = -(z.log_softmax(dim=1)[torch.arange(6), labels]).mean()
    torch.testing.assert_close(get_loss("cross_entropy")(z, labels), expected_ce)
    torch.testing.assert_close(get_loss("multiclass_hinge")(z, labels), multiclass_hinge_loss(z, labels))

    logit = _logits(6, 1, seed=1)  # one output column against (m,) targets: the wrappers reshape
    y01 = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    p = torch.sigmoid(logit[:, 0])
    expected_bce = -(y01 * p.log() + (1 - y01) * (1 - p).log()).mean()
    torch.testing.assert_close(get_loss("bce")(logit, y01), expected_bce)

    values = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, -2.0], dtype=torch.float64)
    expected_ls = 0.5 * ((logit[:, 0] - values) ** 2).mean()
    torch.testing.assert_close(get_loss("least_squares")(logit, values), expected_ls)

    margins = torch.tensor([[2.0], [0.5], [-0.5], [1.0], [-3.0], [0.0]], dtype=torch.float64)
    signs = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    # max(0, 1 - y f): 0 (margin 2 > 1), 0.5, 1.5, 2, 0 (y f = 3), 1
    assert float(get_loss("binary_hinge")(margins, signs)) == pytest.approx(5.0 / 6.0, rel=1e-15)


def test_correct_counts_predictions_at_the_decision_boundaries() -> None:
    # 4 x 3 outputs: an argmax over the wrong axis would compare 3 column winners with 4 labels
    z = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    for name in ("cross_entropy", "multiclass_hinge"):
        count = get_loss(name).correct(z, torch.tensor([1, 0, 0, 2]))
        assert count.ndim == 0 and int(count) == 2
    bce = get_loss("bce")
    # a logit of exactly 0 predicts class 0; 0.3 predicts class 1 (the logit's sign, not a 0.5 threshold)
    logits = torch.tensor([[0.0], [0.3], [-0.2], [4.0]])
    assert int(bce.correct(logits, bce.prepare_targets(torch.tensor([0, 1, 0, 0]), torch.float32))) == 3
    hinge = get_loss("binary_hinge")
    signs = hinge.prepare_targets(torch.tensor([-1, 1, -1, -1]), torch.float32)
    assert int(hinge.correct(logits, signs)) == 3  # 0 -> -1 right, 0.3 -> +1 right, -0.2 -> -1 right, 4 wrong


def test_prepare_targets_gives_each_kind_its_form() -> None:
    cls = get_loss("cross_entropy").prepare_targets(torch.tensor([0.0, 2.0]), torch.float64)
    assert cls.dtype == torch.int64 and cls.tolist() == [0, 2]
    bce = get_loss("bce")
    from_bool = bce.prepare_targets(torch.tensor([True, False]), torch.float64)
    assert from_bool.dtype == torch.float64 and from_bool.tolist() == [1.0, 0.0]
    from_int = bce.prepare_targets(torch.tensor([1, 0]), torch.float64)
    assert from_int.dtype == torch.float64 and from_int.tolist() == [1.0, 0.0]
    hinge = get_loss("binary_hinge")
    for labels in ([0, 1, 1], [-1, 1, 1]):  # {0, 1} or {-1, +1}: 0 is the negative class
        signs = hinge.prepare_targets(torch.tensor(labels), torch.float64)
        assert signs.dtype == torch.float64 and signs.tolist() == [-1.0, 1.0, 1.0]
    real = get_loss("least_squares").prepare_targets(torch.tensor([1, 2]), torch.float64)
    assert real.dtype == torch.float64 and real.tolist() == [1.0, 2.0]


def test_outputs_per_loss_kind() -> None:
    for name in ("cross_entropy", "multiclass_hinge"):
        assert get_loss(name).outputs(2) == 2 and get_loss(name).outputs(7) == 7
        for bad in (None, 1):
            with pytest.raises(ValueError, match="needs a classification dataset"):
                get_loss(name).outputs(bad)
    for name in ("bce", "binary_hinge"):
        assert get_loss(name).outputs(2) == 1 and get_loss(name).outputs(None) == 1
        for bad in (1, 3):
            with pytest.raises(ValueError, match="is binary"):
                get_loss(name).outputs(bad)
    assert get_loss("least_squares").outputs(None) == 1
    assert get_loss("least_squares").outputs(5) == 1  # a regression loss never refuses the class count


def test_the_loss_table_of_the_module_docstring() -> None:
    """Which losses are classification losses and which closed form LipschitzLR uses (the docstring's table)."""
    table = {
        "cross_entropy": ("class", True, "softmax"),
        "bce": ("binary", True, "bce"),
        "least_squares": ("real", False, "least_squares"),
        "multiclass_hinge": ("class", True, None),
        "binary_hinge": ("sign", True, None),
    }
    assert {n: (s.target_kind, s.classification, s.lipschitz) for n, s in LOSSES.items()} == table


# ------------------------------------------------------------------------------------------------ lab/workloads.py


def test_a_target_is_reached_at_its_value_and_never_by_a_non_finite_one() -> None:
    accuracy, loss = Target("test_accuracy", 0.9), Target("train_loss", 0.01)
    assert accuracy.reached(0.9) and not accuracy.reached(math.nextafter(0.9, 0))
    assert loss.reached(0.01) and not loss.reached(math.nextafter(0.01, 1))
    for value in (None, float("nan"), float("inf"), float("-inf")):
        assert not accuracy.reached(value) and not loss.reached(value)
    assert (accuracy.describe(), loss.describe()) == ("test_accuracy >= 0.9", "train_loss <= 0.01")
    directions = {m: Target(m, 0.5).higher_is_better for m in ("train_loss", "test_loss", "grad_norm")}
    directions.update({m: Target(m, 0.5).higher_is_better for m in ("test_accuracy", "train_accuracy")})
    assert directions == {
        "train_loss": False,
        "test_loss": False,
        "grad_norm": False,
        "test_accuracy": True,
        "train_accuracy": True,
    }
    for bad in (float("nan"), "0.9"):
        with pytest.raises(ValueError, match="target value"):
            Target("test_accuracy", bad)  # type: ignore[arg-type]


_BASE: dict[str, object] = {
    "name": "w",
    "description": "d",
    "dataset": "iris",
    "model": "linear",
    "loss": "cross_entropy",
}


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"name": ""}, "workload name"),
        ({"name": "a/b"}, "workload name"),
        ({"name": "a\\b"}, "workload name"),
        ({"name": "a b"}, "workload name"),
        ({"name": "a,b"}, "workload name"),
        ({"name": "a@b"}, "workload name"),
        ({"epochs": 0}, "epochs"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"grad_norm_samples": 0}, "grad_norm_samples"),
        ({"tuning_metric": "speed"}, "tuning_metric"),
        ({"dtype": "float16"}, "dtype"),
        ({"dataset_options": {"x": object()}}, "dataset_options"),
        ({"model_options": {"x": object()}}, "model_options"),
        ({"rule_options": {"adam": {"x": object()}}}, "rule_options"),
    ],
)
def test_more_workload_fields_are_checked_when_the_workload_is_made(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Workload(**{**_BASE, **fields})  # type: ignore[arg-type]


def test_the_smallest_allowed_sizes_are_accepted() -> None:
    w = Workload(**{**_BASE, "batch_size": 1, "epochs": 1, "eval_batch_size": 1, "grad_norm_samples": 1})  # type: ignore[arg-type]
    assert (w.batch_size, w.epochs, w.eval_batch_size, w.grad_norm_samples) == (1, 1, 1, 1)


def test_load_data_passes_the_data_dir_and_the_workloads_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    import theorylr.data

    seen: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(theorylr.data, "load_dataset", lambda name, **kw: seen.append((name, kw)) or "data")
    w = Workload(**{**_BASE, "dataset_options": {"scaling": "unit"}, "needs_data_dir": True, "dtype": "float64"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the iris files"):
        w.load_data()
    assert w.load_data("/data") == "data"
    assert seen == [("iris", {"scaling": "unit", "dtype": torch.float64, "data_dir": "/data"})]
    seen.clear()
    Workload(**_BASE).load_data()  # type: ignore[arg-type]
    assert seen == [("iris", {"dtype": torch.float32})]  # built-in data: no data_dir key at all


def test_model_kwargs_fill_only_what_the_options_leave_out() -> None:
    images = SimpleNamespace(x_train=torch.zeros(2, 3, 6, 8), num_classes=4)
    lenet = Workload(**{**_BASE, "model": "lenet5"})  # type: ignore[arg-type]
    assert lenet.model_kwargs(images) == {"in_channels": 3, "image_size": 8, "num_classes": 4}
    resnet = Workload(**{**_BASE, "model": "resnet20"})  # type: ignore[arg-type]
    assert resnet.model_kwargs(images) == {"in_channels": 3, "num_classes": 4}  # no image side: global pooling
    flat = SimpleNamespace(x_train=torch.zeros(2, 5, 7), num_classes=4)
    assert lenet.model_kwargs(flat) == {"num_classes": 4}  # not a C x H x W sample: nothing to infer
    given = Workload(
        **{**_BASE, "model": "lenet5", "model_options": {"in_channels": 1, "image_size": 9, "num_classes": 2}}
    )  # type: ignore[arg-type]
    assert given.model_kwargs(images) == {"in_channels": 1, "image_size": 9, "num_classes": 2}
    linear = Workload(**{**_BASE, "model_options": {"in_features": 5, "out_features": 6}})  # type: ignore[arg-type]
    assert linear.model_kwargs(images) == {"in_features": 5, "out_features": 6}
    mlp = Workload(**{**_BASE, "model": "mlp", "model_options": {"hidden": (4,)}})  # type: ignore[arg-type]
    assert mlp.model_kwargs(images) == {"hidden": (4,), "in_features": 3 * 6 * 8, "out_features": 4}


def test_build_model_applies_the_init_with_the_given_generator_in_the_workloads_dtype() -> None:
    data = SimpleNamespace(x_train=torch.zeros(2, 4), num_classes=3)
    w = Workload(**{**_BASE, "init": "kaiming_uniform", "dtype": "float64"})  # type: ignore[arg-type]

    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(123)  # the same global state each time: only the generator may differ
        model = w.build_model(data, torch.Generator().manual_seed(seed))
        return [p.detach().clone() for p in model.parameters()]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(p.dtype == torch.float64 for p in first)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])
    torch.manual_seed(123)
    default = [p.detach() for p in Workload(**_BASE).build_model(data).parameters()]  # type: ignore[arg-type]
    assert default[0].dtype == torch.float32 and not torch.equal(default[0].double(), first[0])


def test_options_for_a_fixed_lr_merges_the_base_rules_options_with_its_own() -> None:
    w = Workload(
        **_BASE,  # type: ignore[arg-type]
        rule_options={"lars": {"lr": 0.05, "eta": 0.01, "eps": 1e-9}, " lars @ 1e-1 ": {"eta": 0.02}},
    )
    assert w.options_for("lars") == {"lr": 0.05, "eta": 0.01, "eps": 1e-9}
    assert w.options_for("lars@0.1") == {"eta": 0.02, "eps": 1e-9}  # the key however written; base's lr dropped
    assert w.options_for("lars@0.2") == {"eta": 0.01, "eps": 1e-9}
    assert w.options_for("adam") == {}


def test_options_for_a_fixed_lr_key_apply_to_that_lr_only() -> None:
    from theorylr.lab import resolve_rule

    w = Workload(
        **_BASE,  # type: ignore[arg-type]
        rule_options={"sgd@0.0012345678": {"momentum": 0.9}, "adam@1.2345678e-3": {"eps": 1e-6}},
    )
    assert w.options_for(resolve_rule("sgd@0.0012345678").name) == {"momentum": 0.9}
    assert w.options_for(resolve_rule("adam@0.0012345678").name) == {"eps": 1e-6}  # the same lr: got {}
    assert w.options_for(resolve_rule("sgd@0.00123457").name) == {}  # another lr: got {"momentum": 0.9}


def test_to_dict_is_json_with_the_target_as_a_mapping() -> None:
    record = get_workload("digits-mlp").to_dict()
    assert record["target"] == {"metric": "test_accuracy", "value": 0.95}
    assert json.loads(json.dumps(record))["model_options"] == {"hidden": [128, 128]}


def test_register_and_get_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(theorylr.lab.workloads, "WORKLOADS", dict(WORKLOADS))
    registry = theorylr.lab.workloads.WORKLOADS
    with pytest.raises(ValueError, match="must be a Workload"):
        register_workload(dict(_BASE))  # type: ignore[arg-type]
    first = register_workload(Workload(**_BASE))  # type: ignore[arg-type]
    second = Workload(**{**_BASE, "epochs": 3})  # type: ignore[arg-type]
    assert register_workload(second, replace=True) is second and registry["w"] is second is not first
    assert get_workload("w") is second
    with pytest.raises(ValueError, match=r"workload must be one of .*digits-mlp.* \(got 'digits-mpl'"):
        get_workload("digits-mpl")
    assert DEFAULT_WORKLOAD == "digits-mlp"


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_a_registered_workloads_description_states_its_settings(name: str) -> None:
    """``theorylr list`` shows the descriptions: the batch, the data and the layer sizes they state are the run's."""
    import re

    w = WORKLOADS[name]
    text = w.description
    assert ("full batch" in text) == (w.batch_size is None)
    if w.batch_size is not None:
        assert f"batch {w.batch_size}" in text
    assert ("needs --data-dir" in text) == w.needs_data_dir
    sizes = re.search(r"MLP ([0-9]+(?:-[0-9]+)+)", text)
    if sizes is not None:
        layers = [int(s) for s in sizes.group(1).split("-")]
        assert w.model == "mlp" and tuple(layers[1:-1]) == tuple(w.model_options["hidden"])
    if "BCE" in text or "logistic regression with BCE" in text:
        assert w.loss == "bce"
    if "least squares" in text:
        assert w.loss == "least_squares"


# --------------------------------------------------------------------------------------------- lab/environment.py


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True
    )


def test_git_dirty_counts_tracked_edits_to_the_package_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dirty means a tracked file of the package changed: not a new untracked file, not an edit elsewhere."""
    import shutil

    from theorylr.lab import environment

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    lab = tmp_path / "theorylr" / "lab"
    lab.mkdir(parents=True)
    for path in (tmp_path / "other.py", tmp_path / "theorylr" / "__init__.py", lab / "__init__.py", lab / "env.py"):
        path.write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    monkeypatch.setattr(environment, "__file__", str(lab / "env.py"))

    def state() -> tuple[str | None, bool | None]:
        environment._in_checkout.cache_clear()
        environment.git_commit.cache_clear()
        environment.git_dirty.cache_clear()
        return environment.git_commit(), environment.git_dirty()

    try:
        assert state()[0] is None  # tracked, but no commit yet ('git rev-parse HEAD' fails)
        _git(tmp_path, "commit", "-q", "-m", "c")
        commit, dirty = state()
        assert commit is not None and len(commit) == 40 and dirty is False
        (tmp_path / "theorylr" / "new.py").write_text("untracked\n")
        (tmp_path / "other.py").write_text("x = 2\n")
        assert state() == (commit, False)
        (tmp_path / "theorylr" / "__init__.py").write_text("x = 2\n")
        assert state() == (commit, True)
    finally:
        monkeypatch.undo()
        state()


def test_the_cpu_name_is_the_model_name_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from theorylr.lab import environment

    cpuinfo = "processor\t: 0\nvendor_id\t: Acme\nmodel\t\t: 85\nmodel name\t: Acme CPU @ 2.0GHz\nflags\t: a\n"
    monkeypatch.setattr(environment, "open", lambda *a, **k: io.StringIO(cpuinfo), raising=False)
    assert environment._cpu_name() == "Acme CPU @ 2.0GHz"

    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/proc/cpuinfo")

    monkeypatch.setattr(environment, "open", no_proc, raising=False)
    monkeypatch.setattr(environment.platform, "processor", lambda: "arm")
    monkeypatch.setattr(environment.platform, "machine", lambda: "aarch64")
    assert environment._cpu_name() == "arm"
    monkeypatch.setattr(environment.platform, "processor", lambda: "")
    assert environment._cpu_name() == "aarch64"


def test_environment_threads_and_a_git_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    from theorylr.lab import environment

    monkeypatch.setattr(environment.torch, "get_num_threads", lambda: 3)
    assert environment.environment("cpu")["threads"] == 3

    def hang(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("git", 5)

    monkeypatch.setattr(environment.subprocess, "run", hang)
    assert environment._git("status") is None  # a git that hangs is "no git", not an error


def test_each_environment_record_is_a_fresh_dict() -> None:
    from theorylr.lab.environment import environment

    first = environment("cpu")
    first["device"] = "changed by a caller"
    first["extra"] = 1
    again = environment("cpu")
    assert again["device"] == "cpu" and "extra" not in again


def test_environment_records_the_device_and_threads_of_the_call() -> None:
    from theorylr.lab.environment import environment, now

    info = environment(torch.device("cpu"))
    assert info["device"] == "cpu" and isinstance(info["device"], str)
    assert info["threads"] == torch.get_num_threads()
    assert environment(torch.device("meta"))["device"] == "meta"
    assert info["theorylr"] == theorylr.__version__ and info["torch"] == torch.__version__
    assert {"python", "platform", "git_commit", "git_dirty", "cpu", "cpu_count", "gpu"} <= set(info)
    assert info["cpu_count"] is not None and info["cpu"]
    assert now().endswith("+00:00")


# ------------------------------------------------------------------------------------------- commands/_common.py


def test_command_errors_turn_expected_failures_into_one_line_and_a_code(capsys: pytest.CaptureFixture[str]) -> None:
    from theorylr.commands._common import CommandExitError, command_errors

    assert CommandExitError(7).code == 7
    cases = [
        (ValueError("--x 1: bad"), 2, "theorylr cmd: error: --x 1: bad"),
        (
            FileNotFoundError(2, "No such file or directory", "/a"),
            2,
            "theorylr cmd: error: /a: No such file or directory",
        ),
        (OSError(18, "Invalid cross-device link", "/a", None, "/b"), 2, "error: /a -> /b: Invalid cross-device link"),
        (OSError("disk on fire"), 2, "theorylr cmd: error: disk on fire"),
        (OSError(5, "Input/output error"), 2, "theorylr cmd: error: [Errno 5] Input/output error"),  # no path
        (KeyboardInterrupt(), 130, "interrupted: run the same command again to resume (results in runs/x)"),
    ]
    for exc, code, text in cases:
        with pytest.raises(CommandExitError) as stop, command_errors("cmd", resume_dir="runs/x"):
            raise exc
        assert stop.value.code == code
        err = capsys.readouterr().err
        assert text in err and err.strip().count("\n") == 0
    from theorylr.commands._common import os_error_text

    odd = OSError("no errno")  # a path but no strerror: str(exc), not "PATH: None"
    odd.filename = "/p"
    assert os_error_text(odd) == str(odd)
    with pytest.raises(KeyboardInterrupt), command_errors("cmd"):  # nothing to resume: Ctrl-C propagates
        raise KeyboardInterrupt
    with pytest.raises(BrokenPipeError), command_errors("cmd", resume_dir="runs/x"):  # cli.main stops with 141
        raise BrokenPipeError(32, "Broken pipe")
    assert capsys.readouterr().err == ""


def test_output_checks_create_nothing_and_refuse_what_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from theorylr.commands import _common
    from theorylr.commands._common import check_output_dir, check_output_file

    afile = tmp_path / "afile"
    afile.write_text("x")
    check_output_dir("--out", tmp_path)
    check_output_dir("--out", tmp_path / "a" / "b")
    check_output_file("--plot", tmp_path / "a" / "b.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_output_dir("--out", afile)
    with pytest.raises(ValueError, match=f"--plot {tmp_path}: is a directory"):
        check_output_file("--plot", tmp_path)
    with pytest.raises(ValueError, match=f"{afile} is not a directory"):
        check_output_file("--plot", afile / "x.png")
    check_output_file("--plot", afile)  # an existing file is overwritten
    # a directory that can be written but not entered (no search permission) is refused too
    monkeypatch.setattr(_common.os, "access", lambda path, mode: not mode & os.X_OK)
    for check, flag in ((check_output_dir, "--out"), (check_output_file, "--plot")):
        with pytest.raises(ValueError, match=f"{flag} .*: {tmp_path} is not writable"):
            check(flag, tmp_path / "new" / "x")
    # an existing output directory is checked itself, not its parent
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(_common.os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(ValueError, match=f"--out {locked}: {locked} is not writable"):
        check_output_dir("--out", locked)
    check_output_dir("--out", tmp_path / "other")


def test_silence_stdout_points_the_stdout_descriptor_at_the_null_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from theorylr.commands._common import silence_stdout

    read_end, write_end = os.pipe()
    try:
        monkeypatch.setattr(sys, "stdout", SimpleNamespace(fileno=lambda: write_end))
        silence_stdout()
        assert os.write(write_end, b"lost") == 4  # the descriptor is the null device now
        assert os.read(read_end, 10) == b""  # the pipe's only writer is gone: end of file
    finally:
        os.close(read_end)
        os.close(write_end)
    monkeypatch.setattr(sys, "stdout", SimpleNamespace())  # no fileno: nothing to do, nothing raised
    silence_stdout()


# ------------------------------------------------------------------------------------------------------- cli.py


def test_main_without_a_command_shows_the_usage_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2 and "the following arguments are required: COMMAND" in capsys.readouterr().err
    assert main(["--", "list"]) == 2  # parses, but a command must come first: the help, and 2
    assert capsys.readouterr().out.startswith("usage: theorylr")
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"theorylr {theorylr.__version__}"
    with pytest.raises(SystemExit) as stop:
        main(["list", "bogus"])
    assert stop.value.code == 2 and "usage: theorylr list" in capsys.readouterr().err


def test_main_passes_on_the_commands_code_and_restores_the_warning_format(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from theorylr import cli
    from theorylr.commands import _common, list_

    seen: list[object] = []
    outcome: list[object] = []

    def fake_run(args: object) -> object:
        seen.append((args.cli_args, warnings.formatwarning))  # type: ignore[attr-defined]
        result = outcome.pop()
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(list_, "run", fake_run)
    silenced: list[bool] = []
    monkeypatch.setattr(_common, "silence_stdout", lambda: silenced.append(True))
    before = warnings.formatwarning
    for result, code in ((None, 0), (3, 3), (_common.CommandExitError(7), 7), (BrokenPipeError(), 141)):
        outcome.append(result)
        assert main(["list", "rules"]) == code
        assert warnings.formatwarning is before
    assert silenced == [True]  # only for the closed stdout
    assert all(entry == (["list", "rules"], cli.format_warning) for entry in seen)
    assert cli.format_warning("m", RuntimeWarning, "f.py", 3) == "theorylr: RuntimeWarning: m\n"
    outcome.append(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        main(["list"])
    assert warnings.formatwarning is before


# ------------------------------------------------------------------------------------------------------ list_.py


def test_the_listing_marks_defaults_data_and_packages_and_orders_rules_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from theorylr.commands.list_ import format_listing
    from theorylr.lab import DEFAULT_RULES, RULES
    from theorylr.lab.rules import Rule

    text = format_listing()
    workloads, rules = text.split("\n\n")
    assert workloads.startswith("Workloads") and rules.startswith("Rules")
    lines = {line[3:].split()[0]: line for line in text.splitlines() if line.startswith(("   ", " * "))}
    for name, w in WORKLOADS.items():
        assert lines[name].startswith(" * " if name == DEFAULT_WORKLOAD else "   ")
        assert lines[name].index(w.description) == 5 + max(map(len, WORKLOADS))  # one column
        assert lines[name].endswith(" [data]") == w.needs_data_dir
    names = [line[3:].split()[0] for line in rules.splitlines()[1:]]
    order = ["theory", "lr-free", "tuned", "baseline"]
    assert [RULES[n].kind for n in names] == sorted((RULES[n].kind for n in names), key=order.index)
    assert sorted(names) == sorted(RULES)
    for name in names:
        assert lines[name].startswith(" * " if name in DEFAULT_RULES else "   ")
    assert lines["dog"].endswith(" [dog-optimizer]") and lines["adam"].endswith(RULES["adam"].description)
    widths = {lines[n].index(RULES[n].kind) for n in names}
    assert len(widths) == 1  # the kind column is aligned
    monkeypatch.setattr(Rule, "available", lambda self: False)
    assert "[prodigyopt: not installed]" in format_listing("rules", "lr-free")
    only = format_listing("rules", "tuned")
    listed = [line[3:].split()[0] for line in only.splitlines()[1:]]
    assert listed and all(RULES[n].kind == "tuned" for n in listed)
    assert not format_listing("workloads").rstrip().endswith(":") and "Rules" not in format_listing("workloads")


# ---------------------------------------------------------------------------- commands/compare, report, demo, reproduce


def _compare_result(counts: dict[str, int], skipped: list[tuple[str, str]] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        workload="iris-softmax",
        results=[None] * sum(counts.values()),
        out="OUT",
        skipped_rules=skipped or [],
        counts=lambda: dict(counts),
    )


def _fake(monkeypatch: pytest.MonkeyPatch, module: object, name: str, result: object) -> list[tuple]:
    calls: list[tuple] = []

    def fake(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(module, name, fake)
    return calls


def test_compare_passes_its_arguments_and_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 2}))
    out = str(tmp_path / "runs")
    assert main(["compare", "--out", out]) == 0
    assert calls[-1] == (
        ("digits-mlp", None),
        {
            "out": out,
            "seeds": "1",
            "epochs": None,
            "trials": 5,
            "jobs": 1,
            "data_dir": None,
            "device": "cpu",
            "threads": None,
            "verbose": True,
        },
    )
    argv = ["compare", "--workload", "cifar10-vgg9", "--rules", "adam,lars", "--seeds", "0,5", "--epochs", "3"]
    argv += ["--trials", "2", "--jobs", "3", "--data-dir", str(tmp_path), "--device", "auto", "--threads", "4"]
    assert main([*argv, "--out", out, "--quiet"]) == 0
    assert calls[-1] == (
        ("cifar10-vgg9", "adam,lars"),
        {
            "out": out,
            "seeds": "0,5",
            "epochs": 3,
            "trials": 2,
            "jobs": 3,
            "data_dir": str(tmp_path),
            "device": "auto",
            "threads": 4,
            "verbose": False,
        },
    )
    assert "note" not in capsys.readouterr().err  # a workload that needs --data-dir gets no note


def test_compare_summary_exit_codes_and_skipped_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--workload", "iris-softmax", "--out", str(tmp_path)]
    skipped = [("prodigy", "not installed")]
    _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 2, "diverged": 1}, skipped))
    assert main(argv) == 0  # a diverged run is a result, not a failure
    out = capsys.readouterr().out
    assert out == "iris-softmax: 3 runs (1 diverged, 2 finished) in OUT; 1 rules skipped\n"
    assert main([*argv, "--quiet"]) == 0  # printed once, at the end, when the runs were not listed
    assert capsys.readouterr().out.endswith("; 1 rules skipped\n  skipped prodigy: not installed\n")
    _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 1, "failed": 1}))
    assert main(argv) == 1
    assert capsys.readouterr().out == "iris-softmax: 2 runs (1 failed, 1 finished) in OUT\n"

    from theorylr.lab.runner import WorkerDiedError

    _fake(monkeypatch, theorylr.lab, "compare", KeyboardInterrupt())
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith(f"(results in {tmp_path})\n")
    calls = _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 1}))
    assert main(["compare", "--workload", "", "--out", str(tmp_path)]) == 2 and calls == []  # "" is no default
    assert capsys.readouterr().err.startswith("theorylr compare: error: workload must be one of")

    _fake(monkeypatch, theorylr.lab, "compare", WorkerDiedError("a worker process died"))
    assert main(argv) == 1
    assert capsys.readouterr().err == f"theorylr compare: error: a worker process died (results in {tmp_path})\n"


def test_compare_report_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--workload", "iris-softmax", "--out", str(tmp_path)]
    _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 1}))
    reports = _fake(monkeypatch, theorylr.lab, "report", SimpleNamespace(markdown="R.md", html="R.html"))
    assert main(argv) == 0 and reports == []  # no --report: no report
    assert main([*argv, "--report"]) == 0 and reports[-1] == ((str(tmp_path),), {})
    assert capsys.readouterr().out.endswith("report: R.md and R.html\n")
    _fake(monkeypatch, theorylr.lab, "report", PermissionError(13, "Permission denied", "/r/report.md"))
    assert main([*argv, "--report"]) == 2
    assert capsys.readouterr().err == "theorylr compare: error: writing the report: /r/report.md: Permission denied\n"
    _fake(monkeypatch, theorylr.lab, "report", ValueError("mixed settings"))
    assert main([*argv, "--report"]) == 2
    assert capsys.readouterr().err == "theorylr compare: error: the report: mixed settings\n"


def test_report_command_passes_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    md = tmp_path / "rep" / "report.md"
    figures = [tmp_path / "a.png", tmp_path / "b.png"]
    calls = _fake(monkeypatch, theorylr.lab, "report", SimpleNamespace(markdown=md, html="R.html", figures=figures))
    assert main(["report", "runs"]) == 0
    assert calls[-1] == (("runs",), {"out_dir": None, "title": "theorylr lab report", "figures": True})
    assert capsys.readouterr().out == (
        f"report: {md}\n        R.html\nfigures: 2 PNG files under {tmp_path / 'rep' / 'figures'}\n"
    )
    calls = _fake(monkeypatch, theorylr.lab, "report", SimpleNamespace(markdown=md, html="R.html", figures=[]))
    out = str(tmp_path / "rep")
    assert main(["report", "runs", "--out", out, "--title", "T", "--no-figures"]) == 0
    assert calls[-1] == (("runs",), {"out_dir": out, "title": "T", "figures": False})
    assert "figures" not in capsys.readouterr().out


def test_demo_runs_the_default_comparison_report_and_theory_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    import theorylr.lab.lars_theory_demo as theory_module

    compares = _fake(monkeypatch, theorylr.lab, "compare", _compare_result({"finished": 3, "diverged": 1}))
    _fake(monkeypatch, theorylr.lab, "report", SimpleNamespace(markdown="R.md", html="R.html"))
    theories = _fake(monkeypatch, theory_module, "run_lars_theory_demo", {"2d": "b.png", "1d": "a.png"})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    args, kwargs = compares[-1]
    assert args == ("digits-mlp", None)
    assert kwargs == {"out": out, "seeds": "2", "epochs": None, "trials": 4, "jobs": min(2, os.cpu_count() or 1)}
    assert theories[-1] == ((out / "lars_theory",), {})
    assert capsys.readouterr().out == (
        "runs: 4 (1 diverged, 3 finished)\nreport: R.md  (HTML: R.html)\nLARS theory 1d: a.png\nLARS theory 2d: b.png\n"
    )
    assert main(["demo", "--out", str(out), "--seeds", "0,3", "--epochs", "2", "--trials", "1", "--jobs", "1"]) == 0
    assert compares[-1][1] == {"out": out, "seeds": "0,3", "epochs": 2, "trials": 1, "jobs": 1}
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["demo", "--out=~/d"]) == 0
    assert compares[-1][1]["out"] == tmp_path / "home" / "d"


def test_reproduce_command_passes_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import theorylr.lab.reproduce as reproduce_module

    paper = SimpleNamespace(
        paper="lars", claims=[1, 2, 3], counts=lambda: {"confirmed": 2, "refuted": 1}, wall_time=2.5
    )
    result = SimpleNamespace(results=[paper], markdown="P.md", html="P.html", wall_time=3.25)
    calls = _fake(monkeypatch, reproduce_module, "reproduce", result)
    out = str(tmp_path / "r")
    assert main(["reproduce", "all", "--out", out]) == 0
    assert calls[-1] == (
        ("all", out),
        {
            "scale": "full",
            "data_dir": None,
            "device": "cpu",
            "jobs": 1,
            "verbose": True,
            "page_out": None,
            "figures_subdir": None,
            "command": f"theorylr reproduce all --out {out}",
        },
    )
    assert capsys.readouterr().out == (
        "lars: 3 claims (2 confirmed, 1 refuted) in 2.5 s\npage: P.md\n      P.html\nwall time: 3.2 s\n"
    )
    page = str(tmp_path / "page")
    argv = ["reproduce", "lipschitz", "--quick", "--out", out, "--data-dir", str(tmp_path), "--device", "auto"]
    argv += ["--jobs", "2", "--page-out", page, "--figures-subdir", "figs", "--quiet"]
    assert main(argv) == 0
    assert calls[-1][1] == {
        "scale": "quick",
        "data_dir": str(tmp_path),
        "device": "auto",
        "jobs": 2,
        "verbose": False,
        "page_out": page,
        "figures_subdir": "figs",
        "command": "theorylr " + " ".join(argv[:]),
    }
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["reproduce", "all", "--out", out, "--data-dir", str(afile)]) == 2  # a file is no data folder
    assert f"--data-dir {afile}: not a directory" in capsys.readouterr().err
    _fake(monkeypatch, reproduce_module, "reproduce", KeyboardInterrupt())
    assert main(["reproduce", "all", "--out", out]) == 130
    assert f"(results in {out})" in capsys.readouterr().err
