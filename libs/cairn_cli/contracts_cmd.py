"""`cairn contracts [--check] [--out DIR]`: regenerate or verify the checked-in contracts/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cairn.contracts_gen import diff_contracts, write_contracts
from cairn.settings import get_settings


def contracts(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only compare; exit 1 and name the files when stale."),
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", help="The contracts folder.", file_okay=False)
    ] = Path("contracts"),
) -> None:
    """Generate AsyncAPI, event JSON Schemas, the catalogue and OpenAPI from the code."""
    settings = get_settings()
    if check:
        diff = diff_contracts(out, settings)
        if diff.up_to_date:
            typer.echo(f"{out}: up to date")
            return
        typer.echo(f"{out}: stale; run `cairn contracts` and commit the result", err=True)
        for line in diff.lines():
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(1)
    diff = write_contracts(out, settings)
    if diff.up_to_date:
        typer.echo(f"{out}: already up to date")
        return
    for line in diff.lines(applied=True):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `cairn` app."""
    app.command("contracts")(contracts)
