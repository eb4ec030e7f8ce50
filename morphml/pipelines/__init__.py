"""Pipelines: configs in, run directories out."""

from morphml.pipelines._fit import RunResult, fit_pretrain, package_versions
from morphml.pipelines._predict import predict_run

__all__ = ["RunResult", "fit_pretrain", "package_versions", "predict_run"]
