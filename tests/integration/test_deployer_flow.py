"""Registry + deployer on the real broker and S3 server: register -> approve -> auto-deploy,
canary completion and canary rollback, and bad or unsigned deployment requests dead-lettered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cairn.audit import list_audit_records
from cairn.bus import DLQ_REASON, EventProducer, TailedEvent, tail_events
from cairn.bus.publish import Signer
from cairn.contracts import spec_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    ModelPackageRegistered,
    RegistrationSpec,
    TrainingJobCompleted,
    VariantSpec,
    VariantTraffic,
)
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.deployer.app import create_service as create_deployer
from services.deployer.config import DeployerSettings
from services.registry.app import create_service as create_registry
from services.registry.config import RegistrySettings
from tests.integration.test_bus_kafka import read_topic
from tests.support.auth import admin_headers, scoped_headers, token_for
from tests.support.http_server import served
from tests.support.tansu import unique_name
from tests.unit.test_registry_handlers import write_manifest

pytestmark = pytest.mark.integration

WATCHED = [
    "ModelPackageRegistered",
    "ModelApprovalChanged",
    "EndpointUpdated",
    "DeploymentRolledBack",
]


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """Run the service's API (and through its lifespan, consumers and tasks) on a free port;
    the client holds an admin key unless a call passes other headers."""
    headers = admin_headers(service.store, service.settings)
    async with (
        served(service.api, service.name) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client,
    ):
        yield client


class Trail:
    """Every watched event seen on the bus since the test began, in arrival order."""

    def __init__(self, settings: CairnSettings) -> None:
        self.settings = settings
        self.events: list[Envelope[Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def _follow(self) -> None:
        item: TailedEvent
        async for item in tail_events(self.settings, WATCHED, from_beginning=True):
            if isinstance(item.event, Envelope):
                self.events.append(item.event)

    async def __aenter__(self) -> Trail:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(
        self, event_type: str, match: Callable[[Any], bool], timeout_s: float = 20
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            for envelope in self.events:
                if envelope.type == event_type and match(envelope.data):
                    return envelope.data
            if time.monotonic() > deadline:
                seen = [(e.type, e.data) for e in self.events[-10:]]
                raise AssertionError(f"no {event_type} matching; last seen: {seen}")
            await asyncio.sleep(0.05)


@pytest.fixture
def settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


def deployer_config() -> DeployerSettings:
    return DeployerSettings(
        consumer_group=unique_name("cairn.deployer"), rollout_tick_s=0.1, alarm_min_requests=20
    )


async def test_completed_job_is_registered_approved_and_auto_deployed(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    group_name, endpoint, job = unique_name("credit"), unique_name("ep"), unique_name("job")
    write_manifest(s3_store, f"models/{job}/", training_job=job)
    approver = scoped_headers(s3_store, settings, ["approve"], name="alice")
    registry = create_registry(
        settings, s3_store, RegistrySettings(consumer_group=unique_name("cairn.registry"))
    )
    deployer = create_deployer(settings, s3_store, deployer_config())

    async with (
        serving(registry) as registry_api,
        serving(deployer) as deployer_api,
        Trail(settings) as trail,
    ):
        policy = await deployer_api.put(
            f"/auto-deploy/{group_name}", json={"endpoint_name": endpoint}
        )
        assert policy.status_code == 200, policy.text
        async with EventProducer(settings, source="trainer") as producer:
            await producer.publish(
                TrainingJobCompleted(
                    job_name=job,
                    algorithm="xgboost",
                    artifact_uri=f"models/{job}/",
                    metrics={"validation:auc": 0.91},
                    device="cpu",
                    training_time_s=1,
                    total_time_s=2,
                    registration=RegistrationSpec(model_package_group=group_name),
                )
            )
        registered = await trail.wait_for(
            "ModelPackageRegistered", lambda d: d.model_package_group == group_name
        )
        assert (registered.version, registered.approval_status) == (1, "PendingManualApproval")
        assert (await deployer_api.get(f"/endpoints/{endpoint}")).status_code == 404

        approval = f"/model-package-groups/{group_name}/versions/1/approval"
        approved = await registry_api.post(
            approval, json={"status": "Approved", "reason": "AUC above bar"}, headers=approver
        )
        assert approved.status_code == 200, approved.text
        [record] = list_audit_records(s3_store, resource=approval)
        assert (record.principal, record.action, record.outcome) == (
            "alice",
            "model.approve",
            "success",
        )
        change = await trail.wait_for(
            "ModelApprovalChanged", lambda d: d.model_package_group == group_name
        )
        assert (change.approval_status, change.changed_by) == ("Approved", "alice")

        updated = await trail.wait_for("EndpointUpdated", lambda d: d.endpoint_name == endpoint)
        assert (updated.revision, updated.status) == (1, "InService")
        [variant] = updated.production_variants
        assert (variant.model_version, variant.artifact_uri) == (1, f"models/{job}/")
        described = await deployer_api.get(f"/endpoints/{endpoint}")
        assert described.json()["production_variants"][0]["artifact_uri"] == f"models/{job}/"

        # The registry learns the endpoint from EndpointUpdated: lineage end to end.
        deadline = time.monotonic() + 10
        while True:
            lineage = (
                await registry_api.get(f"/model-package-groups/{group_name}/versions/1/lineage")
            ).json()
            if lineage["endpoints"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert [e["endpoint_name"] for e in lineage["endpoints"]] == [endpoint]
        assert lineage["datasets"][0]["uri"] == "data/d/1"
        assert lineage["training_job"]["job_name"] == job


async def register_versions(settings: CairnSettings, group_name: str, count: int) -> None:
    """Publish what the registry would, so the deployer's projection knows the versions."""
    async with EventProducer(settings, source="registry") as producer:
        for version in range(1, count + 1):
            await producer.publish(
                ModelPackageRegistered(
                    model_package_group=group_name,
                    version=version,
                    artifact_uri=f"models/{group_name}-{version}/",
                    approval_status="Approved",
                )
            )


def variant(group_name: str, version: int) -> dict[str, Any]:
    return {"variant_name": "main", "model_package_group": group_name, "model_version": version}


async def when_known(
    send: Callable[[], Awaitable[httpx.Response]], expected: int
) -> httpx.Response:
    """`send` again while the projection has not caught up with the registrations yet."""
    deadline = time.monotonic() + 15
    while True:
        answer = await send()
        if answer.status_code == expected or time.monotonic() > deadline:
            break
        assert answer.json()["code"] == "model_version_unknown", answer.text
        await asyncio.sleep(0.1)
    assert answer.status_code == expected, answer.text
    return answer


async def known_but_unapproved(api: httpx.AsyncClient, group_name: str, version: int) -> None:
    """Wait until asking for `version` is refused as unapproved, no longer as unknown."""
    probe = {
        "endpoint_name": unique_name("probe"),
        "production_variants": [variant(group_name, version)],
    }
    deadline = time.monotonic() + 15
    while True:
        refused = await api.post("/endpoints", json=probe)
        assert refused.status_code in (400, 409), refused.text
        if refused.json()["code"] != "model_version_unknown" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert refused.json()["code"] != "model_version_unknown", refused.text


async def create_when_known(api: httpx.AsyncClient, endpoint: str, group_name: str) -> None:
    """POST the endpoint once the projection has caught up with the registrations."""
    body = {"endpoint_name": endpoint, "production_variants": [variant(group_name, 1)]}
    await when_known(lambda: api.post("/endpoints", json=body), 201)


async def test_canary_bakes_then_takes_all_traffic_and_a_failing_one_rolls_back(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    group_name, good, bad = unique_name("g"), unique_name("good"), unique_name("bad")
    deployer = create_deployer(settings, s3_store, deployer_config())
    async with serving(deployer) as api, Trail(settings) as trail:
        await register_versions(settings, group_name, 2)
        await create_when_known(api, good, group_name)
        await create_when_known(api, bad, group_name)

        quick = {"mode": "canary", "canary_percent": 20, "bake_time_s": 0.5}
        slow = {"mode": "canary", "canary_percent": 20, "bake_time_s": 30, "max_error_rate": 0.05}
        for endpoint, rollout in ((good, quick), (bad, slow)):
            body = {"production_variants": [variant(group_name, 2)], "rollout": rollout}
            started = await when_known(
                lambda endpoint=endpoint, body=body: api.put(f"/endpoints/{endpoint}", json=body),
                200,
            )
            weights = {
                v["variant_name"]: v["weight"] for v in started.json()["production_variants"]
            }
            assert weights == {"main": 0.2, "main-previous": 0.8}

        # Healthy canary: the background driver finishes it after the bake time.
        done = await trail.wait_for(
            "EndpointUpdated", lambda d: d.endpoint_name == good and d.revision == 3
        )
        assert done.status == "InService"
        assert [(v.variant_name, v.model_version, v.weight) for v in done.production_variants] == [
            ("main", 2, 1.0)
        ]

        # Failing canary: the gateway reports errors on the new variant during the bake.
        async with EventProducer(settings, source="gateway") as producer:
            await producer.publish(
                EndpointMetricsReported(
                    endpoint_name=bad,
                    window_s=5,
                    variants=[
                        VariantTraffic(
                            variant_name="main",
                            requests=40,
                            errors=12,
                            p50_latency_ms=2,
                            p99_latency_ms=9,
                        ),
                        VariantTraffic(
                            variant_name="main-previous",
                            requests=160,
                            errors=0,
                            p50_latency_ms=2,
                            p99_latency_ms=8,
                        ),
                    ],
                )
            )
        rolled_back = await trail.wait_for("DeploymentRolledBack", lambda d: d.endpoint_name == bad)
        assert rolled_back.rolled_back_variant == "main"
        assert rolled_back.restored_revision == 1
        assert "error rate 30.0%" in rolled_back.reason
        restored = await trail.wait_for(
            "EndpointUpdated", lambda d: d.endpoint_name == bad and d.revision == 3
        )
        assert [
            (v.variant_name, v.model_version, v.weight) for v in restored.production_variants
        ] == [("main", 1, 1.0)]
        described = (await api.get(f"/endpoints/{bad}")).json()
        assert described["rollout"] is None
        assert described["last_rollback"]["reason"] == rolled_back.reason


async def dead_letter_of(settings: CairnSettings, endpoint: str) -> dict[str, str]:
    """The DLQ headers of the DeploymentRequested for `endpoint`, once it arrives there."""
    dlq = spec_for(DeploymentRequested).dlq_topic
    deadline = time.monotonic() + 15
    letters: list[Any] = []
    while not letters and time.monotonic() < deadline:
        records = await read_topic(settings, dlq, 1000, timeout_s=1)
        letters = [r for r in records if endpoint.encode() in (r.value or b"")]
    assert letters, "the request was not dead-lettered"
    return {name: value.decode() for name, value in letters[0].headers}


def signer_for(store: ObjectStore, settings: CairnSettings, name: str) -> Signer:
    key_id, secret = token_for(store, settings, ["deploy"], name=name).split(":", 1)
    return Signer(key_id=key_id, secret=secret)


async def test_requests_for_unknown_models_are_refused(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    group_name, endpoint = unique_name("g"), unique_name("ep")
    deployer = create_deployer(settings, s3_store, deployer_config())
    async with serving(deployer) as api:
        refused = await api.post(
            "/endpoints",
            json={"endpoint_name": endpoint, "production_variants": [variant(group_name, 7)]},
        )
        assert refused.status_code == 400
        assert "version 7" in refused.json()["error"]

        signer = signer_for(s3_store, settings, "operator")
        async with EventProducer(settings, source="cli", signer=signer) as producer:
            await producer.publish(
                DeploymentRequested(
                    endpoint_name=endpoint,
                    production_variants=[VariantSpec(**variant(group_name, 7))],
                )
            )
        headers = await dead_letter_of(settings, endpoint)
        assert headers[DLQ_REASON] == "request-refused"
        assert "version 7" in headers["cairn-dlq-error"]
        assert (await api.get(f"/endpoints/{endpoint}")).status_code == 404


async def test_unsigned_or_unapproved_deployment_requests_deploy_nothing(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    group_name = unique_name("g")
    unsigned, pending, approved = (unique_name(n) for n in ("unsigned", "pending", "approved"))
    deployer = create_deployer(settings, s3_store, deployer_config())
    async with serving(deployer) as api:
        await register_versions(settings, group_name, 1)
        async with EventProducer(settings, source="registry") as producer:
            await producer.publish(
                ModelPackageRegistered(
                    model_package_group=group_name,
                    version=2,
                    artifact_uri=f"models/{group_name}-2/",
                    approval_status="PendingManualApproval",
                )
            )
        await create_when_known(api, approved, group_name)
        await known_but_unapproved(api, group_name, 2)

        def request(endpoint: str, version: int) -> DeploymentRequested:
            spec = VariantSpec(**variant(group_name, version))
            return DeploymentRequested(endpoint_name=endpoint, production_variants=[spec])

        async with EventProducer(settings, source="cli") as producer:
            await producer.publish(request(unsigned, 1))
        signer = signer_for(s3_store, settings, "operator")
        async with EventProducer(settings, source="cli", signer=signer) as producer:
            await producer.publish(request(pending, 2))

        assert (await dead_letter_of(settings, unsigned))[DLQ_REASON] == "unauthorised"
        letter = await dead_letter_of(settings, pending)
        assert letter[DLQ_REASON] == "request-refused"
        assert "not Approved" in letter["cairn-dlq-error"]
        for endpoint in (unsigned, pending):
            assert (await api.get(f"/endpoints/{endpoint}")).status_code == 404
