"""Flag names, threshold names and their defaults, and the checks on user-given values."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from morphml._utils import read_yaml
from morphml.exceptions import QCError

__all__ = [
    "FLAGS",
    "QCThresholds",
    "check_flag_names",
    "read_thresholds",
    "resolve_thresholds",
]

#: every flag ``run_qc`` can raise, in the order rules run and reports list them
FLAGS: tuple[str, ...] = (
    "euler_absolute",
    "euler_site_z",
    "missing_structure",
    "zero_structure",
    "negative_value",
    "thickness_range",
    "multivariate_outlier",
)


@dataclass(frozen=True)
class QCThresholds:
    """The cut-offs of the QC rules (see :mod:`morphml.qc` for what each rule does).

    Attributes
    ----------
    euler_absolute : float
        A scan whose mean Euler number (of the two hemispheres) is below this is flagged.
    euler_site_z : float
        A scan whose robust z of the mean Euler number within its site is below this is flagged.
    site_min_scans : int
        Sites with fewer scans (with an Euler number) are compared with all scans instead.
    missing_min_share : float
        A feature is expected in a scan when at least this share of the scans of the same
        source, software and version that have its atlas and measure have it.
    thickness_min, thickness_max : float
        Plausible cortical thickness in mm.
    multivariate_min_scans : int
        Sites with fewer scans are compared with all scans for the multivariate rule.
    multivariate_distance_z : float
        Cut-off of the robust z of a scan's score or orthogonal distance.
    multivariate_feature_z : float
        A value is extreme beyond this robust z (after age and sex adjustment).
    multivariate_feature_count : int
        A scan with at least this many extreme values is flagged.
    multivariate_max_components : int
        At most this many robust principal components.
    """

    euler_absolute: float = -217.0
    euler_site_z: float = -3.5
    site_min_scans: int = 10
    missing_min_share: float = 0.5
    thickness_min: float = 0.5
    thickness_max: float = 5.0
    multivariate_min_scans: int = 20
    multivariate_distance_z: float = 5.0
    multivariate_feature_z: float = 6.0
    multivariate_feature_count: int = 3
    multivariate_max_components: int = 10

    def as_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: whole-number thresholds and their smallest allowed value
_INTEGERS = {
    "site_min_scans": 3,
    "multivariate_min_scans": 3,
    "multivariate_max_components": 1,
    "multivariate_feature_count": 1,
}


def _closest(name: str, valid: Iterable[str]) -> str:
    choices = list(valid)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid: {', '.join(choices)})"


def check_flag_names(names: Iterable[str], *, where: str = "QC flag") -> list[str]:
    """Return ``names`` as a list, refusing any that is not one of :data:`FLAGS`.

    Raises
    ------
    QCError
        Naming the first unknown name and the closest valid one.

    Examples
    --------
    >>> check_flag_names(["euler_absolute"])
    ['euler_absolute']
    """
    out = []
    for name in names:
        if name not in FLAGS:
            raise QCError(f"unknown {where} {name!r}{_closest(str(name), FLAGS)}")
        out.append(name)
    return out


def resolve_thresholds(
    overrides: Mapping[str, Any] | QCThresholds | None = None,
) -> QCThresholds:
    """The default thresholds with ``overrides`` applied and checked.

    Raises
    ------
    QCError
        For an unknown name (with the closest valid one), a value that is not a finite number,
        a count that is not a whole number or too small, a share outside (0, 1], a z cut-off
        that is not positive, or ``thickness_min >= thickness_max``.

    Examples
    --------
    >>> resolve_thresholds({"euler_absolute": -300}).euler_absolute
    -300.0
    """
    if isinstance(overrides, QCThresholds):
        overrides = overrides.as_dict()
    values: dict[str, Any] = QCThresholds().as_dict()
    for name, raw in (overrides or {}).items():
        if name not in values:
            raise QCError(f"unknown QC threshold {name!r}{_closest(str(name), values)}")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise QCError(f"QC threshold {name!r} must be a finite number, got {raw!r}")
        if name in _INTEGERS:
            low = _INTEGERS[name]
            if float(raw) != int(raw) or int(raw) < low:
                raise QCError(f"QC threshold {name!r} must be a whole number >= {low}, got {raw}")
            values[name] = int(raw)
        else:
            values[name] = float(raw)
    if not 0.0 < values["missing_min_share"] <= 1.0:
        raise QCError(
            "QC threshold 'missing_min_share' must lie in (0, 1], got "
            f"{values['missing_min_share']}"
        )
    for name in ("multivariate_distance_z", "multivariate_feature_z"):
        if values[name] <= 0:
            raise QCError(f"QC threshold {name!r} must be positive, got {values[name]}")
    if not 0.0 <= values["thickness_min"] < values["thickness_max"]:
        raise QCError(
            "QC thresholds need 0 <= thickness_min < thickness_max, got "
            f"{values['thickness_min']} and {values['thickness_max']}"
        )
    return QCThresholds(**values)


def read_thresholds(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of threshold names to values (checked by :func:`resolve_thresholds`).

    Raises
    ------
    QCError
        When the file is missing, not YAML, or not a mapping.
    """
    p = Path(path)
    data = read_yaml(p, QCError, f"{p}: QC thresholds file not found")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise QCError(
            f"{p}: expected a mapping of threshold names to numbers "
            f"(e.g. 'euler_absolute: -300'), got {type(data).__name__}"
        )
    resolve_thresholds(data)
    return dict(data)
