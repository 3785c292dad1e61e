"""An endpoint's human loop on the deployer (real HTTP, Tansu, moto S3): a bad config is a 400
naming its field, an unknown endpoint a 404; a good one is stored, readable through the kernel's
contract and announced with a revision that keeps growing across a removal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cairn.contracts.review_events import HumanLoopConfigView
from cairn.contracts.state import read_state
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.deployer.app import create_service as create_deployer
from services.deployer.documents import ModelRecord
from tests.integration.test_deployer_flow import deployer_config, serving
from tests.integration.test_human_review import next_event
from tests.support.auth import scoped_headers
from tests.support.tansu import unique_name

pytestmark = pytest.mark.integration

LOOP = {
    "labels": ["good", "bad"],
    "activation_conditions": {
        "Conditions": [
            {
                "Or": [
                    {
                        "ConditionType": "ClassProbabilityBelow",
                        "ConditionParameters": {"Threshold": 0.7},
                    },
                    {
                        "ConditionType": "DecisionBoundaryBand",
                        "ConditionParameters": {"Boundary": 0.5, "Margin": 0.05},
                    },
                ]
            }
        ]
    },
    "random_sampling_percentage": 2,
}


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


async def test_human_loop_is_validated_stored_and_announced(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    endpoint, group = unique_name("ep"), unique_name("grp")
    record = ModelRecord(
        model_package_group=group,
        version=1,
        artifact_uri=f"models/{group}/",
        approval_status="Approved",
        approval_decided=True,
        updated_at=datetime.now(UTC),
    )
    s3_store.put_bytes(f"deployer/models/{group}/1.json", record.model_dump_json().encode())
    deployer = create_deployer(settings, s3_store, deployer_config())
    reader = scoped_headers(s3_store, settings, ["read"], name="reader")
    async with serving(deployer) as api:
        created = await api.post(
            "/endpoints",
            json={
                "endpoint_name": endpoint,
                "production_variants": [
                    {"variant_name": "v1", "model_package_group": group, "model_version": 1}
                ],
            },
        )
        assert created.status_code == 201, created.text

        bad = dict(LOOP, labels=["good", "good"])
        refused = await api.put(f"/endpoints/{endpoint}/human-loop", json=bad)
        assert refused.status_code == 400, refused.text
        assert "labels" in refused.text and "listed twice" in refused.text
        bad_path = {
            "labels": ["a", "b"],
            "activation_conditions": {
                "Conditions": [
                    {
                        "ConditionType": "JsonPath",
                        "ConditionParameters": {"Path": "$..[[", "Operator": "Exists"},
                    }
                ]
            },
        }
        refused = await api.put(f"/endpoints/{endpoint}/human-loop", json=bad_path)
        assert refused.status_code == 400
        assert "Conditions.0.JsonPath.ConditionParameters.Path" in refused.text
        unknown = await api.put("/endpoints/no-such-endpoint/human-loop", json=LOOP)
        assert unknown.status_code == 404
        denied = await api.put(f"/endpoints/{endpoint}/human-loop", json=LOOP, headers=reader)
        assert denied.status_code == 403

        stored = await api.put(f"/endpoints/{endpoint}/human-loop", json=LOOP)
        assert stored.status_code == 200, stored.text
        assert stored.json()["revision"] == 1
        view = read_state(s3_store, HumanLoopConfigView, endpoint)
        assert view is not None and view.config is not None
        assert view.config.random_sampling_percentage == 2
        assert (await api.get(f"/endpoints/{endpoint}/human-loop", headers=reader)).json()[
            "config"
        ]["labels"] == ["good", "bad"]

        removed = await api.delete(f"/endpoints/{endpoint}/human-loop")
        assert removed.status_code == 200 and removed.json()["revision"] == 2
        assert (await api.get(f"/endpoints/{endpoint}/human-loop")).status_code == 404
        again = await api.put(f"/endpoints/{endpoint}/human-loop", json=LOOP)
        assert again.json()["revision"] == 3
        announced = await next_event(
            settings,
            "HumanLoopConfigured",
            lambda data: data["endpoint_name"] == endpoint and data["revision"] == 3,
        )
        assert announced["config"]["labels"] == ["good", "bad"]
        removal = await next_event(
            settings,
            "HumanLoopConfigured",
            lambda data: data["endpoint_name"] == endpoint and data["revision"] == 2,
        )
        assert removal["config"] is None
