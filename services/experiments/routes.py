"""The experiments HTTP API: experiments, runs (queried by metric), one run, runs compared."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import requires
from fastapi import APIRouter, Depends, Query, Request

from services.experiments.config import ExperimentsSettings
from services.experiments.domain import summary
from services.experiments.handlers import ExperimentsHandlers

router = APIRouter(tags=["experiments"])


def get_handlers(request: Request) -> ExperimentsHandlers:
    """The service layer, set on the app by `create_service`."""
    handlers: ExperimentsHandlers = request.app.state.experiments
    return handlers


def get_config(request: Request) -> ExperimentsSettings:
    config: ExperimentsSettings = request.app.state.experiments_config
    return config


Handlers = Annotated[ExperimentsHandlers, Depends(get_handlers)]
Config = Annotated[ExperimentsSettings, Depends(get_config)]


@router.get("/experiments", dependencies=[requires("read")])
async def list_experiments(handlers: Handlers) -> dict[str, Any]:
    return {"experiments": await handlers.experiments()}


@router.get("/runs", dependencies=[requires("read")])
async def list_runs(
    handlers: Handlers,
    config: Config,
    experiment: Annotated[str | None, Query(max_length=63)] = None,
    where: Annotated[
        str | None, Query(max_length=2000, description="e.g. `auc > 0.8 and status == 'Completed'`")
    ] = None,
    sort: Annotated[
        str | None, Query(max_length=200, description="auc, -auc or 'auc desc'")
    ] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    chosen = min(limit or config.max_runs_listed, config.max_runs_listed)
    runs = await handlers.query(experiment, where, sort, chosen)
    return {"runs": [summary(run) for run in runs]}


@router.get("/runs/{run}", dependencies=[requires("read")])
async def describe_run(run: str, handlers: Handlers) -> dict[str, Any]:
    return (await handlers.get(run)).model_dump(mode="json")


@router.get("/compare", dependencies=[requires("read")])
async def compare_runs(
    handlers: Handlers, runs: Annotated[list[str], Query(description="Run ids or job names.")]
) -> dict[str, Any]:
    return {"runs": [run.model_dump(mode="json") for run in await handlers.compare(runs)]}
