"""Scaling per variant on the real broker and S3 server: the deployer's target-tracking policy
moves a variant's instance count on the gateway's reported invocations (out under load, back in
when it stops), and a serverless variant (min 0) idles to zero, is unloaded, and cold-starts on
its next request, which is answered.

Load is invocations sent until the deployer's scaling view changes (the sentinel); the policies'
cooldowns and the deployer's window are short so the whole module takes seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from cairn.bus import tail_events
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import ModelPackageRegistered
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store

from services.deployer.app import create_service as create_deployer
from services.deployer.config import DeployerSettings
from services.deployer.handlers import Deployer
from services.gateway.app import create_service as create_gateway
from services.gateway.config import GatewaySettings
from tests.support.auth import admin_headers, auth_settings
from tests.support.http_server import served_in_thread
from tests.support.tansu import unique_name
from tests.unit.test_deployer_handlers import envelope
from tests.unit.test_gateway_payloads import ROWS, make_package

pytestmark = pytest.mark.integration

WAIT_S = 30.0
GROUP = "scaled"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS)
T = TypeVar("T")


@dataclass
class Platform:
    deployer: httpx.AsyncClient
    gateway: httpx.AsyncClient
    settings: CairnSettings


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("scaling-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://scaling-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
    )


@pytest.fixture(scope="module")
def urls(settings: CairnSettings) -> Iterator[tuple[str, str, ObjectStore]]:
    store = open_store(settings=settings)
    uri = make_package(store, "models/scaling-1/", seed=1, trees=5)
    config = DeployerSettings(
        consumer_group=unique_name("cairn.deployer"), scaling_tick_s=0.2, scaling_window_s=2.0
    )
    deployer = create_deployer(settings, store, config)
    registered = ModelPackageRegistered(
        model_package_group=GROUP, version=1, artifact_uri=uri, approval_status="Approved"
    )
    asyncio.run(_register(deployer.api.state.deployer, registered))
    gateway = create_gateway(
        settings, store, GatewaySettings(metrics_report_s=0.2, capture_sample_rate=0)
    )
    with (
        served_in_thread(deployer.asgi, "the deployer", timeout_s=WAIT_S) as deployer_url,
        served_in_thread(gateway.asgi, "the gateway", timeout_s=WAIT_S) as gateway_url,
    ):
        yield deployer_url, gateway_url, store


async def _register(deployer: Deployer, event: ModelPackageRegistered) -> None:
    await deployer.on_model_registered(envelope(event))


@pytest.fixture
async def platform(
    urls: tuple[str, str, ObjectStore], settings: CairnSettings
) -> AsyncIterator[Platform]:
    deployer_url, gateway_url, store = urls
    headers = admin_headers(store, settings)
    async with (
        httpx.AsyncClient(base_url=deployer_url, headers=headers, timeout=10) as deployer,
        httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=30) as gateway,
    ):
        yield Platform(deployer, gateway, settings)


async def until(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout_s: float = WAIT_S
) -> T:
    """Poll `probe` until it returns something (a hang guard, never a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def create_endpoint(platform: Platform) -> str:
    name = unique_name("scaled")
    variant = {"variant_name": "main", "model_package_group": GROUP, "model_version": 1}
    created = await platform.deployer.post(
        "/endpoints", json={"endpoint_name": name, "production_variants": [variant]}
    )
    assert created.status_code == 201, created.text
    await until(f"the gateway to serve {name}", lambda: gateway_view(platform, name))
    return name


async def gateway_view(platform: Platform, name: str) -> dict[str, Any] | None:
    listed = (await platform.gateway.get("/endpoints")).json()
    return next((e for e in listed if e["endpoint_name"] == name), None)


async def instances(platform: Platform, name: str) -> int:
    view = (await platform.deployer.get(f"/endpoints/{name}/scaling")).json()
    count: int = view["variants"][0]["instance_count"]
    return count


async def invoke(platform: Platform, name: str) -> httpx.Response:
    return await platform.gateway.post(
        f"/endpoints/{name}/invocations", content=CSV_BODY, headers={"Content-Type": "text/csv"}
    )


async def scaled_event(platform: Platform, name: str, event_type: str, match: Any) -> Any:
    async def follow() -> Any:
        async for item in tail_events(platform.settings, [event_type], from_beginning=True):
            event = item.event
            if isinstance(event, Envelope) and event.data.endpoint_name == name and match(event):
                return event.data
        return None

    return await asyncio.wait_for(follow(), WAIT_S)


async def test_a_policy_scales_a_variant_out_under_load_and_back_in(platform: Platform) -> None:
    name = await create_endpoint(platform)
    policy = {
        "target_invocations_per_instance": 60,  # one a second per instance
        "min_capacity": 1,
        "max_capacity": 2,
        "scale_out_cooldown_s": 0,
        "scale_in_cooldown_s": 0.5,
    }
    path = f"/endpoints/{name}/variants/main/scaling-policy"
    put = await platform.deployer.put(path, json=policy)
    assert put.status_code == 200, put.text

    async def loaded() -> int | None:
        for _ in range(5):
            assert (await invoke(platform, name)).status_code == 200
        return 2 if await instances(platform, name) == 2 else None

    await until("a scale-out under load", loaded)

    async def applied() -> bool | None:
        view = await gateway_view(platform, name)
        return True if view and view["production_variants"][0]["instance_count"] == 2 else None

    await until("the gateway to apply 2 instances", applied)

    async def idle() -> int | None:  # no more invocations: the rate falls out of the window
        return 1 if await instances(platform, name) == 1 else None

    await until("a scale-in once the load stopped", idle)
    history = (await platform.deployer.get(f"/endpoints/{name}/scaling")).json()["activities"]
    assert [(a["from_instances"], a["to_instances"]) for a in history] == [(2, 1), (1, 2)]
    assert "scale in to 1" in history[0]["reason"] and "scale out to 2" in history[1]["reason"]
    scaled_in = await scaled_event(
        platform, name, "EndpointVariantScaled", lambda e: e.data.to_instances == 1
    )
    assert scaled_in.from_instances == 2 and scaled_in.reason == history[0]["reason"]


@pytest.mark.parametrize("protocol", ["sagemaker", "kserve-v1"])
async def test_a_serverless_variant_idles_to_zero_and_cold_starts_on_a_request(
    platform: Platform, protocol: str
) -> None:
    """An invocation of a variant at 0 instances loads it, then is answered: SageMaker's
    InvokeEndpoint as Serverless Inference does, and KServe's v1 predict as its activator does."""
    name = await create_endpoint(platform)
    policy = {
        "target_invocations_per_instance": 60,
        "min_capacity": 0,
        "max_capacity": 1,
        "scale_out_cooldown_s": 0,
        "scale_in_cooldown_s": 0.3,
    }
    path = f"/endpoints/{name}/variants/main/scaling-policy"
    put = await platform.deployer.put(path, json=policy)
    assert put.status_code == 200, put.text

    async def unloaded() -> dict[str, Any] | None:
        view = await gateway_view(platform, name)
        return view if view and view.get("scaled_to_zero") == ["main"] else None

    await until("the idle variant to scale to zero", unloaded)
    assert await instances(platform, name) == 0

    if protocol == "sagemaker":  # the cold start: load, then answer
        answer = await invoke(platform, name)
        assert answer.status_code == 200, answer.text
        assert len(answer.text.strip().splitlines()) == len(ROWS)
    else:
        answer = await platform.gateway.post(
            f"/v1/models/{name}:predict", json={"instances": [list(row) for row in ROWS]}
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == len(ROWS)
    cold = await scaled_event(platform, name, "EndpointColdStarted", lambda e: True)
    assert cold.variants == ["main"] and cold.cold_start_s > 0
    metrics = (await platform.gateway.get("/metrics")).text
    assert f'cairn_gateway_cold_start_seconds_count{{endpoint="{name}"}} 1.0' in metrics

    async def woken() -> int | None:  # the invocation it answered scales the variant out
        return 1 if await instances(platform, name) == 1 else None

    await until("the deployer to scale the woken variant out", woken)
    history = (await platform.deployer.get(f"/endpoints/{name}/scaling")).json()["activities"]
    assert "cold start" in history[0]["reason"], history
