"""What a credential may do: the scopes, and what each one means.

`admin` implies every other scope. `invoke` can be narrowed to named endpoints. A route that
declares no scope needs `admin` (deny by default), so a forgotten declaration fails closed.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Scope = Literal["read", "invoke", "train", "deploy", "approve", "label", "data", "device", "admin"]

SCOPES: Final[tuple[str, ...]] = get_args(Scope)
ADMIN: Final = "admin"
ALL_ENDPOINTS: Final = "*"

SCOPE_MEANINGS: Final[dict[str, str]] = {
    "read": "list and describe anything on the control plane",
    "invoke": "call endpoints on the gateway (all, or the endpoints named on the key)",
    "train": "start and stop training and tuning jobs",
    "deploy": "create, update, weight and delete endpoints and monitoring schedules",
    "approve": "approve or reject model versions; tags and aliases",
    "label": "labeling jobs and human review",
    "data": "upload and register datasets; feature groups and records",
    "device": "an edge device agent: its own desired state, heartbeats, downloads and captures",
    "admin": "everything, including keys and the audit trail",
}


def is_scope(value: str) -> bool:
    return value in SCOPES
