"""``morphml withdraw``: remove a person from the database and every run that used them."""

from __future__ import annotations

from pathlib import Path

import click

from morphml.cli._errors import UsageError, friendly

__all__ = ["withdraw"]


@click.command()
@click.argument("original_id", required=False)
@click.option("--db", type=click.Path(path_type=Path), help="Database file [MORPHML_DB].")
@click.option("--source", required=True, help="The source the person was ingested under.")
@click.option("--pseudonym", help="Their subject or scan pseudonym instead of ORIGINAL_ID.")
@click.option(
    "--key-file", type=click.Path(path_type=Path), help="Pseudonym key [MORPHML_KEY_FILE]."
)
@click.option(
    "--allow-unreachable",
    is_flag=True,
    help="Withdraw even when some run folders cannot be scrubbed (listed; delete them).",
)
@friendly
def withdraw(
    original_id: str | None,
    db: Path | None,
    source: str,
    pseudonym: str | None,
    key_file: Path | None,
    allow_unreachable: bool,
) -> None:
    """Remove a person from every table and every run folder that used them, mark those runs
    stale, rewrite the file."""
    from morphml.db import withdraw as run_withdraw

    if (original_id is None) == (pseudonym is None):
        raise UsageError("give exactly one of ORIGINAL_ID or --pseudonym")
    result = run_withdraw(
        db, source=source, original_id=original_id, pseudonym=pseudonym, key_file=key_file,
        allow_unreachable=allow_unreachable,
    )  # fmt: skip
    click.echo(
        f"withdrawal {result.withdrawal_id}: removed {result.n_scans} scans; "
        f"{result.n_runs_marked} runs marked stale; database file rewritten"
    )
    for line in result.scrubbed:
        click.echo(f"  scrubbed {line}")
    for line in result.not_scrubbed:
        click.echo(f"  NOT scrubbed: {line}; delete or scrub that folder yourself")
