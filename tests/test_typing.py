"""The types a user's checker sees: ordinary code type-checks, and common mistakes are caught (``mypy --strict``).

A review ran user code like the README's under ``mypy --strict``: a closure's loss came back as ``Tensor | None``,
a float closure (torch's own signature) was refused, ``named_parameters()`` was refused by the adaptive optimizers,
an ``init_weights`` sampler was refused, ``hvp`` of one tensor was a union, ``make_separable`` had no overload for a
``bool``, ``model[:-1]`` of a built model was not indexable; and a misspelt ``theorylr.LipschitzRL`` or
``PercentDelta(momentun=...)`` passed as ``Any``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import theorylr

api = pytest.importorskip("mypy.api")

USER_CODE = textwrap.dedent(
    """
    import torch
    from torch import Tensor, nn

    import theorylr
    from theorylr.data.synthetic import make_separable
    from theorylr.estimate import hvp, smoothness
    from theorylr.models import build_model, init_weights

    model = build_model("mlp", in_features=4, hidden=(8,), num_classes=3)
    head = model[:-1]
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))


    def closure() -> Tensor:
        return nn.functional.cross_entropy(model(x), y)


    def float_closure() -> float:
        return 0.0


    for opt in (theorylr.LARS(model.parameters()), theorylr.AdaMo(model.named_parameters())):
        loss: Tensor = opt.step(closure)
        value: float = opt.step(float_closure)
        nothing: None = opt.step()
    estimate = smoothness(
        model, nn.CrossEntropyLoss(), (x, y), sampler=lambda m, g: init_weights(m, "xavier_uniform", g)
    )
    flat: Tensor = hvp(model, nn.CrossEntropyLoss(), (x, y), torch.ones(3))
    data = make_separable(10, 2, return_hyperplane=bool(len(x)))
    theorylr.LipschitzRL  # MISTAKE
    theorylr.PercentDelta(model.parameters(), momentun=0.9)  # MISTAKE
    """
)


def test_user_code_type_checks_and_mistakes_are_caught(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    source = str(Path(theorylr.__file__).parent.parent)
    env_path = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = source
    try:
        out, err, _ = api.run(
            ["--strict", "--allow-untyped-calls", "--cache-dir", str(tmp_path / "cache"), str(tmp_path / "user.py")]
        )
    finally:
        if env_path is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = env_path
    errors = [line for line in out.splitlines() if ": error:" in line]
    mistakes = [i + 1 for i, line in enumerate(USER_CODE.splitlines()) if "# MISTAKE" in line]
    assert sorted(int(line.split(":")[1]) for line in errors) == mistakes, out + err
