"""The `cairn` command line: runtime, events, contracts (and, later, every service's verbs)."""

from __future__ import annotations

import typer

from cairn.cli import contracts_cmd, datasets_cmd, events_cmd, features_cmd, runtime_cmd

app = typer.Typer(
    name="cairn",
    help="Cairn: a self-hosted, event-driven ML platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runtime_cmd.register(app)
events_cmd.register(app)
contracts_cmd.register(app)
datasets_cmd.register(app)
features_cmd.register(app)


def main() -> None:
    app()
