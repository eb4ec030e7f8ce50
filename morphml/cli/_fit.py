"""``morphml fit CONFIG``: run a pretrain or transfer config into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from morphml.cli._errors import UsageError, friendly

if TYPE_CHECKING:
    from morphml.pipelines import RunResult, TransferResult

__all__ = ["echo_pretrain_metrics", "fit"]


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--no-resume", is_flag=True, help="Refuse to continue an interrupted run.")
@click.option(
    "--pretrained",
    type=click.Path(path_type=Path),
    help="kind: transfer: the pretrain run directory (overrides the config's 'pretrained').",
)
@click.option(
    "--allow-stale", is_flag=True, help="kind: transfer: accept a pretrain run marked stale."
)
@click.option("--storage", help="Optuna studies in this storage (postgresql://...) [pretrain].")
@click.option("--scheduler", help="Run tuning trials on this Dask scheduler [pretrain].")
@friendly
def fit(
    config_path: Path,
    db: Path | None,
    out: Path,
    no_resume: bool,
    pretrained: Path | None,
    allow_stale: bool,
    storage: str | None,
    scheduler: str | None,
) -> None:
    """Run a config (kind: pretrain or transfer) and write the run directory."""
    from morphml import fit as fit_config
    from morphml.config import PretrainConfig, load_config

    config = load_config(config_path)
    if isinstance(config, PretrainConfig):
        if pretrained is not None or allow_stale:
            raise UsageError("--pretrained and --allow-stale apply to kind: transfer configs")
        result = cast("RunResult", fit_config(
            config, db=db, out=out, resume=not no_resume, storage=storage, scheduler=scheduler,
            progress=True,
        ))  # fmt: skip
        click.echo(f"run {result.run_id} written to {result.run_dir}")
        echo_pretrain_metrics(result.metrics)
        return
    if storage is not None or scheduler is not None:
        raise UsageError("--storage and --scheduler apply to kind: pretrain configs")
    transfer = cast("TransferResult", fit_config(
        config, db=db, out=out, pretrained=pretrained, allow_stale=allow_stale, progress=True,
    ))  # fmt: skip
    click.echo(f"run {transfer.run_id} written to {transfer.run_dir}")
    click.echo(transfer.table)


def echo_pretrain_metrics(metrics: dict[str, Any]) -> None:
    for target, models in metrics["targets"].items():
        for model, schemes in models.items():
            for scheme, m in schemes.items():
                if target == "age":
                    click.echo(
                        f"  age  {model:<24} {scheme:<15} MAE {m['mae']:.2f} "
                        f"[{m['mae_ci'][0]:.2f}, {m['mae_ci'][1]:.2f}]  r {m['r']:.3f}"
                    )
                else:
                    click.echo(
                        f"  sex  {model:<24} {scheme:<15} AUC {m['auc']:.3f} "
                        f"[{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]"
                    )
