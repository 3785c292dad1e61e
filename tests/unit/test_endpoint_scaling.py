"""Scaling per variant: the policy's validation, the target-tracking decision, the deployer's
scaling loop on reported traffic, its HTTP API, and the gateway's process pool arithmetic."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cairn.audit import list_audit_records
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    VariantSpec,
    VariantTraffic,
)
from cairn.contracts.scaling_events import EndpointVariantScaled
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from pydantic import ValidationError

from services.deployer.app import create_service
from services.deployer.autoscaling import VariantScaler
from services.deployer.config import DeployerSettings
from services.deployer.handlers import Deployer
from services.deployer.scaling import Reading, ScalingPolicy, TrafficWindow, decide
from services.gateway.instances import (
    GatewayProcesses,
    max_processes,
    pool_size,
    shared_socket,
)
from tests.support.auth import admin_headers, auth_settings, scoped_headers
from tests.unit.test_deployer_handlers import Clock, Recorder, envelope, known

POLICY = ScalingPolicy(
    target_invocations_per_instance=60,
    min_capacity=1,
    max_capacity=4,
    scale_in_cooldown_s=30,
    scale_out_cooldown_s=10,
)


def test_a_policy_refuses_inverted_bounds_and_negative_values_naming_the_field() -> None:
    with pytest.raises(ValidationError) as inverted:
        ScalingPolicy(target_invocations_per_instance=5, min_capacity=3, max_capacity=2)
    assert [e["loc"] for e in inverted.value.errors()] == [("max_capacity",)]
    assert "below min_capacity 3" in str(inverted.value)
    for field, value in [
        ("target_invocations_per_instance", 0),
        ("min_capacity", -1),
        ("scale_in_cooldown_s", -5),
        ("scale_out_cooldown_s", float("inf")),
    ]:
        body: dict[str, Any] = {"target_invocations_per_instance": 5, field: value}
        with pytest.raises(ValidationError) as refused:
            ScalingPolicy.model_validate(body)
        assert refused.value.errors()[0]["loc"] == (field,)
    assert ScalingPolicy(target_invocations_per_instance=1, min_capacity=0).min_capacity == 0


def reading(per_minute: float, covered_s: float = 60) -> Reading:
    return Reading(per_minute, covered_s)


@pytest.mark.parametrize(
    ("current", "per_minute", "covered", "since_out", "since_any", "target", "why"),
    [
        (1, 150, 60, None, None, 3, "scale out to 3"),  # ceil(150 / 60)
        (1, 1000, 60, None, None, 4, "bounded to [1, 4]"),
        (1, 150, 60, 5, 5, 1, "in scale-out cooldown"),
        (2, 150, 60, 5, 5, 3, "scale out to 3"),  # scale-out cooldown only gates out... after out
        (3, 30, 60, None, 40, 1, "scale in to 1"),
        (3, 30, 60, None, 10, 3, "in scale-in cooldown"),
        (3, 30, 20, None, None, 3, "too few readings"),
        (2, 120, 60, None, None, 2, "steady"),
        (0, 1, 60, None, None, 1, "cold start"),
    ],
)
def test_target_tracking_decides_from_invocations_per_instance(
    current: int,
    per_minute: float,
    covered: float,
    since_out: float | None,
    since_any: float | None,
    target: int,
    why: str,
) -> None:
    decision = decide(
        POLICY,
        current=current,
        reading=reading(per_minute, covered),
        window_s=60,
        since_scale_out_s=since_out if current != 2 else 20,
        since_activity_s=since_any,
    )
    assert decision.target == target, decision.reason
    assert why in decision.reason


def test_a_serverless_variant_idles_to_zero_and_wakes_to_its_minimum() -> None:
    serverless = POLICY.model_copy(update={"min_capacity": 0, "max_capacity": 2})
    idle = decide(
        serverless,
        current=1,
        reading=reading(0),
        window_s=60,
        since_scale_out_s=None,
        since_activity_s=None,
    )
    assert (idle.target, idle.invocations_per_instance) == (0, 0)
    woken = decide(
        serverless,
        current=0,
        reading=reading(0.5),
        window_s=60,
        since_scale_out_s=1,  # a cold start is never held by the scale-out cooldown...
        since_activity_s=1,
    )
    assert woken.target == 0  # ...unless it is in one: it was just scaled out
    woken = decide(
        serverless,
        current=0,
        reading=reading(0.5),
        window_s=60,
        since_scale_out_s=None,
        since_activity_s=1,
    )
    assert woken.target == 1 and "cold start" in woken.reason


def test_the_traffic_window_forgets_old_reports_and_says_what_it_covers() -> None:
    window = TrafficWindow(10, started_at=100)
    window.add(101, 30)
    window.add(109, 20)
    assert window.reading(105) == Reading(300, 5)  # 50 in 10 s: 300 a minute; 5 s seen
    assert window.reading(115) == Reading(120, 10)  # the first report left the window


def test_the_gateway_pool_follows_the_largest_instance_count_within_the_cores() -> None:
    assert pool_size([], 4) == 1
    assert pool_size([0, 0], 4) == 1  # the primary stays for the cold starts
    assert pool_size([1, 3, 2], 4) == 3
    assert pool_size([8], 2) == 2


def test_gateway_processes_share_one_port_and_follow_the_desired_size() -> None:
    first = shared_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = shared_socket("127.0.0.1", port)  # SO_REUSEPORT: a second process binds it too
    for sock in (first, second):
        sock.listen()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    first.close()
    second.close()
    desired = [3]
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    processes = GatewayProcesses(lambda: desired[0], port=port, role="all", command=sleeper)
    try:
        processes.reconcile()
        assert sorted(processes.children) == [1, 2]
        assert processes.role == "serve"  # async consumers stay with the primary
        desired[0] = 1
        processes.reconcile()
        assert processes.children == {} and len(processes.stopping) == 2
    finally:
        processes.stop(timeout_s=10)
    assert processes.stopping == []


# The deployer's loop --------------------------------------------------------------------------


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(endpoint: str, requests: int) -> Any:
    traffic = VariantTraffic(
        variant_name="main", requests=requests, errors=0, p50_latency_ms=1, p99_latency_ms=2
    )
    return envelope(EndpointMetricsReported(endpoint_name=endpoint, window_s=5, variants=[traffic]))


async def test_the_scaler_scales_out_under_traffic_and_back_in_after_the_cooldown() -> None:
    store, recorder, clock, ticks = InMemoryObjectStore("scaling"), Recorder(), Clock(), Monotonic()
    deployer = Deployer(store, cast(Any, recorder), DeployerSettings(), clock)
    scaler = VariantScaler(deployer, window_s=60, tick_s=1, monotonic=ticks)
    await known(deployer, 1)
    spec = VariantSpec(variant_name="main", model_package_group="credit", model_version=1)
    request = DeploymentRequested(endpoint_name="ep", action="create", production_variants=[spec])
    await deployer.deploy(request)
    await scaler.put_policy("ep", "main", POLICY.model_copy(update={"scale_in_cooldown_s": 120}))

    scaler.observe(report("ep", 250))  # 250 a minute at a target of 60: 5, capped at 4
    await scaler.tick()
    assert deployer.get_endpoint("ep").production_variants[0].instance_count == 4
    scaled = [e for e in recorder.events if isinstance(e, EndpointVariantScaled)]
    assert [(e.from_instances, e.to_instances) for e in scaled] == [(1, 4)]
    assert recorder.updates("ep")[-1].production_variants[0].instance_count == 4

    ticks.now += 61  # the traffic left the window and a whole window was seen...
    await scaler.tick()
    assert deployer.get_endpoint("ep").production_variants[0].instance_count == 4  # ...cooldown
    clock.now += timedelta(seconds=121)
    await scaler.tick()
    doc = deployer.get_endpoint("ep")
    assert doc.production_variants[0].instance_count == 1
    assert [(a.from_instances, a.to_instances) for a in doc.scaling_activities] == [(1, 4), (4, 1)]
    assert "scale in to 1" in doc.scaling_activities[-1].reason


# The HTTP API ---------------------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Deployer, CairnSettings]]:
    store = InMemoryObjectStore("scaling-api")
    settings = auth_settings(home=tmp_path)
    service = create_service(settings=settings, store=store)
    deployer: Deployer = service.api.state.deployer
    deployer.publish = cast(Any, Recorder())
    await known(deployer, 1)
    spec = VariantSpec(variant_name="main", model_package_group="credit", model_version=1)
    await deployer.deploy(
        DeploymentRequested(endpoint_name="ep", action="create", production_variants=[spec])
    )
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://deployer", headers=headers
    ) as client:
        yield client, deployer, settings


async def test_the_policy_api_validates_audits_and_shows_the_policy(
    api: tuple[httpx.AsyncClient, Deployer, CairnSettings],
) -> None:
    client, deployer, settings = api
    path = "/endpoints/ep/variants/main/scaling-policy"
    good = {"target_invocations_per_instance": 100, "min_capacity": 0, "max_capacity": 2}
    refusals = [
        (path, {**good, "min_capacity": 3}, '"field":"max_capacity"'),
        (path, {**good, "min_capacity": -1}, '"field":"min_capacity"'),
        (path, {**good, "scale_in_cooldown_s": -1}, '"field":"scale_in_cooldown_s"'),
        (path, {**good, "target": 5}, '"field":"target"'),
        (path, [1, 2], '"field":"<root>"'),
        ("/endpoints/ep/variants/nope/scaling-policy", good, "variant_name"),
    ]
    for where, body, field in refusals:
        answer = await client.put(where, json=body)
        assert answer.status_code == 400, answer.text
        assert field in answer.text, answer.text
    missing = await client.put("/endpoints/none/variants/main/scaling-policy", json=good)
    assert missing.status_code == 404
    reader = scoped_headers(deployer.store, settings, ["read"], name="reader")
    assert (await client.put(path, json=good, headers=reader)).status_code == 403

    put = await client.put(path, json=good)
    assert put.status_code == 200, put.text
    shown = (await client.get("/endpoints/ep/scaling", headers=reader)).json()
    assert shown["variants"][0]["policy"]["max_capacity"] == 2
    assert shown["variants"][0]["instance_count"] == 1 and shown["activities"] == []
    actions = [r.action for r in list_audit_records(deployer.store)]
    assert "endpoint.scaling_policy.put" in actions
    assert (await client.delete(path)).json()["variants"][0]["policy"] is None
    assert (await client.delete(path)).status_code == 400  # no policy left to delete


def test_the_pool_cap_is_the_cores_within_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    assert max_processes(3, cpu_max) == 3  # configured
    cpu_max.write_text("150000 100000\n")  # 1.5 cores of quota: 2 processes
    assert max_processes(0, cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert max_processes(0, cpu_max) == len(os.sched_getaffinity(0))


async def test_answers_on_the_shared_socket_are_not_held_back_by_nagle() -> None:
    """asyncio sets TCP_NODELAY only on TCP-protocol sockets: without it a small answer waits
    for the client's delayed ACK (~40 ms a request)."""
    sock = shared_socket("127.0.0.1", 0)
    nodelay: list[int] = []
    seen = asyncio.Event()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        nodelay.append(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        seen.set()
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        await asyncio.wait_for(seen.wait(), timeout=30)
        writer.close()
    assert nodelay[0] != 0
