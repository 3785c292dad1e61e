"""Inference graphs (KServe's InferenceGraph): refused whole at create time, served in process.

The models are real packages (a scikit-learn scaler, XGBoost models) from the chain's tests;
the served answers must equal the graph applied by hand, and the answer names the steps that ran.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cairn.artifacts import load_model
from cairn.contracts.events import DeploymentRequested, EndpointUpdated, VariantSpec
from cairn.contracts.graph import InferenceGraph
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.inference.conditions import Condition, ConditionError
from cairn.service import Service
from cairn.store import InMemoryObjectStore
from cairn_cli import app
from cairn_cli.endpoints_cmd import graph_variant
from cairn_sdk.graphs import load_inference_graph
from typer.testing import CliRunner

from services.deployer.graph import InvalidGraph, check_graphs
from services.deployer.handlers import Deployer
from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.graph import GraphModel, NoRouteMatched, _vote
from services.gateway.handlers import GatewayHandlers
from services.gateway.runtime import ModelCache
from tests.support.auth import auth_settings, scoped_headers
from tests.unit.test_gateway_payloads import COLUMNS, ROWS, make_package
from tests.unit.test_gateway_pipeline import (
    SCALED,
    _manifest,
    api,
    make_chain,
    offline_chain,
    register,
)

__all__ = ["api"]  # the deployer's HTTP API fixture, shared with the chain's tests


@pytest.fixture(scope="module")
def store() -> InMemoryObjectStore:
    """The chain's packages and two plain XGBoost models, trained once for the module."""
    store = InMemoryObjectStore()
    preprocessor, classifier = make_chain(store)
    register(store, "scaler", 1, preprocessor)
    register(store, "credit", 1, classifier)
    register(store, "plain", 1, make_package(store, "models/plain/"))
    register(store, "plain", 2, make_package(store, "models/plain2/", seed=1))
    return store


SCALER = _manifest("sklearn", "dimensionality_reduction", COLUMNS, [c.name for c in SCALED])
MANIFESTS = {
    ("scaler", 1): SCALER,
    ("credit", 1): _manifest("xgboost", "binary_classification", SCALED, ["probability"]),
    ("plain", 1): _manifest("xgboost", "binary_classification", COLUMNS, ["probability"]),
    ("plain", 2): _manifest("xgboost", "binary_classification", COLUMNS, ["probability"]),
}


def model(group: str, version: int, **extra: Any) -> dict[str, Any]:
    return {"model_package_group": group, "model_version": version, **extra}


def node(step: str, **extra: Any) -> dict[str, Any]:
    return {"node_name": step, **extra}


# Young applicants through the scaler and its classifier, the others to an ensemble's mean.
GRAPH: dict[str, Any] = {
    "nodes": {
        "root": {
            "router_type": "Switch",
            "steps": [
                node("scaled", name="young", condition="age < 30 and income > 0"),
                node("ensemble", name="others"),
            ],
        },
        "scaled": {
            "router_type": "Sequence",
            "steps": [model("scaler", 1), model("credit", 1, data="$response")],
        },
        "ensemble": {
            "router_type": "Ensemble",
            "combine": "mean",
            "steps": [model("plain", 1), model("plain", 2)],
        },
    }
}


def variant(graph: dict[str, Any]) -> dict[str, Any]:
    return {"variant_name": "main", "graph": graph}


def expected_answers(store: InMemoryObjectStore) -> list[float]:
    """The graph applied by hand: row 1 is the only applicant under 30."""
    chained = offline_chain(store, "models/scaler/", "models/scaled-xgb/")
    first, second = load_model(store, "models/plain/"), load_model(store, "models/plain2/")
    matrix = first.encode_rows(ROWS)
    mean = (first.predict(matrix) + second.predict(matrix)) / 2
    return [float(mean[0]), chained[1], float(mean[2])]


def test_conditions_act_per_row_and_refuse_what_they_cannot_evaluate():
    rows = np.array([[10, 20], [40, 25], [40, 35]], dtype=np.float32)
    condition = Condition("18 < age <= 30 and not income < 20", ["income", "age"])
    assert condition.mask(rows).tolist() == [False, True, False]
    for bad, why in [("age <", "does not parse"), ("salary > 1", "salary"), ("age.real", "attr")]:
        with pytest.raises(ConditionError, match=why):
            Condition(bad, ["income", "age"]).check()


def test_a_variant_graph_names_its_first_model_and_excludes_containers():
    spec = VariantSpec.model_validate(variant(GRAPH))
    assert (spec.model_package_group, spec.model_version) == ("scaler", 1)
    with pytest.raises(ValueError, match="not both"):
        VariantSpec.model_validate({**variant(GRAPH), "containers": [model("plain", 1)]})


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    graph = json.loads(json.dumps(GRAPH))
    target = graph
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return graph


SCALED_STEPS = ["nodes", "scaled", "steps"]
BAD_GRAPHS = [
    (_broken(["nodes", "root"], None), "graph.nodes", "'root'"),
    (
        _broken(["nodes", "root", "steps", 1, "node_name"], "nowhere"),
        "steps[1].node_name",
        "no node",
    ),
    (
        _broken([*SCALED_STEPS, 1], node("root")),
        "nodes.scaled.steps[1].node_name",
        "cycles: root -> scaled -> root",
    ),
    (
        _broken(
            ["nodes", "ensemble"],
            {
                "router_type": "Splitter",
                "steps": [model("plain", 1, weight=60), model("plain", 2, weight=30)],
            },
        ),
        "nodes.ensemble.steps",
        "add up to 90",
    ),
    (_broken(["nodes", "root", "steps", 0, "condition"], "age <"), "steps[0].condition", "parse"),
    (_broken(["nodes", "root", "steps", 0, "condition"], "salary > 1"), "condition", "salary"),
    (_broken([*SCALED_STEPS, 1, "data"], None), "scaled.steps[1]", "not the columns it is fed"),
    (
        _broken(["nodes", "ensemble", "steps", 1], node("scaled", name="chain")),
        None,
        None,
    ),  # same outputs: fine
    (_broken(["nodes", "ensemble", "combine"], "all"), "nodes.root.steps[1]", "same outputs"),
    (
        _broken(["nodes", "lonely"], {"router_type": "Sequence", "steps": [model("plain", 1)]}),
        "nodes.lonely",
        "not reachable",
    ),
]


@pytest.mark.parametrize(("graph", "field", "why"), BAD_GRAPHS)
def test_the_deployer_refuses_a_broken_graph_naming_the_field(
    graph: dict[str, Any], field: str | None, why: str | None
):
    request = DeploymentRequested(endpoint_name="g", production_variants=[variant(graph)])
    manifests = MANIFESTS
    if field is None:
        check_graphs(request, manifests)
        return
    with pytest.raises(InvalidGraph, match=why) as refused:
        check_graphs(request, manifests)
    assert field in refused.value.details["field"]
    assert refused.value.details["field"].startswith("production_variants[0].graph")


def test_an_ensemble_keys_every_output_by_step_and_a_vote_ties_to_the_first():
    stacked = np.array([[[1.0], [0.0]], [[0.0], [2.0]], [[1.0], [3.0]]])
    assert _vote(stacked).tolist() == [[1.0], [0.0]]


PLAIN = [
    model("plain", 1, artifact_uri="models/plain/"),
    model("plain", 2, artifact_uri="models/plain2/"),
]


async def test_splitter_ensemble_and_a_switch_without_default_over_two_models(
    store: InMemoryObjectStore,
):
    def root(router_type: str, steps: list[dict[str, Any]]) -> InferenceGraph:
        return InferenceGraph.model_validate(
            {"nodes": {"root": {"router_type": router_type, "steps": steps}}}
        )

    with ThreadPoolExecutor(1) as executor:
        cache = ModelCache(
            store, executor, budget_bytes=1 << 30, batch_max_rows=64, batch_max_wait_s=0
        )
        plain = {uri: await cache.get(uri) for uri in ("models/plain/", "models/plain2/")}
        models = {uri: (s.model, s.batcher) for uri, s in plain.items()}

        def built(graph: InferenceGraph, draws: list[float] = []) -> GraphModel:  # noqa: B006
            drawn = iter(draws)
            return GraphModel(
                graph, models, lambda step: str(step.artifact_uri), lambda: next(drawn)
            )

        weighted = [{**PLAIN[0], "weight": 60}, {**PLAIN[1], "weight": 40}]
        split = built(root("Splitter", weighted), [0.7, 0.1])
        matrix = split.encode_rows(ROWS)
        second, first = split.predict(matrix), await split.predict_async(matrix)
        assert second.tolist() == plain["models/plain2/"].model.predict(matrix).tolist()
        assert first.tolist() == plain["models/plain/"].model.predict(matrix).tolist()

        every = built(root("Ensemble", PLAIN))
        assert every.output_names == ["plain-v1.probability", "plain-v2.probability"]
        both = await every.predict_async(matrix)
        assert both.shape == (3, 2)
        assert both[:, 1].tolist() == plain["models/plain2/"].model.predict(matrix).tolist()

        strict = built(root("Switch", [{**PLAIN[0], "condition": "age > 60"}]))
        assert strict.predict(matrix[2:]).tolist() == pytest.approx(first[2:].tolist())
        with pytest.raises(NoRouteMatched, match="row 0 meets no condition"):
            strict.predict(matrix)


@pytest.fixture
async def gateway(
    api: tuple[httpx.AsyncClient, Deployer], store: InMemoryObjectStore, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The graph endpoint created through the deployer, served by the real gateway app."""
    client, deployer = api
    refused = await client.post(
        "/endpoints",
        json={
            "endpoint_name": "bad",
            "production_variants": [
                variant(_broken(["nodes", "root", "steps", 0, "condition"], "x >"))
            ],
        },
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_inference_graph"
    assert "production_variants[0].graph.nodes.root.steps[0].condition" in refused.json()["error"]
    body = {"endpoint_name": "graph", "production_variants": [variant(GRAPH)]}
    created = await client.post("/endpoints", json=body)
    assert created.status_code in (200, 201), created.text
    recorder = deployer.publish
    (update,) = recorder.updates("graph")  # type: ignore[attr-defined]
    assert isinstance(update, EndpointUpdated)
    (served,) = update.production_variants
    assert served.graph is not None
    uris = [step.artifact_uri for step in served.graph.model_steps()]
    assert uris == ["models/scaler/", "models/scaled-xgb/", "models/plain/", "models/plain2/"]
    document = {**update.model_dump(mode="json"), "rollout": None}
    store.put_bytes(state_spec(EndpointStateView).key("graph"), json.dumps(document).encode())

    service: Service = create_service(
        auth_settings(home=tmp_path), store, GatewaySettings(capture_sample_rate=0)
    )
    handlers = GatewayHandlers(service.api.state.gateway, store, service.publish)
    await handlers.load_stored_endpoints()
    headers = scoped_headers(service.store, service.settings, ["invoke"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.asgi),
        base_url="http://gateway.test",
        headers=headers,
        timeout=60,
    ) as gateway_client:
        yield gateway_client
    await handlers.close(service.api.state.gateway)


STEPS_RAN = (
    "root.young,scaled.scaler-v1,scaled.credit-v1,root.others,ensemble.plain-v1,ensemble.plain-v2"
)


async def test_the_gateway_routes_each_row_through_the_graph_on_every_protocol(
    gateway: httpx.AsyncClient, store: InMemoryObjectStore
):
    expected = expected_answers(store)
    sagemaker = await gateway.post(
        "/endpoints/graph/invocations",
        json={"instances": ROWS},
        headers={"Accept": "text/csv"},
    )
    assert sagemaker.status_code == 200, sagemaker.text
    assert [float(line) for line in sagemaker.text.split()] == pytest.approx(expected, rel=1e-5)
    assert sagemaker.headers["x-cairn-graph-steps"] == STEPS_RAN

    together = await asyncio.gather(
        *(gateway.post("/endpoints/graph/invocations", json={"instances": ROWS}) for _ in range(4))
    )  # concurrent requests: each model step is batched across them
    for answer in together:
        assert [p["probability"] for p in answer.json()["predictions"]] == pytest.approx(
            expected, rel=1e-5
        )
        assert answer.headers["x-cairn-graph-steps"] == STEPS_RAN

    old_only = await gateway.post("/endpoints/graph/invocations", json={"instances": [ROWS[0]]})
    assert old_only.headers["x-cairn-graph-steps"] == (
        "root.others,ensemble.plain-v1,ensemble.plain-v2"
    )

    v1 = await gateway.post("/v1/models/graph:predict", json={"instances": ROWS})
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == pytest.approx(expected, rel=1e-5)
    assert v1.headers["x-cairn-graph-steps"] == STEPS_RAN

    tensor = {"name": "rows", "shape": [3, 4], "datatype": "BYTES", "data": ROWS}
    v2 = await gateway.post("/v2/models/graph/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == pytest.approx(expected, rel=1e-5)
    assert v2.headers["x-cairn-graph-steps"] == STEPS_RAN


KSERVE_GRAPH = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: credit
spec:
  nodes:
    root:
      routerType: Switch
      steps:
        - name: young
          nodeName: scaled
          condition: age < 30 and income > 0
        - name: others
          nodeName: ensemble
    scaled:
      routerType: Sequence
      steps:
        - model: scaler:1
        - model: credit:1
          data: $response
    ensemble:
      routerType: Ensemble
      combine: mean
      steps:
        - model: plain:1
        - modelPackageGroup: plain
          modelVersion: 2
"""


def test_a_kserve_inference_graph_file_reads_as_the_same_graph(tmp_path: Path):
    path = tmp_path / "graph.yaml"
    path.write_text(KSERVE_GRAPH)
    read = load_inference_graph(path)
    assert InferenceGraph.model_validate(read) == InferenceGraph.model_validate(GRAPH)
    assert graph_variant(f"main={path}") == {"variant_name": "main", "graph": read}
    (tmp_path / "bad.yaml").write_text("nodes: [1]\n")
    result = CliRunner().invoke(
        app,
        ["endpoints", "create", "e", "--graph", str(tmp_path / "bad.yaml")],
        env={"CAIRN_TARGET": "http://127.0.0.1:9"},
    )
    assert result.exit_code == 2 and "nodes" in result.output, result.output
