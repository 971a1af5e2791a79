"""Claims as data: one record per claim of a paper, with what we measured and a verdict by a stated criterion.

A :class:`Claim` carries the claim in one line with its section, what the paper reported, what we measured on the
same (or the closest embedded) setting, the criterion, and the verdict. The numbers behind ``measured`` are kept in
``values`` and the files they were read from in ``sources``, so a claims table can be checked against the run
files. Verdicts are computed by the small pure functions below (:func:`verdict_all`, :func:`verdict_universal`,
:func:`verdict_ratio`), never typed by hand.

Verdicts:

* ``"holds"`` -- the criterion is met in every setting it was checked on;
* ``"partly"`` -- met in some settings only (or met by a weaker threshold the criterion names), for a claim about
  typical behaviour;
* ``"does not hold"`` -- met in none; or, for a claim stated for every case (a theorem, "never"), missed in one
  (:func:`verdict_universal`: a counterexample refutes it);
* ``"not run (...)"`` -- the experiment needs files (``--data-dir``) or the full form (not ``--quick``).

Example:
    >>> verdict_all([True, True]), verdict_all([True, False]), verdict_all([False])
    ('holds', 'partly', 'does not hold')
    >>> c = Claim("x-1", "lars", "§3", "a claim", "paper says", "we saw", "the test", verdict_all([True]))
    >>> Claim.from_dict(c.to_dict()) == c
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from theorylr.lab._files import decode_non_finite, encode_non_finite, read_json, write_json

__all__ = [
    "DOES_NOT_HOLD",
    "HOLDS",
    "NOT_RUN_DATA",
    "NOT_RUN_FULL",
    "PARTLY",
    "VERDICTS",
    "Claim",
    "PaperResult",
    "fmt",
    "not_run",
    "read_result",
    "verdict_all",
    "verdict_ratio",
    "verdict_universal",
    "write_result",
]

HOLDS = "holds"
PARTLY = "partly"
DOES_NOT_HOLD = "does not hold"
NOT_RUN_DATA = "not run (needs --data-dir)"
NOT_RUN_FULL = "not run (full form only)"
#: The verdicts a claim can have (``not run (...)`` may carry another reason, see :func:`not_run`).
VERDICTS = (HOLDS, PARTLY, DOES_NOT_HOLD, NOT_RUN_DATA, NOT_RUN_FULL)


def verdict_all(checks: Sequence[bool]) -> str:
    """``holds`` when every check passed, ``partly`` when some did, ``does not hold`` when none did.

    Each check is the criterion applied to one setting (one network depth, one data set, one learning rate).

    Raises:
        ValueError: when there are no checks (a claim with nothing measured has no verdict; use :func:`not_run`).

    Example:
        >>> verdict_all([True, False, True])
        'partly'
    """
    if not checks:
        raise ValueError("checks must be non-empty: a claim with nothing measured has no verdict")
    passed = sum(bool(c) for c in checks)
    if passed == len(checks):
        return HOLDS
    return PARTLY if passed else DOES_NOT_HOLD


def verdict_universal(checks: Sequence[bool]) -> str:
    """The verdict of a claim stated for every case ("for every k", "never diverges"): ``holds`` when every check
    passed, ``does not hold`` otherwise. One failing setting is a counterexample, not a partial success (which
    :func:`verdict_all` would call ``partly``).

    Example:
        >>> verdict_universal([True, True]), verdict_universal([True, False])
        ('holds', 'does not hold')
    """
    if not checks:
        raise ValueError("checks must be non-empty: a claim with nothing measured has no verdict")
    return HOLDS if all(bool(c) for c in checks) else DOES_NOT_HOLD


def verdict_ratio(value: float, holds_below: float, partly_below: float) -> str:
    """A verdict from one number: ``holds`` if ``value <= holds_below``, ``partly`` if ``value <= partly_below``.

    NaN gives ``does not hold`` (nothing measured cannot pass).

    Example:
        >>> verdict_ratio(1.2, 1.5, 3.0), verdict_ratio(2.0, 1.5, 3.0), verdict_ratio(7.0, 1.5, 3.0)
        ('holds', 'partly', 'does not hold')
    """
    if not holds_below <= partly_below:
        raise ValueError(f"holds_below must be <= partly_below (got {holds_below!r} > {partly_below!r})")
    if math.isnan(value):
        return DOES_NOT_HOLD
    if value <= holds_below:
        return HOLDS
    return PARTLY if value <= partly_below else DOES_NOT_HOLD


def not_run(reason: str) -> str:
    """The verdict of a claim that was not run: ``not run (reason)``.

    Example:
        >>> not_run("needs --data-dir") == NOT_RUN_DATA
        True
    """
    return f"not run ({reason})"


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a claims table: ``4`` significant digits, ``inf``/``-`` for infinite/missing values.

    Example:
        >>> fmt(0.000123456), fmt(float("inf")), fmt(None), fmt(37008.0)
        ('0.0001235', 'inf', '-', '3.701e+04')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


@dataclass
class Claim:
    """One claim of a paper and our check of it.

    Attributes:
        id: a short stable identifier (``lars-3.1-interval``).
        paper: the paper's key (``lars``, ``exact-adam``, ``lipschitz``).
        section: where the paper makes it (``§3.1, §3.3``, ``Table 1``).
        claim: the claim in one line.
        reported: what the paper reported (numbers, or the qualitative statement).
        measured: what we measured, in words and numbers (from ``values``).
        criterion: how the verdict is computed from the measured numbers.
        verdict: one of :data:`VERDICTS` (or another ``not run (...)`` reason).
        setting: our setting when it differs from the paper's (data set, sizes).
        values: the numbers behind ``measured`` (JSON-able). JSON has no inf or NaN: :meth:`to_dict` writes them as
            the strings ``"inf"``, ``"-inf"`` and ``"nan"``, and :meth:`from_dict` reads those back as floats.
        sources: the files (relative to the paper's results directory) the numbers were read from.
        figures: figure paths (relative to the paper's results directory).
    """

    id: str
    paper: str
    section: str
    claim: str
    reported: str
    measured: str
    criterion: str
    verdict: str
    setting: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.verdict in VERDICTS or self.verdict.startswith("not run (")):
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)} or 'not run (...)' (got {self.verdict!r})")

    @property
    def ran(self) -> bool:
        """Whether the claim was checked (its verdict is not ``not run (...)``)."""
        return not self.verdict.startswith("not run")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``claims.json`` (non-finite floats in ``values`` as strings, see :attr:`values`).

        Example:
            >>> c = Claim("x", "lars", "§3", "c", "r", "m", "k", HOLDS, values={"ratio": float("inf"), "n": [1.0]})
            >>> c.to_dict()["values"]
            {'ratio': 'inf', 'n': [1.0]}
            >>> Claim.from_dict(c.to_dict()).values["ratio"]
            inf
        """
        data = asdict(self)
        data["values"] = encode_non_finite(data["values"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        """The inverse of :meth:`to_dict`."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "values" in fields:
            fields["values"] = decode_non_finite(fields["values"])
        return cls(**fields)


@dataclass
class PaperResult:
    """What one target (one paper) produced: its claims, figures, extra tables and notes.

    Attributes:
        paper: the key (``lars``).
        title: the paper's title and authors.
        reference: the paper's citation (authors and title).
        scale: the scale's name (``quick``, ``full`` or a custom one).
        claims: the :class:`Claim` rows.
        figures: ``(path, caption)`` pairs, paths relative to the paper's results directory.
        tables: extra tables, ``{"title", "headers", "rows"}`` (e.g. the tuned scheduler settings).
        notes: departures from the paper and caveats, one line each.
        commands: the commands that reproduce the full form.
        wall_time: seconds this target took in the invocation that wrote it.
        provenance: what wrote it: the command line, the git commit (and whether it had uncommitted changes),
            theorylr/torch versions, device and data directory; empty for a result written before it was recorded.
    """

    paper: str
    title: str
    reference: str
    scale: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    wall_time: float = math.nan
    provenance: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many claims got each verdict.

        Example:
            >>> r = PaperResult("p", "t", "f", "quick", [Claim("a", "p", "s", "c", "r", "m", "k", HOLDS)])
            >>> r.counts()
            {'holds': 1}
        """
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``claims.json``."""
        data = asdict(self)
        data["claims"] = [c.to_dict() for c in self.claims]
        data["figures"] = [{"path": p, "caption": c} for p, c in self.figures]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaperResult:
        """The inverse of :meth:`to_dict`."""
        return cls(
            paper=str(data["paper"]),
            title=str(data["title"]),
            reference=str(data["reference"]),
            scale=str(data["scale"]),
            claims=[Claim.from_dict(c) for c in data.get("claims", [])],
            figures=[(str(f["path"]), str(f["caption"])) for f in data.get("figures", [])],
            tables=list(data.get("tables", [])),
            notes=[str(n) for n in data.get("notes", [])],
            commands=[str(c) for c in data.get("commands", [])],
            wall_time=float(data["wall_time"]) if data.get("wall_time") is not None else math.nan,
            provenance=dict(data.get("provenance") or {}),
        )


def write_result(directory: str | os.PathLike[str], result: PaperResult) -> Path:
    """Write ``result`` to ``directory/claims.json`` (atomically) and return the path.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> r = PaperResult("lars", "t", "ref", "quick", [Claim("a", "lars", "§3", "c", "r", "m", "k", HOLDS)])
        >>> write_result(d, r).name
        'claims.json'
        >>> read_result(d).claims[0].verdict
        'holds'
    """
    path = Path(directory) / "claims.json"
    write_json(path, result.to_dict())
    return path


def read_result(directory: str | os.PathLike[str]) -> PaperResult:
    """Read ``directory/claims.json`` written by :func:`write_result`."""
    return PaperResult.from_dict(read_json(Path(directory) / "claims.json"))
