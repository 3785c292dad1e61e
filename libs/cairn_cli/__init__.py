"""The `cairn` command line: the user's tool, outside the platform kernel (`cairn`)."""

from __future__ import annotations

import typer

from cairn_cli import (
    contracts_cmd,
    datasets_cmd,
    demo_cmd,
    edge_cmd,
    endpoints_cmd,
    events_cmd,
    experiments_cmd,
    features_cmd,
    keys_cmd,
    labeling_cmd,
    models_cmd,
    monitor_cmd,
    pipelines_cmd,
    pools_cmd,
    processing_cmd,
    review_cmd,
    runtime_cmd,
    serve_cmd,
    trace_cmd,
    train_cmd,
    transform_cmd,
    tune_cmd,
)

app = typer.Typer(
    name="cairn",
    help="Cairn: a self-hosted, event-driven ML platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runtime_cmd.register(app)
events_cmd.register(app)
experiments_cmd.register(app)
contracts_cmd.register(app)
datasets_cmd.register(app)
features_cmd.register(app)
monitor_cmd.register(app)
train_cmd.register(app)
models_cmd.register(app)
endpoints_cmd.register(app)
keys_cmd.register(app)
demo_cmd.register(app)
pools_cmd.register(app)
pipelines_cmd.register(app)
processing_cmd.register(app)
serve_cmd.register(app)
trace_cmd.register(app)
transform_cmd.register(app)
tune_cmd.register(app)
edge_cmd.register(app)
labeling_cmd.register(app)
review_cmd.register(app)


def main() -> None:
    app()
