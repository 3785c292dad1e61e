"""The pipelines HTTP API: definitions (versioned), executions, callbacks and triggers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cairn.auth import CurrentPrincipal, requires, set_audit_resource
from cairn.contracts.pipeline_events import PIPELINE_NAME, ParameterValue, PipelineCallbackRequested
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.pipelines.domain import Execution
from services.pipelines.handlers import PipelineHandlers, PipelineVersion
from services.pipelines.trigger_runner import TriggerRunner
from services.pipelines.triggers import Trigger, TriggerRequest

pipelines = APIRouter(prefix="/pipelines", tags=["pipelines"])
executions = APIRouter(prefix="/pipeline-executions", tags=["pipeline-executions"])
triggers = APIRouter(prefix="/pipeline-triggers", tags=["pipeline-triggers"])
ROUTERS = (pipelines, executions, triggers)


def get_handlers(request: Request) -> PipelineHandlers:
    handlers: PipelineHandlers = request.app.state.pipelines
    return handlers


def get_runner(request: Request) -> TriggerRunner:
    runner: TriggerRunner = request.app.state.pipeline_triggers
    return runner


Handlers = Annotated[PipelineHandlers, Depends(get_handlers)]
Runner = Annotated[TriggerRunner, Depends(get_runner)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CreateBody(_Body):
    name: str = Field(pattern=PIPELINE_NAME)
    definition: dict[str, Any]


class UpdateBody(_Body):
    definition: dict[str, Any]


class StartBody(_Body):
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)


class CallbackBody(_Body):
    status: Literal["Succeeded", "Failed"] = "Succeeded"
    outputs: dict[str, ParameterValue] = Field(default_factory=dict)
    reason: str = Field(default="", max_length=2000)


def pipeline_view(version: PipelineVersion) -> dict[str, Any]:
    return version.model_dump(mode="json")


def execution_view(execution: Execution) -> dict[str, Any]:
    """An execution without its outbox, each step with its type and status first."""
    body = execution.model_dump(mode="json", exclude={"outbox", "definition"})
    body["steps"] = [
        {"name": step.name, "type": step.type, **body["steps"][step.name]}
        for step in execution.definition.steps
    ]
    return body


def trigger_view(trigger: Trigger) -> dict[str, Any]:
    return trigger.model_dump(mode="json")


@pipelines.post("", status_code=201, dependencies=[requires("train", action="pipeline.create")])
async def create_pipeline(
    body: CreateBody, handlers: Handlers, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    set_audit_resource(request, f"/pipelines/{body.name}")
    return pipeline_view(await handlers.save(body.name, body.definition, principal, new=True))


@pipelines.put("/{name}", dependencies=[requires("train", action="pipeline.update")])
async def update_pipeline(
    name: str, body: UpdateBody, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    return pipeline_view(await handlers.save(name, body.definition, principal, new=False))


@pipelines.get("", dependencies=[requires("read")])
async def list_pipelines(handlers: Handlers) -> dict[str, Any]:
    found = await handlers.list_pipelines()
    return {
        "pipelines": [
            {
                "name": p.name,
                "latest_version": p.version,
                "steps": len(p.definition.steps),
                "updated_at": p.created_at.isoformat(),
                "description": p.definition.description,
            }
            for p in found
        ]
    }


@pipelines.get("/{name}", dependencies=[requires("read")])
async def describe_pipeline(
    name: str, handlers: Handlers, version: int | None = None
) -> dict[str, Any]:
    return pipeline_view(await handlers.describe(name, version))


@pipelines.post(
    "/{name}/executions",
    status_code=202,
    dependencies=[requires("train", action="pipeline.start")],
)
async def start_execution(
    name: str, body: StartBody, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    execution, _ = await handlers.start(name, dict(body.parameters), principal)
    return execution_view(execution)


@pipelines.get("/{name}/executions", dependencies=[requires("read")])
async def list_pipeline_executions(name: str, handlers: Handlers) -> dict[str, Any]:
    await handlers.describe(name)
    runs = await handlers.list_executions(name)
    return {"executions": [execution_view(run) for run in runs]}


@pipelines.post(
    "/{name}/triggers",
    status_code=201,
    dependencies=[requires("train", action="pipeline.trigger.add")],
)
async def add_trigger(
    name: str, body: TriggerRequest, runner: Runner, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    trigger = await runner.add(name, body, principal)
    set_audit_resource(request, f"/pipeline-triggers/{trigger.trigger_name}")
    return trigger_view(trigger)


@executions.get("", dependencies=[requires("read")])
async def list_executions(handlers: Handlers) -> dict[str, Any]:
    return {"executions": [execution_view(run) for run in await handlers.list_executions()]}


@executions.get("/{execution_id}", dependencies=[requires("read")])
async def describe_execution(execution_id: str, handlers: Handlers) -> dict[str, Any]:
    return execution_view(await handlers.execution(execution_id))


@executions.post(
    "/{execution_id}/stop", dependencies=[requires("train", action="pipeline.execution.stop")]
)
async def stop_execution(
    execution_id: str, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    return execution_view(await handlers.stop(execution_id, principal))


@executions.post(
    "/{execution_id}/retry", dependencies=[requires("train", action="pipeline.execution.retry")]
)
async def retry_execution(execution_id: str, handlers: Handlers) -> dict[str, Any]:
    return execution_view(await handlers.retry(execution_id))


@executions.post(
    "/callbacks/{token}",
    status_code=202,
    dependencies=[requires("train", action="pipeline.callback")],
)
async def send_callback(token: str, body: CallbackBody, handlers: Handlers) -> dict[str, Any]:
    """SendPipelineExecutionStepSuccess / Failure: the same event a bus client may publish."""
    try:
        event = PipelineCallbackRequested(callback_token=token, **body.model_dump())
    except ValidationError:
        raise InvalidInput("not a callback token") from None
    envelope = await handlers.platform.publish(event)
    return {"accepted": True, "event_id": str(envelope.event_id)}


@triggers.get("", dependencies=[requires("read")])
async def list_triggers(runner: Runner) -> dict[str, Any]:
    return {"triggers": [trigger_view(t) for t in await runner.all()]}


@triggers.delete(
    "/{trigger_name}", dependencies=[requires("train", action="pipeline.trigger.remove")]
)
async def remove_trigger(
    trigger_name: str, runner: Runner, principal: CurrentPrincipal
) -> dict[str, Any]:
    return trigger_view(await runner.remove(trigger_name, principal))
