"""ComBat as a pipeline step of the pretraining models, with the outcome kept out of transform."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from morphml.harmonize._combat import META_PREFIX, ComBat

__all__ = ["HarmonizeStep"]


class HarmonizeStep(TransformerMixin, BaseEstimator):
    """ComBat fitted on the training rows of a pipeline; ``neutral`` covariates never read.

    ``neutral`` names covariates (the model's outcome, when the config allows it as a ComBat
    covariate) that are used to *fit* ComBat on the training fold, where they are known, but
    are replaced by their training mean in *every* transform, so a test scan's outcome never
    reaches its harmonised features. Without ``neutral``, it is plain :class:`ComBat`.

    Parameters
    ----------
    covariates : sequence of str
        ``meta:`` covariate columns preserved by ComBat.
    neutral : sequence of str
        Covariates set to their training mean at transform.
    parametric, spline_df, reference_batch, new_batches
        Passed to :class:`ComBat`.
    """

    def __init__(
        self,
        *,
        covariates: Sequence[str] = ("meta:sex",),
        neutral: Sequence[str] = (),
        parametric: bool = True,
        spline_df: int = 4,
        reference_batch: str | None = None,
        new_batches: str = "refuse",
    ) -> None:
        self.covariates = covariates
        self.neutral = neutral
        self.parametric = parametric
        self.spline_df = spline_df
        self.reference_batch = reference_batch
        self.new_batches = new_batches

    def fit(self, X: pd.DataFrame, y: Any = None) -> HarmonizeStep:
        """Fit ComBat on the training rows and remember the ``neutral`` covariates' means.

        Parameters
        ----------
        X : DataFrame
            Features plus the ``meta:site``, ``meta:age`` and covariate columns.
        y : ignored
            Present for pipeline compatibility.

        Returns
        -------
        self : HarmonizeStep
        """
        X = ComBat._check_frame(X, "fit")
        # the input columns, as scikit-learn records them: a saved pipeline starting with
        # this step then knows its feature ids (sidecar) and what a caller must pass
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.combat_ = ComBat(
            batch=f"{META_PREFIX}site",
            covariates=tuple(self.covariates),
            spline_covariates=(f"{META_PREFIX}age",),
            spline_df=self.spline_df,
            parametric=self.parametric,
            reference_batch=self.reference_batch,
            new_batches=self.new_batches,
        ).fit(X)
        self.neutral_values_ = {c: float(X[c].astype(float).mean()) for c in self.neutral}
        return self

    def _neutralised(self, X: pd.DataFrame) -> pd.DataFrame:
        if not self.neutral_values_:
            return X
        out = X.copy()
        for col, value in self.neutral_values_.items():
            out[col] = value
        return out

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Harmonise ``X`` with the fitted ComBat, ``neutral`` covariates at their means."""
        check_is_fitted(self)
        out: pd.DataFrame = self.combat_.transform(self._neutralised(X))
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # as ComBat: a missing value stays missing
        return tags
