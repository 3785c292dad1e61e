"""Human review of live predictions (Augmented AI): endpoints' human loops and the review queue.

A human loop lives on the deployer (`PUT /endpoints/{name}/human-loop`); review tasks on the
labeling service (`/reviews`). Functions take any `ServiceCaller` (a `Client`); `ReviewCalls`
offers them as methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

LABELING: ServiceName = "labeling"
DEPLOYER: ServiceName = "deployer"


def put_human_loop(
    caller: ServiceCaller, endpoint_name: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    """Set an endpoint's human loop (a `HumanLoopConfig`: labels, activation conditions,
    random_sampling_percentage); a bad config is a 400 naming the field."""
    return dict(
        caller._json("PUT", DEPLOYER, f"/endpoints/{endpoint_name}/human-loop", json=dict(config))
    )


def describe_human_loop(caller: ServiceCaller, endpoint_name: str) -> dict[str, Any]:
    return dict(caller._json("GET", DEPLOYER, f"/endpoints/{endpoint_name}/human-loop"))


def delete_human_loop(caller: ServiceCaller, endpoint_name: str) -> dict[str, Any]:
    return dict(caller._json("DELETE", DEPLOYER, f"/endpoints/{endpoint_name}/human-loop"))


def list_reviews(
    caller: ServiceCaller,
    *,
    status: str | None = None,
    endpoint_name: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Review tasks, oldest first (`status`: Pending or Completed), without their payloads."""
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if endpoint_name is not None:
        params["endpoint_name"] = endpoint_name
    return list(caller._json("GET", LABELING, "/reviews", params=params))


def describe_review(caller: ServiceCaller, review_id: str) -> dict[str, Any]:
    """One task: the captured request and answer, why it was sent, and its answer if any."""
    return dict(caller._json("GET", LABELING, f"/reviews/{review_id}"))


def claim_review(
    caller: ServiceCaller, review_id: str | None = None, *, endpoint_name: str | None = None
) -> dict[str, Any] | None:
    """Lease a task to the caller: that one, or the oldest waiting (None when none waits)."""
    if review_id is not None:
        return dict(caller._json("POST", LABELING, f"/reviews/{review_id}/claim"))
    found = caller._json("POST", LABELING, "/reviews/claim", json={"endpoint_name": endpoint_name})
    return dict(found) if found is not None else None


def answer_review(caller: ServiceCaller, review_id: str, labels: Sequence[str]) -> dict[str, Any]:
    """Answer a task you hold: one label per row of the request. It becomes ground truth."""
    body = {"labels": list(labels)}
    return dict(caller._json("POST", LABELING, f"/reviews/{review_id}/answer", json=body))


class ReviewCalls(ServiceCaller):
    """Human loops (deployer) and the review queue (labeling) as `Client` methods."""

    def put_human_loop(self, endpoint_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return put_human_loop(self, endpoint_name, config)

    def describe_human_loop(self, endpoint_name: str) -> dict[str, Any]:
        return describe_human_loop(self, endpoint_name)

    def delete_human_loop(self, endpoint_name: str) -> dict[str, Any]:
        return delete_human_loop(self, endpoint_name)

    def list_reviews(
        self, *, status: str | None = None, endpoint_name: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return list_reviews(self, status=status, endpoint_name=endpoint_name, limit=limit)

    def describe_review(self, review_id: str) -> dict[str, Any]:
        return describe_review(self, review_id)

    def claim_review(
        self, review_id: str | None = None, *, endpoint_name: str | None = None
    ) -> dict[str, Any] | None:
        return claim_review(self, review_id, endpoint_name=endpoint_name)

    def answer_review(self, review_id: str, labels: Sequence[str]) -> dict[str, Any]:
        return answer_review(self, review_id, labels)
