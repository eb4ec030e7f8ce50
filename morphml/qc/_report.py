"""What a QC run found: one :class:`QCFlag` per scan and rule, summarised by :class:`QCReport`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QCFlag", "QCReport"]


@dataclass(frozen=True)
class QCFlag:
    """One rule that a scan failed (one row of the ``qc_flags`` table).

    Attributes
    ----------
    scan_key : str
        The scan's pseudonym (never an original id).
    flag : str
        The rule's stable name (see :data:`morphml.qc.FLAGS`).
    reason : str
        What was found and which threshold it crossed.
    value : float or None
        The number the rule tested (an Euler number, a robust z, a thickness, a count...).
    """

    scan_key: str
    flag: str
    reason: str
    value: float | None


@dataclass(frozen=True)
class QCReport:
    """The flags one :func:`morphml.qc.run_qc` call stored, and what it could not assess.

    Attributes
    ----------
    n_scans : int
        Scans checked.
    rules : tuple of str
        The rules that ran (their earlier flags on these scans were replaced).
    thresholds : dict
        The thresholds used.
    flags : tuple of QCFlag
        One per scan and failed rule, sorted by rule then scan key.
    sites : dict
        Scan key -> ``source/site`` of every flagged scan (to count sites per flag).
    not_assessed : dict
        Rule -> number of checked scans the rule could not judge (no Euler number, too few
        scans to compare with...).
    notes : tuple of str
        Why a rule did not apply to some or all scans.
    """

    n_scans: int
    rules: tuple[str, ...]
    thresholds: Mapping[str, float | int]
    flags: tuple[QCFlag, ...] = ()
    sites: Mapping[str, str] = field(default_factory=dict)
    not_assessed: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def flagged_scans(self) -> set[str]:
        """Scan keys with at least one flag."""
        return {f.scan_key for f in self.flags}

    def scans_with(self, flag: str) -> set[str]:
        """Scan keys that failed rule ``flag``."""
        return {f.scan_key for f in self.flags if f.flag == flag}

    def counts(self) -> dict[str, dict[str, int]]:
        """Rule -> number of scans and of sites it flagged (every rule that ran, zeros too)."""
        out = {}
        for rule in self.rules:
            keys = self.scans_with(rule)
            out[rule] = {
                "scans": len(keys),
                "sites": len({self.sites.get(k, "") for k in keys}),
                "not_assessed": int(self.not_assessed.get(rule, 0)),
            }
        return out

    def summary(self) -> dict[str, Any]:
        """A JSON-safe summary: counts per rule, thresholds, notes, and every flag.

        Examples
        --------
        >>> QCReport(n_scans=0, rules=("negative_value",), thresholds={}).summary()["flags"]
        {'negative_value': {'scans': 0, 'sites': 0, 'not_assessed': 0}}
        """
        return {
            "n_scans": self.n_scans,
            "n_flagged": len(self.flagged_scans),
            "flags": self.counts(),
            "thresholds": dict(self.thresholds),
            "notes": list(self.notes),
            "scans": [
                {"scan_key": f.scan_key, "flag": f.flag, "reason": f.reason, "value": f.value}
                for f in self.flags
            ],
        }

    def lines(self, *, list_scans: bool = False) -> list[str]:
        """The text summary printed by ``morphml qc``."""
        counts = self.counts()
        out = [
            f"QC of {self.n_scans:,} scans: {len(self.flagged_scans):,} flagged by at least "
            "one rule"
        ]
        width = max((len(r) for r in counts), default=0)
        for rule, c in counts.items():
            line = f"  {rule:<{width}}  {c['scans']:>6,} scans  {c['sites']:>4,} sites"
            if c["not_assessed"]:
                line += f"  ({c['not_assessed']:,} not assessed)"
            out.append(line)
        out.extend(f"note: {note}" for note in self.notes)
        if list_scans:
            out.extend(f"{f.scan_key}  {f.flag}  {f.reason}" for f in self.flags)
        return out
