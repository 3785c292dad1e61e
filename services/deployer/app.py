"""Wiring of the deployer: one `Deployer` behind its subscribers, routes and rollout driver."""

from __future__ import annotations

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.deployer.autoscaling import VariantScaler
from services.deployer.config import DeployerSettings
from services.deployer.handlers import Deployer
from services.deployer.human_loop import router as human_loop_router
from services.deployer.routes import ROUTERS
from services.deployer.scaling_routes import router as scaling_router


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: DeployerSettings | None = None,
) -> Service:
    """The deployer service: subscriptions, HTTP routes and the rollout driver."""
    config = config or DeployerSettings()
    service = Service("deployer", settings=settings, store=store)
    deployer = Deployer(
        service.store, service.publish, config, authority=service, dead_letter=service.dead_letter
    )
    service.api.state.deployer = deployer
    scaler = VariantScaler(deployer, window_s=config.scaling_window_s, tick_s=config.scaling_tick_s)
    service.api.state.scaler = scaler

    async def on_metrics(envelope: Envelope[EndpointMetricsReported]) -> None:
        scaler.observe(envelope)  # every report counts, with or without a rollout
        await deployer.on_metrics(envelope)

    group = config.consumer_group
    service.on(DeploymentRequested, group=f"{group}.deployment-requested")(
        deployer.on_deployment_requested
    )
    service.on(ModelPackageRegistered, group=f"{group}.model-package-registered")(
        deployer.on_model_registered
    )
    service.on(ModelApprovalChanged, group=f"{group}.model-approval-changed")(
        deployer.on_approval_changed
    )
    service.on(EndpointMetricsReported, group=f"{group}.endpoint-metrics-reported")(on_metrics)
    for router in ROUTERS:
        service.include_router(router)
    service.include_router(human_loop_router)
    service.include_router(scaling_router)
    service.background("deployer-rollouts", deployer.run_rollouts)
    service.background("deployer-scaling", scaler.run)
    return service


__getattr__ = lazy_service(create_service)
