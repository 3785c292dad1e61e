"""Per-endpoint human loops (A2I's FlowDefinition): `deployer/human-loops/<endpoint>.json`.

A loop is a document with a revision that only grows (a removal keeps its tombstone, so a loop
set again later outranks it on every gateway replica); each change is stored first, then
announced with `HumanLoopConfigured`. The gateway reads the documents at start through the
kernel's `HumanLoopConfigView` contract.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from cairn.auth import requires
from cairn.contracts.review_events import (
    HumanLoopConfig,
    HumanLoopConfigured,
    HumanLoopConfigView,
)
from cairn.contracts.state import state_spec
from cairn.documents import DocumentStore
from cairn.errors import NotFound
from cairn.ports import Publish
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Body, Depends, Request
from pydantic import ValidationError

from services.deployer.handlers import Deployer
from services.deployer.routes import invalid_input


class HumanLoopNotFound(NotFound):
    code = "human_loop_not_found"


class HumanLoops:
    """Set, read and remove endpoints' human loops; store first, then announce."""

    def __init__(self, store: ObjectStore, publish: Publish) -> None:
        self.publish = publish
        self.documents = DocumentStore(
            store, HumanLoopConfigView, state_spec(HumanLoopConfigView).prefix
        )

    def get(self, endpoint_name: str) -> HumanLoopConfigView:
        found = self.documents.get_or_none(f"{endpoint_name}.json")
        if found is None or found.doc.config is None:
            raise HumanLoopNotFound(
                f"endpoint {endpoint_name!r} has no human loop", endpoint_name=endpoint_name
            )
        return found.doc

    async def put(self, endpoint_name: str, config: HumanLoopConfig | None) -> HumanLoopConfigView:
        """Store the next revision (config None: removed) and announce it."""

        def next_revision(current: HumanLoopConfigView | None) -> HumanLoopConfigView:
            return HumanLoopConfigView(
                endpoint_name=endpoint_name,
                revision=(current.revision + 1) if current else 1,
                config=config,
                updated_at=datetime.now(UTC),
            )

        stored = await asyncio.to_thread(
            self.documents.update, f"{endpoint_name}.json", next_revision
        )
        view = stored.doc
        await self.publish(
            HumanLoopConfigured(endpoint_name=endpoint_name, revision=view.revision, config=config)
        )
        return view


def get_human_loops(request: Request) -> HumanLoops:
    """Built once per app from the deployer's store and publisher."""
    loops: HumanLoops | None = getattr(request.app.state, "human_loops", None)
    if loops is None:
        deployer: Deployer = request.app.state.deployer
        loops = HumanLoops(deployer.store, deployer.publish)
        request.app.state.human_loops = loops
    return loops


def get_deployer(request: Request) -> Deployer:
    deployer: Deployer = request.app.state.deployer
    return deployer


LoopsDep = Annotated[HumanLoops, Depends(get_human_loops)]
DeployerDep = Annotated[Deployer, Depends(get_deployer)]

router = APIRouter(prefix="/endpoints", tags=["human-loop"])


@router.get("/{name}/human-loop", dependencies=[requires("read")])
async def get_human_loop(name: str, loops: LoopsDep) -> HumanLoopConfigView:
    return await asyncio.to_thread(loops.get, name)


@router.put("/{name}/human-loop", dependencies=[requires("deploy", action="human_loop.put")])
async def put_human_loop(
    name: str, body: Annotated[dict[str, Any], Body()], loops: LoopsDep, deployer: DeployerDep
) -> HumanLoopConfigView:
    """Set the loop (a `HumanLoopConfig`) of a live endpoint (404 otherwise); the gateway applies
    it at once. A bad config is a 400 naming each bad field, like CreateFlowDefinition's."""
    try:
        config = HumanLoopConfig.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc) from exc
    await asyncio.to_thread(deployer.get_endpoint, name)
    return await loops.put(name, config)


@router.delete("/{name}/human-loop", dependencies=[requires("deploy", action="human_loop.delete")])
async def delete_human_loop(name: str, loops: LoopsDep) -> HumanLoopConfigView:
    await asyncio.to_thread(loops.get, name)  # 404 when there is none
    return await loops.put(name, None)
