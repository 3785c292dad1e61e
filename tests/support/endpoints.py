"""An endpoint's stored state as the deployer leaves it: what a gateway loads at start-up."""

from __future__ import annotations

from cairn.contracts.events import VariantState
from cairn.contracts.state import EndpointStateView, write_state
from cairn.store.base import ObjectStore


def store_endpoint(
    store: ObjectStore,
    endpoint: str,
    artifact_uri: str,
    *,
    variant: str = "AllTraffic",
    instance_count: int = 1,
) -> None:
    """One in-service variant serving the package at `artifact_uri`, revision 1."""
    state = VariantState(
        variant_name=variant,
        model_package_group=endpoint,
        model_version=1,
        artifact_uri=artifact_uri,
        weight=1.0,
        instance_count=instance_count,
    )
    view = EndpointStateView(
        endpoint_name=endpoint, revision=1, status="InService", production_variants=[state]
    )
    write_state(store, view, endpoint)
