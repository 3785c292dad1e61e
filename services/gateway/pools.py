"""The gateway's async worker pool, declared by the gateway for the autoscaler to size.

Its members form the `cairn.gateway.async-workers` group on `AsyncInferenceRequested`; each runs
`python -m services.gateway` with `CAIRN_GATEWAY_ROLE=worker` (async requests, nothing else).
A gateway in role `all` is a member too, so the pool wakes only once a backlog builds; behind
gateways in role `serve` the first queued request starts a worker. Either way the pool goes
back to zero once the queue is empty.
"""

from __future__ import annotations

from cairn.contracts.state import WorkerPoolDeclaration

ASYNC_GROUP = "cairn.gateway.async-workers"
# A member holds a request for up to InvocationTimeoutSeconds (1 h at most) plus a model load.
ASYNC_MAX_HOLD_MS = (3600 + 600) * 1000

ASYNC_POOL = WorkerPoolDeclaration(
    name="gateway-async",
    service="gateway",
    module="services.gateway",
    group_id=ASYNC_GROUP,
    event_types=["AsyncInferenceRequested"],
    lag_threshold=8,
    activation_lag_threshold=0,
    min_replicas=0,
    max_replicas=3,
    polling_interval_s=2.0,
    scale_down_cooldown_s=60.0,
    env={"CAIRN_GATEWAY_ROLE": "worker"},
)


def async_pool(gateway_is_member: bool) -> WorkerPoolDeclaration:
    """The pool as a gateway declares it: with gateways in the group, only a backlog wakes it."""
    return ASYNC_POOL.model_copy(update={"activation_lag_threshold": 8 if gateway_is_member else 0})
