"""`cairn tune create | describe | list | stop | wait`: hyperparameter tuning via the tuner."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from cairn_sdk import tuning
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from cairn_cli.sdk_common import (
    EXIT_SERVICE_ERROR,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    parse_pairs,
    parse_value,
    print_json,
    service_errors,
    table,
)

tune_app = typer.Typer(
    name="tune",
    help="Hyperparameter tuning jobs (trials run on the trainer).",
    no_args_is_help=True,
)
STRATEGIES = {"bayesian": "Bayesian", "random": "Random", "grid": "Grid", "hyperband": "Hyperband"}


@tune_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Tuning job name (<= 32 letters, digits, dashes).")],
    algorithm: Annotated[str, typer.Option("--algorithm", "-a")] = "xgboost",
    channel: Annotated[
        list[str] | None, typer.Option("--channel", "-c", help="NAME=URI (repeatable).")
    ] = None,
    objective: Annotated[str, typer.Option("--objective", help="e.g. validation:auc")] = (
        "validation:auc"
    ),
    maximize: Annotated[bool, typer.Option("--maximize/--minimize")] = True,
    ranges: Annotated[
        list[str] | None,
        typer.Option("--range", help="eta=0.01:0.3:log, max_depth=3:10:int, booster=gbtree,dart"),
    ] = None,
    hyperparameter: Annotated[
        list[str] | None, typer.Option("--hyperparameter", "-p", help="Static NAME=VALUE.")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="Label column.")] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="bayesian|random|grid|hyperband")] = (
        "bayesian"
    ),
    max_jobs: Annotated[int, typer.Option("--max-jobs", min=1)] = 10,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1)] = 1,
    early_stopping: Annotated[str, typer.Option("--early-stopping", help="off|auto")] = "off",
    min_resource: Annotated[int, typer.Option("--min-resource", help="Hyperband.")] = 10,
    max_resource: Annotated[int, typer.Option("--max-resource", help="Hyperband.")] = 200,
    warm_start: Annotated[
        list[str] | None, typer.Option("--warm-start", help="Parent tuning job (repeatable).")
    ] = None,
    warm_start_job: Annotated[
        list[str] | None, typer.Option("--warm-start-job", help="Past training job.")
    ] = None,
    transfer: Annotated[bool, typer.Option("--transfer-learning", help="Other data.")] = False,
    register: Annotated[str | None, typer.Option("--register", help="Group for the best.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_runtime: Annotated[int | None, typer.Option("--max-runtime", min=1)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show a live leaderboard.")] = False,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Start a tuning job (CreateHyperParameterTuningJob); --wait follows it live."""
    channels = parse_pairs(channel, "--channel")
    if not channels:
        raise typer.BadParameter("give at least --channel train=URI", param_hint="--channel")
    if strategy.lower() not in STRATEGIES:
        raise typer.BadParameter(f"one of {', '.join(STRATEGIES)}", param_hint="--strategy")
    try:
        body = tuning.tuning_request(
            name,
            algorithm,
            channels,
            objective=objective,
            maximize=maximize,
            ranges=ranges or [],
            strategy=STRATEGIES[strategy.lower()],
            max_jobs=max_jobs,
            max_parallel=max_parallel,
            static_hyperparameters={
                k: parse_value(v) for k, v in parse_pairs(hyperparameter, "-p").items()
            },
            label_column=label,
            early_stopping="Auto" if early_stopping.lower() == "auto" else "Off",
            warm_start=warm_start or [],
            warm_start_jobs=warm_start_job or [],
            warm_start_type="TransferLearning" if transfer else "IdenticalDataAndAlgorithm",
            register_group=register,
            random_seed=seed,
            max_runtime_s=max_runtime,
            hyperband={"min_resource": min_resource, "max_resource": max_resource}
            if strategy.lower() == "hyperband"
            else None,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--range") from None
    console = Console(stderr=as_json)
    with service_errors(), client_for(target, home) as client:
        created = tuning.create_tuning_job(client, body)
        if not wait:
            if as_json:
                print_json(created)
            else:
                console.print(f"tuning job [bold]{name}[/] requested ({created['status']})")
            return
        job = _follow(client, name, console)
    _report(job, console, as_json)


def leaderboard(job: dict[str, Any]) -> Table:
    """The trials, best objective first: trial, parameters, objective, status, rounds used."""
    maximize = job.get("objective", {}).get("type", "Maximize") == "Maximize"
    trials = sorted(
        job.get("trials", []),
        key=lambda t: (
            t.get("objective_value") is None,
            -(t["objective_value"] or 0) if maximize else (t["objective_value"] or 0),
        ),
    )
    rows = [
        (
            str(t["number"]),
            escape(", ".join(f"{k}={_short(v)}" for k, v in t["parameters"].items())),
            "" if t.get("objective_value") is None else f"{t['objective_value']:.5g}",
            t["status"] + (" (early stop)" if t.get("early_stopped") else ""),
            "" if t.get("rounds_used") is None else str(t["rounds_used"]),
        )
        for t in trials
    ]
    counts = job.get("trial_counts", {})
    title = (
        f"{job['tuning_job_name']}: {job['status']}  "
        f"{counts.get('Completed', 0)} completed / {job.get('max_number_of_training_jobs')} max"
    )
    return table(title, ("trial", "parameters", "objective", "status", "rounds"), rows)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _follow(client: Any, name: str, console: Console) -> dict[str, Any]:
    with Live(console=console, refresh_per_second=2) as live:
        return tuning.wait_for_tuning_job(
            client, name, on_poll=lambda job: live.update(leaderboard(job))
        )


def _report(job: dict[str, Any], console: Console, as_json: bool) -> None:
    if as_json:
        print_json(job)
    else:
        best = job.get("best_training_job") or {}
        color = "green" if job["status"] == "Completed" else "red"
        console.print(
            f"[{color}]{job['status']}[/] {job['tuning_job_name']}: best "
            f"{best.get('training_job_name')} = {best.get('objective_value')}  {job.get('reason')}"
        )
    if job["status"] == "Failed":
        raise typer.Exit(EXIT_SERVICE_ERROR)


@tune_app.command("describe")
def describe(
    name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """A tuning job: status, best trial and the leaderboard."""
    with service_errors(), client_for(target, home) as client:
        job = tuning.describe_tuning_job(client, name)
    if as_json:
        print_json(job)
        return
    summary = {k: v for k, v in job.items() if k not in ("trials", "request")}
    Console().print(key_value_table(f"Tuning job {name}", summary))
    Console().print(leaderboard(job))


@tune_app.command("list")
def list_jobs(
    as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Every tuning job, newest first."""
    with service_errors(), client_for(target, home) as client:
        jobs = tuning.list_tuning_jobs(client)
    if as_json:
        print_json(jobs)
        return
    rows = [
        (
            j["tuning_job_name"],
            j["strategy"],
            j["status"],
            str(j["trial_counts"].get("Completed", 0)),
            str((j.get("best_training_job") or {}).get("objective_value", "")),
            j["created_at"][:19],
        )
        for j in jobs
    ]
    columns = ("tuning job", "strategy", "status", "completed", "best", "created")
    Console().print(table("Tuning jobs", columns, rows))


@tune_app.command("stop")
def stop(
    name: str,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Stop a tuning job: no new trials; running trials are stopped."""
    with service_errors(), client_for(target, home) as client:
        job = tuning.stop_tuning_job(client, name, reason)
    if as_json:
        print_json(job)
    else:
        Console().print(f"tuning job [bold]{name}[/] is {job['status']}")


@tune_app.command("wait")
def wait(
    name: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """Follow a tuning job to its end with a live leaderboard (exit 1 if it fails)."""
    console = Console(stderr=as_json)
    with service_errors(), client_for(target, home) as client:
        job = _follow(client, name, console)
    _report(job, console, as_json)


def register(app: typer.Typer) -> None:
    """Add `tune` to the `cairn` app."""
    app.add_typer(tune_app)
