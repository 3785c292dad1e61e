"""`cairn experiments list | show | compare`: runs, their parameters, metrics and curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from cairn.errors import InvalidInput
from rich.console import Console

from cairn_cli.sdk_common import (
    EXIT_BAD_INPUT,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    print_json,
    service_errors,
    table,
)

experiments_app = typer.Typer(
    name="experiments",
    help="Experiments: every job and pipeline execution as a run, compared side by side.",
    no_args_is_help=True,
)


@experiments_app.command("list")
def list_cmd(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment's runs.")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option("--where", help="A filter on runs, e.g. 'auc > 0.8 and kind == training'."),
    ] = None,
    sort: Annotated[
        str | None, typer.Option("--sort", help="auc (ascending), -auc or 'auc desc'.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1)] = None,
    runs: Annotated[bool, typer.Option("--runs", help="List runs, not experiments.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """The experiments; with --runs, --experiment, --where or --sort: the runs that match."""
    if not (runs or experiment or where or sort):
        with service_errors(), client_for(target, home) as client:
            found = client.list_experiments()
        if as_json:
            print_json(found)
            return
        rows = [(e["experiment"], e["runs"], e["last_run_at"]) for e in found]
        Console().print(table("Experiments", ("experiment", "runs", "last run"), rows))
        return
    with service_errors(), client_for(target, home) as client:
        matched = client.list_runs(experiment, where=where, sort=sort, limit=limit)
    if as_json:
        print_json(matched)
        return
    sort_field = (sort or "").lstrip("-").split(" ")[0]
    run_rows = [
        (
            r["run_id"],
            r["experiment"],
            r["status"],
            _metric_cell(r["metrics"], sort_field),
            ", ".join(f"{k}={_number(v)}" for k, v in sorted(r["metrics"].items())[:4]),
        )
        for r in matched
    ]
    columns = ("run", "experiment", "status", sort_field or "-", "metrics")
    Console().print(table("Runs", columns, run_rows))


@experiments_app.command("show")
def show(
    run: Annotated[str, typer.Argument(help="A run id (training.job-1) or a job name.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One run: parameters, final metrics, artifacts and lineage (with --json, its curves)."""
    with service_errors(), client_for(target, home) as client:
        found = client.describe_run(run)
    if as_json:
        print_json(found)
        return
    console = Console()
    header = {k: found[k] for k in ("run_id", "experiment", "status", "failure_reason")}
    header |= {"created_at": found["created_at"], "ended_at": found["ended_at"]}
    console.print(key_value_table(f"Run {found['run_id']}", header))
    console.print(key_value_table("Parameters", found["parameters"]))
    console.print(key_value_table("Metrics", found["metrics"]))
    console.print(key_value_table("Artifacts", found["artifacts"]))
    console.print(key_value_table("Lineage", found["lineage"]))


@experiments_app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run ids or job names (two or more).")],
    plot: Annotated[
        Path, typer.Option("--plot", help="Where the PNG of the metric curves is written.")
    ] = Path("compare.png"),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plot.")] = False,
    metrics: Annotated[
        list[str] | None, typer.Option("--metric", help="Only these metrics (repeatable).")
    ] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """A side-by-side table of parameters and final metrics, and a plot of the metric curves."""
    with service_errors(), client_for(target, home) as client:
        found = client.compare_runs(runs)
    if as_json:
        print_json(found)
    else:
        Console().print(comparison_table(found, metrics))
    if no_plot:
        return
    try:
        drawn = plot_curves(found, plot, metrics)
    except InvalidInput as error:
        Console(stderr=True).print(f"[red]error:[/] {error.message}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    Console(stderr=as_json).print(f"plot of {drawn} metric(s) written to {plot}")


def comparison_table(runs: list[dict[str, Any]], only: list[str] | None = None) -> Any:
    """Rows: status, each parameter, each final metric; one column per run."""
    names = [run["run_id"] for run in runs]
    parameters = sorted({key for run in runs for key in run["parameters"]})
    metrics = sorted({key for run in runs for key in run["metrics"]})
    if only:
        metrics = [m for m in metrics if m in only]
    rows: list[tuple[Any, ...]] = [("status", *(run["status"] for run in runs))]
    rows += [("experiment", *(run["experiment"] for run in runs))]
    for key in parameters:
        rows.append((f"param {key}", *(_cell(run["parameters"].get(key)) for run in runs)))
    for key in metrics:
        rows.append((f"metric {key}", *(_number(run["metrics"].get(key)) for run in runs)))
    return table("Runs compared", ("", *names), rows)


def plot_curves(runs: list[dict[str, Any]], path: Path, only: list[str] | None = None) -> int:
    """One panel per metric with a curve per run; returns the number of panels drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidInput(
            "plots need matplotlib: pip install 'cairn[monitoring]' (or use --no-plot)"
        ) from None
    names = sorted({name for run in runs for name, points in run["history"].items() if points})
    if only:
        names = [name for name in names if name in only]
    if not names:
        raise InvalidInput("none of these runs recorded a metric curve (use --no-plot)")
    columns = min(len(names), 3)
    rows = (len(names) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.5 * rows), squeeze=False)
    for index, name in enumerate(names):
        axis = axes[index // columns][index % columns]
        for run in runs:
            points = run["history"].get(name) or []
            if points:
                axis.plot(
                    [p["step"] for p in points],
                    [p["value"] for p in points],
                    "-o",
                    markersize=2,
                    label=run["run_id"],
                )
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.legend(fontsize="small")
    for index in range(len(names), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return len(names)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def _number(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _metric_cell(metrics: dict[str, float], name: str) -> Any:
    if not name:
        return None
    if name in metrics:
        return _number(metrics[name])
    matches = sorted(k for k in metrics if k.endswith(f":{name}") or k == f"metrics.{name}")
    return _number(metrics[matches[0]]) if matches else None


def register(app: typer.Typer) -> None:
    """Add `experiments` to the `cairn` app."""
    app.add_typer(experiments_app)
