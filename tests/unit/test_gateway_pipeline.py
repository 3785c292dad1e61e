"""Inference pipelines: chains refused at create time unless they connect, served step by step.

The chain is a real scikit-learn StandardScaler packaged with skops, then an XGBoost model trained
on its output; the served answer must equal applying both offline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sklearn
import skops.io
import xgboost
from cairn.artifacts import load_model, write_model_package
from cairn.artifacts.manifest import InputColumn, Lineage, ModelManifest, OutputColumn, Signature
from cairn.contracts.events import VariantSpec
from cairn.contracts.state import ModelVersionView, state_spec
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore, ObjectStore
from pydantic import ValidationError
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from services.deployer.app import create_service
from services.deployer.handlers import Deployer
from services.deployer.pipelines import (
    PipelineSignatureMismatch,
    PipelineStepUnsupported,
    Step,
    check_chain,
)
from services.gateway.metrics import VariantMeter
from services.gateway.pipeline import PipelineModel
from services.gateway.runtime import ModelCache, RoutingTable
from tests.support.auth import admin_headers, auth_settings
from tests.unit.test_deployer_handlers import Recorder
from tests.unit.test_gateway_payloads import COLUMNS, ROWS, make_package, train_matrix

SCALED = [InputColumn(name=f"{column.name}_scaled", dtype="float") for column in COLUMNS]


def _manifest(framework: Any, task: Any, inputs: list[InputColumn], outputs: list[str]) -> Any:
    return ModelManifest(
        framework=framework,
        framework_version=sklearn.__version__ if framework == "sklearn" else xgboost.__version__,
        algorithm=framework,
        task=task,
        signature=Signature(inputs=inputs, outputs=[OutputColumn(name=n) for n in outputs]),
        lineage=Lineage(algorithm=framework),
    )


def make_chain(store: ObjectStore) -> tuple[str, str]:
    """A StandardScaler preprocessor and an XGBoost model trained on what it outputs."""
    features, label = train_matrix(seed=4)
    scaler = StandardScaler().fit(features)
    scaled_names = [column.name for column in SCALED]
    preprocessor = write_model_package(
        store,
        "models/scaler/",
        _manifest("sklearn", "dimensionality_reduction", COLUMNS, scaled_names),
        {"model.skops": skops.io.dumps(scaler)},
    )
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": 4},
        xgboost.DMatrix(scaler.transform(features), label=label),
        15,
    )
    classifier = write_model_package(
        store,
        "models/scaled-xgb/",
        _manifest("xgboost", "binary_classification", SCALED, ["probability"]),
        {"model.ubj": booster.save_raw("ubj")},
    )
    return preprocessor, classifier


def offline_chain(store: ObjectStore, preprocessor: str, classifier: str) -> list[float]:
    """Both steps applied by hand, outside the platform."""
    first, second = load_model(store, preprocessor), load_model(store, classifier)
    return second.predict(first.predict(first.encode_rows(ROWS))).tolist()


def register(store: ObjectStore, group: str, version: int, artifact_uri: str) -> None:
    """What the registry stores for an approved version (the deployer reads it)."""
    view = ModelVersionView(
        model_package_group=group,
        version=version,
        artifact_uri=artifact_uri,
        approval_status="Approved",
    )
    store.put_bytes(
        state_spec(ModelVersionView).key(group, str(version)), view.model_dump_json().encode()
    )


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    preprocessor, classifier = make_chain(store)
    register(store, "scaler", 1, preprocessor)
    register(store, "credit", 1, classifier)
    register(store, "plain", 1, make_package(store, "models/plain/"))
    return store


def chain(*refs: tuple[str, int]) -> dict[str, Any]:
    containers = [{"model_package_group": g, "model_version": v} for g, v in refs]
    return {"variant_name": "main", "containers": containers}


def test_a_chain_must_connect_by_count_and_name_and_run_in_process():
    scaler = _manifest("sklearn", "dimensionality_reduction", COLUMNS, [c.name for c in SCALED])
    xgb = _manifest("xgboost", "binary_classification", SCALED, ["probability"])
    check_chain("main", [Step(1, ("scaler", 1), scaler), Step(2, ("credit", 1), xgb)])

    with pytest.raises(PipelineSignatureMismatch, match=r"step 1 \(credit v1\).*1 outputs for 4"):
        check_chain("main", [Step(1, ("credit", 1), xgb), Step(2, ("scaler", 1), scaler)])
    post = _manifest("sklearn", "regression", [InputColumn(name="p", dtype="float")], ["score"])
    with pytest.raises(PipelineSignatureMismatch, match=r"step 2 .*names differ") as caught:
        check_chain(
            "main",
            [
                Step(1, ("scaler", 1), scaler),
                Step(2, ("credit", 1), xgb),
                Step(3, ("post", 1), post),
            ],
        )
    assert caught.value.details["step"] == 2
    script = _manifest("sklearn", "custom", SCALED, ["probability"]).model_copy(
        update={"framework": "script"}
    )
    with pytest.raises(PipelineStepUnsupported, match=r"step 2 .*script package"):
        check_chain("main", [Step(1, ("scaler", 1), scaler), Step(2, ("mine", 1), script)])


def test_a_variant_chains_at_most_five_models_and_names_its_last():
    spec = VariantSpec.model_validate(chain(("scaler", 1), ("credit", 3)))
    assert (spec.model_package_group, spec.model_version) == ("credit", 3)
    with pytest.raises(ValidationError, match="at most 5"):
        VariantSpec.model_validate(chain(*[("scaler", 1)] * 6))
    with pytest.raises(ValidationError, match="name the last container"):
        VariantSpec.model_validate(
            {**chain(("scaler", 1), ("credit", 3)), "model_package_group": "scaler"}
        )


@pytest.fixture
async def api(
    store: InMemoryObjectStore, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Deployer]]:
    settings: CairnSettings = auth_settings(home=tmp_path)
    service = create_service(settings=settings, store=store)
    deployer: Deployer = service.api.state.deployer
    deployer.publish = Recorder()
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://deployer", headers=headers
    ) as client:
        yield client, deployer


async def test_a_chain_that_does_not_connect_is_refused_naming_the_step(
    api: tuple[httpx.AsyncClient, Deployer],
):
    client, _ = api
    backwards = {"production_variants": [chain(("credit", 1), ("scaler", 1))]}
    refused = await client.post("/endpoints", json={"endpoint_name": "bad", **backwards})
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "pipeline_signature_mismatch"
    assert "step 1 (credit v1)" in body["error"] and "step 2 (scaler v1)" in body["error"]
    unknown = {"production_variants": [chain(("scaler", 1), ("credit", 9))]}
    missing = await client.post("/endpoints", json={"endpoint_name": "bad", **unknown})
    assert missing.status_code == 400 and missing.json()["code"] == "model_version_unknown"
    assert (await client.get("/endpoints/bad")).status_code == 404


async def test_the_gateway_scores_the_chain_step_by_step(
    api: tuple[httpx.AsyncClient, Deployer], store: InMemoryObjectStore
):
    client, deployer = api
    variants = [chain(("scaler", 1), ("credit", 1))]
    variants.append({"variant_name": "plain", "model_package_group": "plain", "model_version": 1})
    body = {"endpoint_name": "credit", "production_variants": variants}
    created = await client.post("/endpoints", json=body)
    assert created.status_code in (200, 201), created.text
    recorder = deployer.publish
    assert isinstance(recorder, Recorder)
    (update,) = recorder.updates("credit")
    served = {variant.variant_name: variant for variant in update.production_variants}
    assert [step.model_package_group for step in served["main"].containers] == ["scaler", "credit"]
    assert served["plain"].containers == []

    with ThreadPoolExecutor(2) as executor:
        cache = ModelCache(
            store, executor, budget_bytes=1 << 30, batch_max_rows=64, batch_max_wait_s=0
        )
        table = RoutingTable(cache, VariantMeter)
        assert await table.apply(update)
        endpoint = table.get("credit")
        pipeline, plain = endpoint.variants["main"].serving, endpoint.variants["plain"].serving
        assert isinstance(pipeline.model, PipelineModel)
        assert not isinstance(plain.model, PipelineModel)  # one model: served as before
        matrix = pipeline.model.encode_rows(ROWS)
        answer = await pipeline.batcher.predict(matrix)
        expected = offline_chain(store, "models/scaler/", "models/scaled-xgb/")
        np.testing.assert_allclose(answer, expected, rtol=1e-6)
        assert pipeline.model.output_names == ["probability"]
        assert cache.pinned >= {"models/scaler/", "models/scaled-xgb/", "models/plain/"}
        reweighted = update.model_copy(update={"revision": update.revision + 1})
        assert await table.apply(reweighted)
        assert table.get("credit").variants["main"].serving is pipeline  # not rebuilt


def test_a_one_column_step_feeds_the_next_as_a_matrix(store: InMemoryObjectStore):
    """Preprocessor, XGBoost, then a post-processor on the probability (SageMaker's example)."""
    grid = np.linspace(0, 1, 11).reshape(-1, 1)
    rescale = Ridge(alpha=1e-9).fit(grid, 100 * grid.ravel())
    post = write_model_package(
        store,
        "models/post/",
        _manifest(
            "sklearn", "regression", [InputColumn(name="probability", dtype="float")], ["score"]
        ),
        {"model.skops": skops.io.dumps(rescale)},
    )
    steps = [load_model(store, uri) for uri in ("models/scaler/", "models/scaled-xgb/", post)]
    model = PipelineModel(steps)
    assert model.input_names == [column.name for column in COLUMNS]
    assert model.output_names == ["score"]
    scores = model.predict(model.encode_rows(ROWS))
    expected = 100 * np.asarray(offline_chain(store, "models/scaler/", "models/scaled-xgb/"))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(NotImplementedError):
        model.explain(model.encode_rows(ROWS))
