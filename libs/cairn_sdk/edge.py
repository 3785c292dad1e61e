"""Edge fleets: fleets and devices, packaging jobs and staged deployment plans (the edge service).

Functions take any `ServiceCaller` (a `Client`); `EdgeCalls` offers them as methods for `Client`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cairn.errors import Unavailable

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import ServiceName

EDGE: ServiceName = "edge"
TERMINAL_PLAN_STATUSES = frozenset({"Completed", "Failed", "RolledBack"})
TERMINAL_PACKAGE_STATUSES = frozenset({"Completed", "Failed"})


def create_fleet(caller: ServiceCaller, name: str, description: str = "") -> dict[str, Any]:
    body = {"fleet_name": name, "description": description}
    return dict(caller._json("POST", EDGE, "/fleets", json=body))


def list_fleets(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", EDGE, "/fleets")["fleets"])


def describe_fleet(caller: ServiceCaller, name: str) -> dict[str, Any]:
    return dict(caller._json("GET", EDGE, f"/fleets/{name}"))


def register_device(caller: ServiceCaller, fleet: str, device: str) -> dict[str, Any]:
    """The device's credential (`token`, shown once) and the fleet's public key."""
    body = {"device_name": device}
    return dict(caller._json("POST", EDGE, f"/fleets/{fleet}/devices", json=body))


def list_devices(caller: ServiceCaller, fleet: str) -> list[dict[str, Any]]:
    return list(caller._json("GET", EDGE, f"/fleets/{fleet}/devices")["devices"])


def describe_device(caller: ServiceCaller, fleet: str, device: str) -> dict[str, Any]:
    return dict(caller._json("GET", EDGE, f"/fleets/{fleet}/devices/{device}"))


def deregister_device(caller: ServiceCaller, fleet: str, device: str) -> dict[str, Any]:
    return dict(caller._json("DELETE", EDGE, f"/fleets/{fleet}/devices/{device}"))


def create_package(
    caller: ServiceCaller,
    group: str,
    version: int,
    *,
    target: str = "linux-x86_64",
    package_format: str | None = None,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Start a packaging job (422 when the model cannot be compiled for the target)."""
    body = {
        "model_package_group": group,
        "model_version": version,
        "target": target,
        "format": package_format,
        "tolerance": tolerance,
    }
    return dict(caller._json("POST", EDGE, "/packages", json=body))


def describe_package(caller: ServiceCaller, name: str) -> dict[str, Any]:
    return dict(caller._json("GET", EDGE, f"/packages/{name}"))


def list_packages(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", EDGE, "/packages")["packages"])


def create_deployment(
    caller: ServiceCaller,
    plan_name: str,
    fleet: str,
    package: str,
    stages: Sequence[str],
    *,
    success_threshold_pct: float = 100.0,
    max_failures: str = "0",
    bake_s: float = 60.0,
    stage_deadline_s: float = 900.0,
    gates: Sequence[str] = (),
    on_failure: str = "ROLLBACK_ON_FAILURE",
) -> dict[str, Any]:
    """Start a staged rollout.

    Args:
        stages: `NAME=devices:d1,d2` or `NAME=percent:25`, each optionally with `:bake=SECONDS`
            (default `bake_s`).
        gates: `error-rate[:0.05]`, `latency[:100]` (p99 ms) or `drift[:0.05[:100]]`: the
            stage's captured rows against the model's training data (KS / chi-squared per
            input at that p-value level, Bonferroni across inputs), judged once the stage has
            that many rows after its bake.
    """
    body = {
        "plan_name": plan_name,
        "fleet_name": fleet,
        "package_name": package,
        "stages": list(stages),
        "success_threshold_pct": success_threshold_pct,
        "max_failures": max_failures,
        "bake_s": bake_s,
        "stage_deadline_s": stage_deadline_s,
        "gates": list(gates),
        "on_failure": on_failure,
    }
    return dict(caller._json("POST", EDGE, "/deployments", json=body))


def describe_deployment(caller: ServiceCaller, name: str) -> dict[str, Any]:
    return dict(caller._json("GET", EDGE, f"/deployments/{name}"))


def list_deployments(caller: ServiceCaller) -> list[dict[str, Any]]:
    return list(caller._json("GET", EDGE, "/deployments")["deployments"])


def change_deployment(
    caller: ServiceCaller, name: str, verb: str, reason: str = ""
) -> dict[str, Any]:
    """`pause`, `resume` or `rollback` a plan."""
    body = {"reason": reason} if verb == "rollback" else None
    return dict(caller._json("POST", EDGE, f"/deployments/{name}/{verb}", json=body))


def wait_for(
    caller: ServiceCaller,
    path: str,
    terminal: frozenset[str],
    *,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Poll an edge resource until its status is terminal (waiting out edge restarts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = dict(caller._json_through_restarts("GET", EDGE, path))
        if on_poll is not None:
            on_poll(found)
        if found["status"] in terminal:
            return found
        if time.monotonic() > deadline:
            raise Unavailable(f"{path} is still {found['status']} after {timeout_s:.0f}s")
        time.sleep(poll_s)


class EdgeCalls(ServiceCaller):
    """The edge verbs as `Client` methods."""

    def create_fleet(self, name: str, description: str = "") -> dict[str, Any]:
        return create_fleet(self, name, description)

    def register_device(self, fleet: str, device: str) -> dict[str, Any]:
        return register_device(self, fleet, device)

    def create_edge_package(self, group: str, version: int, **options: Any) -> dict[str, Any]:
        return create_package(self, group, version, **options)

    def wait_for_edge_package(self, name: str, **options: Any) -> dict[str, Any]:
        return wait_for(self, f"/packages/{name}", TERMINAL_PACKAGE_STATUSES, **options)

    def create_edge_deployment(
        self, plan_name: str, fleet: str, package: str, stages: Sequence[str], **options: Any
    ) -> dict[str, Any]:
        return create_deployment(self, plan_name, fleet, package, stages, **options)

    def wait_for_edge_deployment(self, name: str, **options: Any) -> dict[str, Any]:
        return wait_for(self, f"/deployments/{name}", TERMINAL_PLAN_STATUSES, **options)
