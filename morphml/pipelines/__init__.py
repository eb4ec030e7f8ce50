"""Pipelines: configs in, run directories out."""

from morphml.pipelines._demo import DemoResult, run_demo
from morphml.pipelines._evaluate import EvaluationResult, evaluate_run
from morphml.pipelines._fit import RunResult, fit_pretrain
from morphml.pipelines._predict import in_sample_count, predict_run, predictions
from morphml.pipelines._transfer import TransferResult, fit_transfer, load_transfer_data
from morphml.rundir import package_versions

__all__ = [
    "DemoResult",
    "EvaluationResult",
    "RunResult",
    "TransferResult",
    "evaluate_run",
    "fit_pretrain",
    "fit_transfer",
    "in_sample_count",
    "load_transfer_data",
    "package_versions",
    "predict_run",
    "predictions",
    "run_demo",
]
