"""Wiring of the deployer: one `Deployer` behind its subscribers, routes and rollout driver."""

from __future__ import annotations

from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.deployer.config import DeployerSettings
from services.deployer.handlers import Deployer
from services.deployer.human_loop import router as human_loop_router
from services.deployer.routes import ROUTERS


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
    service.on(EndpointMetricsReported, group=f"{group}.endpoint-metrics-reported")(
        deployer.on_metrics
    )
    for router in ROUTERS:
        service.include_router(router)
    service.include_router(human_loop_router)
    service.background("deployer-rollouts", deployer.run_rollouts)
    return service


__getattr__ = lazy_service(create_service)
