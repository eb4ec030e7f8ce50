"""Preprocessing transformers that learn from data: the feature guard and eTIV adjustment.

Both are fitted inside a model's :class:`~sklearn.pipeline.Pipeline`, so they only ever see the
training rows of a split.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted, validate_data

from morphml.exceptions import (
    FeatureMismatchError,
    ModelConfigError,
    ModelInputError,
)

__all__ = [
    "EtivAdjuster",
    "FeatureGuard",
    "FeatureMismatchError",
    "ModelConfigError",
    "ModelInputError",
    "check_feature_names",
]

#: how many missing / extra names an error message lists
_MAX_LISTED = 5


def _mismatch_message(fitted: Sequence[str], given: Sequence[str]) -> str:
    # The second line and the two lists use scikit-learn's own wording, so that code (and
    # scikit-learn's estimator checks) matching on it keeps working; the rest is ours.
    fitted_set, given_set = set(fitted), set(given)
    missing = sorted(fitted_set - given_set)
    extra = sorted(given_set - fitted_set)
    lines = [
        f"The model was fitted on {len(fitted)} named feature columns; X has {len(given)} "
        f"columns ({len(missing)} missing, {len(extra)} extra).",
        "The feature names should match those that were passed during fit.",
    ]
    if extra:
        lines.append("Feature names unseen at fit time:")
        lines += [f"- {name}" for name in extra[:_MAX_LISTED]]
        if len(extra) > _MAX_LISTED:
            lines.append("- ...")
    if missing:
        lines.append("Feature names seen at fit time, yet now missing:")
        lines += [f"- {name}" for name in missing[:_MAX_LISTED]]
        if len(missing) > _MAX_LISTED:
            lines.append("- ...")
    if not missing and not extra:
        if len(given) != len(set(given)):
            duplicated = sorted(name for name, n in Counter(given).items() if n > 1)
            lines.append(f"X has duplicated columns: {duplicated[:_MAX_LISTED]}.")
        else:
            lines.append("Feature names must be in the same order as they were in fit.")
            position = next(
                i for i, (a, b) in enumerate(zip(fitted, given, strict=True)) if a != b
            )
            lines.append(
                f"First difference at column {position}: expected {fitted[position]!r}, "
                f"got {given[position]!r}."
            )
    hints = []
    for name in missing[:_MAX_LISTED]:
        close = difflib.get_close_matches(name, extra, n=1, cutoff=0.8)
        if close:
            hints.append(f"{close[0]!r} -> {name!r}")
    if hints:
        lines.append("Possible renames (given -> expected): " + ", ".join(hints) + ".")
    lines.append(
        "Give X the columns of `feature_names_in_` in the same order (e.g. "
        "X[model.feature_names_in_] once the names match); morphml never reorders, drops or "
        "fills feature columns on its own."
    )
    return "\n".join(lines)


def check_feature_names(estimator: BaseEstimator, X: Any) -> None:
    """Refuse a DataFrame whose columns differ from those the estimator was fitted on.

    Does nothing when the estimator was fitted without column names or when ``X`` is not a
    DataFrame (then scikit-learn's checks on the number of features apply).

    Parameters
    ----------
    estimator : estimator
        A fitted estimator; its ``feature_names_in_`` (if any) is the expected schema.
    X : array-like or DataFrame
        The data about to be transformed or predicted.

    Raises
    ------
    FeatureMismatchError
        Listing the first few missing and extra columns, or the first out-of-order column.

    Examples
    --------
    >>> import pandas as pd
    >>> from morphml.models import FeatureGuard, check_feature_names
    >>> guard = FeatureGuard().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    >>> check_feature_names(guard, pd.DataFrame({"a": [1.0], "b": [2.0]}))
    """
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None or not isinstance(X, pd.DataFrame):
        return
    given = [str(c) for c in X.columns]
    expected = [str(c) for c in fitted]
    if given != expected:
        raise FeatureMismatchError(_mismatch_message(expected, given))


def _check_unique_columns(X: pd.DataFrame, owner: str) -> None:
    duplicated = sorted(str(name) for name, n in Counter(X.columns).items() if n > 1)
    if duplicated:
        raise ModelInputError(
            f"{owner}: X has duplicated column names {duplicated[:_MAX_LISTED]}; every feature "
            "column must have a unique name."
        )


class FeatureGuard(TransformerMixin, BaseEstimator):
    """Remember the training columns and refuse any other columns later.

    The first step of every morphml model pipeline. It passes the data through unchanged
    (a DataFrame stays a DataFrame), so the next steps still see column names.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Column names seen in :meth:`fit`, when ``X`` was a DataFrame with string column names.

    Examples
    --------
    >>> import pandas as pd
    >>> from morphml.models import FeatureGuard
    >>> guard = FeatureGuard().fit(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    >>> list(guard.feature_names_in_)
    ['a', 'b']
    >>> guard.transform(pd.DataFrame({"b": [2.0], "a": [1.0]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    morphml.exceptions.FeatureMismatchError: The model was fitted on 2 named feature...
    """

    def fit(self, X: Any, y: Any = None) -> FeatureGuard:
        """Record the number and names of the columns of ``X``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training data; missing values are allowed.
        y : array-like, optional
            Target of the pipeline's model. When numeric it must be finite (a missing age
            would otherwise reach estimators such as XGBoost that accept it silently).

        Returns
        -------
        self : FeatureGuard
        """
        if y is not None:
            target = np.asarray(y)
            if target.dtype.kind in "fc":
                assert_all_finite(target, input_name="y", estimator_name=type(self).__name__)
        if isinstance(X, pd.DataFrame):
            _check_unique_columns(X, type(self).__name__)
            validate_data(self, X, reset=True, skip_check_array=True)
        else:
            validate_data(self, X, reset=True, ensure_all_finite="allow-nan")
        return self

    def transform(self, X: Any) -> Any:
        """Check the columns of ``X`` against those seen in :meth:`fit` and return ``X``.

        Raises
        ------
        FeatureMismatchError
            If ``X`` is a DataFrame whose columns are not exactly the fitted ones, in order.
        """
        check_is_fitted(self)
        check_feature_names(self, X)
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=False, skip_check_array=True)
            return X
        return validate_data(self, X, reset=False, ensure_all_finite="allow-nan")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: the input columns, unchanged."""
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        if input_features is not None and list(input_features) != list(names):
            raise FeatureMismatchError(_mismatch_message(list(names), list(input_features)))
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _is_size_feature(name: str) -> bool:
    return name.endswith((".volume", ".area"))


class EtivAdjuster(TransformerMixin, BaseEstimator):
    """Remove the part of volumes and areas explained by intracranial volume (eTIV).

    Learned on the training rows only, then applied unchanged to any later data:

    * ``method="residual"`` (the usual ENIGMA-style covariance adjustment): for each adjusted
      feature :math:`x_j` a least-squares slope :math:`b_j` of :math:`x_j` on eTIV is learned,
      and :math:`x_j - b_j\\,(\\mathrm{eTIV} - \\overline{\\mathrm{eTIV}})` is returned, where
      :math:`\\overline{\\mathrm{eTIV}}` is the training mean. In the training data the result is
      uncorrelated with eTIV and keeps the feature's mean.
    * ``method="proportion"``: :math:`x_j \\cdot \\overline{\\mathrm{eTIV}} / \\mathrm{eTIV}`
      (a fraction of head size, rescaled to the units of an average head).

    With ``etiv_column`` a name (the default), ``X`` must be a DataFrame whose columns are
    canonical feature ids (``{atlas}.{hemi}.{region}.{measure}``): eTIV and the features to
    adjust are found by name, and the output is a DataFrame. With ``etiv_column`` a column
    position (int), ``X`` may be any 2-D numeric array (or a DataFrame, read by position)
    and the output is an array; ``set_output(transform="pandas")`` names its columns.

    Parameters
    ----------
    etiv_column : str or int, default="global.na.eTIV.volume"
        Column holding eTIV (mm³): its name, or its position. Every value must be finite
        and positive.
    columns : "volumes", "all" or list of str or int, default="volumes"
        Columns to adjust. ``"volumes"`` means every column whose id ends in ``.volume`` or
        ``.area`` (names only); ``"all"`` every column; either way except ``etiv_column``.
        A list holds names when ``etiv_column`` is a name and positions when it is an int.
    method : {"residual", "proportion"}, default="residual"
        How to adjust (see above).
    keep_etiv : bool, default=False
        Whether the eTIV column is kept in the output (unchanged) or dropped.

    Attributes
    ----------
    columns_ : ndarray of str or int
        The adjusted columns (names, or positions when ``etiv_column`` is an int), in input
        order.
    slopes_ : ndarray of float
        Training least-squares slope of each adjusted column on eTIV (per mm³); used by
        ``method="residual"``, informative otherwise. A column with fewer than two observed
        values gets slope 0.
    etiv_mean_ : float
        Training mean of eTIV.
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of str
        Input column names (when ``X`` had string column names).

    Examples
    --------
    >>> import pandas as pd
    >>> from morphml.models import EtivAdjuster
    >>> X = pd.DataFrame({
    ...     "global.na.eTIV.volume": [1400e3, 1500e3, 1600e3],
    ...     "aseg.na.Left-Thalamus.volume": [7000.0, 7500.0, 8000.0],
    ...     "aparc.lh.precuneus.thickness": [2.4, 2.5, 2.3],
    ... })
    >>> EtivAdjuster().fit_transform(X)["aseg.na.Left-Thalamus.volume"].round(6).tolist()
    [7500.0, 7500.0, 7500.0]
    >>> by_position = EtivAdjuster(etiv_column=0, columns=[1])  # eTIV first, adjust the next
    >>> by_position.fit_transform(X.to_numpy())[:, 0].round(6).tolist()
    [7500.0, 7500.0, 7500.0]
    """

    def __init__(
        self,
        *,
        etiv_column: str | int = "global.na.eTIV.volume",
        columns: str | Sequence[str] | Sequence[int] = "volumes",
        method: str = "residual",
        keep_etiv: bool = False,
    ) -> None:
        self.etiv_column = etiv_column
        self.columns = columns
        self.method = method
        self.keep_etiv = keep_etiv

    def _check_params(self) -> None:
        name = type(self).__name__
        if self.method not in ("residual", "proportion"):
            raise ModelConfigError(
                f"The 'method' parameter of {name} must be 'residual' or 'proportion'. "
                f"Got {self.method!r}."
            )
        etiv = self.etiv_column
        by_position = isinstance(etiv, int | np.integer) and not isinstance(etiv, bool)
        if not (by_position and int(etiv) >= 0) and not (isinstance(etiv, str) and etiv):
            raise ModelConfigError(
                f"The 'etiv_column' parameter of {name} must be a column name (str) or a "
                f"column position (int >= 0). Got {etiv!r}."
            )
        if not isinstance(self.keep_etiv, bool):
            raise ModelConfigError(
                f"The 'keep_etiv' parameter of {name} must be True or False. "
                f"Got {self.keep_etiv!r}."
            )
        self._check_columns_param(by_position)

    def _check_columns_param(self, by_position: bool) -> None:
        name, cols = type(self).__name__, self.columns
        if isinstance(cols, str):
            if cols not in ("volumes", "all"):
                raise ModelConfigError(
                    f"The 'columns' parameter of {name} must be 'volumes', 'all' or a list of "
                    f"column names. Got {cols!r}."
                )
            if cols == "volumes" and by_position:
                raise ModelConfigError(
                    f"{name}: columns='volumes' finds the volume and area columns by name, but "
                    f"'etiv_column' is a position ({self.etiv_column!r}). Set columns='all' or "
                    "a list of column positions."
                )
        elif by_position and not all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) for c in cols
        ):
            raise ModelConfigError(
                f"The 'columns' parameter of {name} must be 'all' or a list of column "
                f"positions (int) when 'etiv_column' is a position. Got {cols!r}."
            )
        elif not by_position and not all(isinstance(c, str) for c in cols):
            raise ModelConfigError(
                f"The 'columns' parameter of {name} must be 'volumes', 'all' or a list of "
                f"column names (str). Got {cols!r}."
            )

    @property
    def _by_position(self) -> bool:
        return not isinstance(self.etiv_column, str)

    def _require_frame(self, X: Any) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            shape = getattr(X, "shape", None)
            raise ModelInputError(
                f"{type(self).__name__} needs a pandas DataFrame whose columns are feature ids "
                f"(it finds {self.etiv_column!r} and the volume/area columns by name); got "
                f"{type(X).__name__}{'' if shape is None else f' of shape {shape}'}. Pass the "
                "feature table as a DataFrame, set 'etiv_column' to the position of eTIV, or "
                "build the model with etiv_adjust=False."
            )
        _check_unique_columns(X, type(self).__name__)
        return X

    def _checked_etiv(self, etiv: np.ndarray, rows: Any, where: str) -> np.ndarray:
        bad = ~np.isfinite(etiv) | (etiv <= 0)
        if bad.any():
            listed = [str(r) for r in rows[bad][:_MAX_LISTED]]
            raise ModelInputError(
                f"{type(self).__name__}: column {self.etiv_column!r} must be finite and positive "
                f"in every row; {int(bad.sum())} row(s) are missing, zero or negative ({where} "
                f"{', '.join(listed)}{', ...' if bad.sum() > _MAX_LISTED else ''}). Exclude "
                "those rows or fix their eTIV."
            )
        return etiv

    def _etiv(self, X: pd.DataFrame) -> np.ndarray:
        if self.etiv_column not in X.columns:
            close = difflib.get_close_matches(
                str(self.etiv_column), [str(c) for c in X.columns], 1
            )
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ModelInputError(
                f"{type(self).__name__}: X has no eTIV column {self.etiv_column!r}.{hint} "
                "Include eTIV in the features or set 'etiv_column'."
            )
        etiv = pd.to_numeric(X[self.etiv_column], errors="coerce").to_numpy(dtype=float)
        return self._checked_etiv(etiv, X.index, "index")

    def _named_columns(self, names: list[str]) -> list[str]:
        etiv = str(self.etiv_column)
        if self.columns == "all":
            return [c for c in names if c != etiv]
        if isinstance(self.columns, str):
            columns = [c for c in names if _is_size_feature(c) and c != etiv]
            if not columns:
                raise ModelInputError(
                    f"{type(self).__name__}: X has no '.volume' or '.area' column besides "
                    f"{etiv!r}, so there is nothing to adjust. Build the model with "
                    "etiv_adjust=False for thickness-only features."
                )
            return columns
        columns = [str(c) for c in self.columns]
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise ModelInputError(
                f"{type(self).__name__}: columns to adjust are not in X: {unknown[:_MAX_LISTED]}."
            )
        if etiv in columns:
            raise ModelConfigError(
                f"{type(self).__name__}: 'columns' must not contain the eTIV column {etiv!r} "
                "itself."
            )
        return columns

    def _positions(self, n_features: int) -> list[int]:
        name, etiv = type(self).__name__, int(self.etiv_column)
        if etiv >= n_features:
            raise ModelInputError(
                f"{name}: 'etiv_column' is position {etiv}, but X has {n_features} feature(s) "
                f"(positions 0 to {n_features - 1})."
            )
        if isinstance(self.columns, str):  # "all"
            positions = [j for j in range(n_features) if j != etiv]
        else:
            positions = [int(j) for j in self.columns]
            outside = [j for j in positions if not 0 <= j < n_features]
            if outside or etiv in positions:
                raise ModelConfigError(
                    f"{name}: 'columns' must hold positions of X other than eTIV ({etiv}) "
                    f"between 0 and {n_features - 1}. Got {list(self.columns)!r}."
                )
        if not positions:
            raise ModelInputError(
                f"{name}: X has {n_features} feature(s), the eTIV column alone, so there is "
                "nothing to adjust."
            )
        return positions

    def fit(self, X: Any, y: Any = None) -> EtivAdjuster:
        """Learn the eTIV mean and per-feature slopes from the training rows.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Training features: a DataFrame with canonical feature ids as column names, or
            (``etiv_column`` a position) any numeric array. Missing feature values are
            allowed (slopes use the rows where the feature is observed).
        y : ignored
            Accepted for pipeline compatibility.

        Returns
        -------
        self : EtivAdjuster
        """
        self._check_params()
        if self._by_position:
            values = validate_data(self, X, reset=True, ensure_all_finite="allow-nan",
                                   dtype=np.float64)  # fmt: skip
            positions = self._positions(values.shape[1])
            etiv = values[:, int(self.etiv_column)]
            etiv = self._checked_etiv(etiv, np.arange(len(etiv)), "row")
            self.columns_ = np.asarray(positions, dtype=np.intp)
            self.slopes_ = _slopes(etiv, values[:, positions])
            self.etiv_mean_ = float(etiv.mean())
            return self
        X = self._require_frame(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        if getattr(self, "feature_names_in_", None) is None:
            raise ModelInputError(
                f"{type(self).__name__} needs string column names (feature ids); got columns "
                f"{list(X.columns)[:_MAX_LISTED]}."
            )
        etiv = self._etiv(X)
        columns = self._named_columns([str(c) for c in X.columns])
        self.slopes_ = _slopes(etiv, self._values(X, columns))
        self.columns_ = np.asarray(columns, dtype=object)
        self.etiv_mean_ = float(etiv.mean())
        return self

    @staticmethod
    def _values(X: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
        try:
            return X[list(columns)].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ModelInputError(
                f"EtivAdjuster: the columns to adjust must be numeric ({exc})."
            ) from exc

    def _adjusted(self, values: np.ndarray, etiv: np.ndarray) -> np.ndarray:
        if self.method == "residual":
            return values - np.outer(etiv - self.etiv_mean_, self.slopes_)
        return values * (self.etiv_mean_ / etiv)[:, None]

    def transform(self, X: Any) -> Any:
        """Adjust the learned columns of ``X`` using the training slopes and eTIV mean.

        Returns
        -------
        DataFrame or ndarray
            ``X`` with the adjusted columns replaced (same index and column order), without
            the eTIV column unless ``keep_etiv=True``. Missing values stay missing. A
            DataFrame when ``etiv_column`` is a name, else a float array.
        """
        check_is_fitted(self)
        if self._by_position:
            check_feature_names(self, X)
            out = validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                                dtype=np.float64, copy=True)  # fmt: skip
            position = int(self.etiv_column)
            etiv = self._checked_etiv(out[:, position].copy(), np.arange(len(out)), "row")
            out[:, self.columns_] = self._adjusted(out[:, self.columns_], etiv)
            return out if self.keep_etiv else np.delete(out, position, axis=1)
        X = self._require_frame(X)
        check_feature_names(self, X)
        validate_data(self, X, reset=False, skip_check_array=True)
        etiv = self._etiv(X)
        columns = list(self.columns_)
        adjusted = self._adjusted(self._values(X, columns), etiv)
        result = X.copy()
        result[columns] = adjusted
        if not self.keep_etiv:
            result = result.drop(columns=self.etiv_column)
        return result

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: the input columns, minus eTIV unless kept."""
        check_is_fitted(self)
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is None:
            names = [f"x{i}" for i in range(self.n_features_in_)]
        else:
            names = [str(c) for c in fitted]
        if input_features is not None and list(input_features) != names:
            raise FeatureMismatchError(_mismatch_message(names, list(input_features)))
        if not self.keep_etiv:
            if self._by_position:
                names = [c for j, c in enumerate(names) if j != int(self.etiv_column)]
            else:
                names = [c for c in names if c != self.etiv_column]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _slopes(etiv: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of each column of ``values`` on ``etiv``, over its observed rows.

    A column with fewer than two observed values (or no spread in eTIV there) gets 0.
    """
    slopes = np.zeros(values.shape[1])
    for j in range(values.shape[1]):
        seen = ~np.isnan(values[:, j])
        if seen.sum() < 2:
            continue
        e = etiv[seen] - etiv[seen].mean()
        denominator = float(e @ e)
        if denominator > 0:
            slopes[j] = float(e @ (values[seen, j] - values[seen, j].mean())) / denominator
    return slopes


class MedianImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Replace missing values by each column's training median.

    What ``SimpleImputer(strategy="median")`` computes, with :func:`numpy.nanmedian` instead
    of a masked-array sort (on 5,000 scans x 1,000 features: 0.1 s instead of 1.7 s, most of
    a ridge fit). A column with no value at all in training is filled with 0 and kept, so the
    output always has the input's columns.

    Attributes
    ----------
    statistics_ : ndarray of shape (n_features,)
        The fill value of each column.

    Examples
    --------
    >>> import numpy as np
    >>> from morphml.models import MedianImputer
    >>> MedianImputer().fit_transform(np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, 2.0]]))
    array([[1., 2.],
           [3., 2.],
           [2., 2.]])
    """

    #: for descriptions of fitted pipelines (as SimpleImputer's attribute)
    strategy = "median"

    def fit(self, X: Any, y: Any = None) -> MedianImputer:
        """Compute the training median of every column."""
        values = validate_data(self, X, reset=True, ensure_all_finite="allow-nan",
                               dtype=np.float64)  # fmt: skip
        missing = np.isnan(values).all(axis=0)
        medians = np.zeros(values.shape[1])
        if (~missing).any():
            medians[~missing] = np.nanmedian(values[:, ~missing], axis=0)
        self.statistics_ = medians
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``X`` as a float array with missing values replaced by the training medians."""
        check_is_fitted(self)
        values = validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                               dtype=np.float64, copy=True)  # fmt: skip
        rows, cols = np.nonzero(np.isnan(values))
        values[rows, cols] = self.statistics_[cols]
        return values

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
