"""Schemathesis against a Cairn service's OpenAPI, in process and without Kafka: count the 5xx.

`kafka_free()` makes `Service` start without a broker (no topics, no consumers, no background
loops, no broadcast readers; published events are recorded and dropped), so each service's real
lifespan (bootstrap key, resources) runs inside schemathesis's ASGI event loop. `fuzz_service`
seeds a few real resources through the service's own API (a model, an endpoint, a schedule ...)
so that generated requests reach past "404 not found", then sends every operation `examples`
positive and `examples` negative cases, half of them aimed at the seeded names.
"""

from __future__ import annotations

import contextlib
import importlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cairn.service
import pytest
import schemathesis
from cairn.artifacts.manifest import InputColumn, Lineage, ModelManifest, Signature
from cairn.contracts.state import ModelVersionView, write_state
from cairn.service import Service
from cairn.store.memory import InMemoryObjectStore
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python.asgi import get_client, shutdown_lifespans

from tests.support.auth import admin_headers, auth_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# Only these answer without a credential.
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}

Call = Callable[[str, str, dict[str, Any]], None]


def service_names() -> list[str]:
    """Every service in the repository (each has `services/<name>/app.py`)."""
    return sorted(path.parent.name for path in (REPO_ROOT / "services").glob("*/app.py"))


@dataclass
class FuzzReport:
    """What one service answered: requests sent, and the ones that broke a rule."""

    service: str
    operations: int = 0
    requests: int = 0
    server_errors: list[str] = field(default_factory=list)
    open_routes: list[str] = field(default_factory=list)
    # 4xx other than 401 to an anonymous caller: the body was parsed before the credential.
    refused_before_auth: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        return (
            f"{self.service}: {self.operations} operations, {self.requests} requests, "
            f"{len(self.server_errors)} 5xx, {len(self.open_routes)} answered anonymously"
        )


async def _no_topics(*args: Any, **kwargs: Any) -> list[str]:
    return []


async def _no_broker(*args: Any, **kwargs: Any) -> Callable[[], Awaitable[None]]:
    """`start_broker` without Kafka: nothing starts now, and nothing joins later either."""

    async def join_nothing_later() -> None:
        return None

    return join_nothing_later


@contextlib.contextmanager
def kafka_free() -> Iterator[None]:
    """Services built inside start and stop without Kafka; their lifespans end on the way out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cairn.service, "ensure_topics", _no_topics)
        patch.setattr(cairn.service, "start_broker", _no_broker)
        patch.setattr(Service, "background", lambda self, name, loop: None)
        patch.setattr(Service, "broadcast", lambda self, model: lambda handler: handler)
        try:
            yield
        finally:
            shutdown_lifespans()


def build_service(name: str, home: Path) -> Service:
    """`services.<name>.app.create_service` on an in-memory store; its broker sends nowhere."""
    module = importlib.import_module(f"services.{name}.app")
    create: Callable[..., Service] = module.create_service
    service = create(auth_settings(home=home), InMemoryObjectStore(f"fuzz-{name}"))

    async def sent(*args: Any, **kwargs: Any) -> None:
        return None

    async def ready(*args: Any, **kwargs: Any) -> bool:
        return True

    service.broker.publish = sent  # type: ignore[method-assign]
    service.broker.stop = sent  # type: ignore[method-assign]
    service.broker.ping = ready  # type: ignore[method-assign]
    return service


# Seeds: real resources made through each service's API, and the path values that name them.


def _seed_registry(service: Service, call: Call) -> dict[str, Any]:
    manifest = ModelManifest(
        framework="sklearn",
        framework_version="1.5",
        algorithm="linear-learner",
        task="regression",
        signature=Signature(inputs=[InputColumn(name="x", dtype="float")]),
        lineage=Lineage(algorithm="linear-learner", hyperparameters={"alpha": 0.1}),
    )
    service.store.put_bytes("models/job-1/manifest.json", manifest.model_dump_json().encode())
    version = {"artifact_uri": "models/job-1/", "approval_status": "Approved"}
    call("POST", "/model-package-groups/credit/versions", version | {"metrics": {"auc": 0.9}})
    call("PUT", "/model-package-groups/credit/aliases/champion", {"version": 1})
    return {"group": "credit", "ref": "1", "alias": "champion"}


def _seed_deployer(service: Service, call: Call) -> dict[str, Any]:
    model = ModelVersionView(
        model_package_group="credit",
        version=1,
        artifact_uri="models/job-1/",
        approval_status="Approved",
    )
    write_state(service.store, model, "credit", "1")  # what the registry stores on approval
    variant = {"variant_name": "main", "model_package_group": "credit", "model_version": 1}
    call("POST", "/endpoints", {"endpoint_name": "credit-risk", "production_variants": [variant]})
    call("PUT", "/auto-deploy/credit", {"endpoint_name": "credit-risk"})
    return {"name": "credit-risk", "group": "credit"}


def _seed_monitor(service: Service, call: Call) -> dict[str, Any]:
    call("POST", "/schedules/credit-risk", {"interval_s": 3600})
    call("PUT", "/retrain-policies/credit", {"endpoint_name": "credit-risk"})
    return {"endpoint": "credit-risk", "group": "credit", "version": 1}


def _seed_trainer(service: Service, call: Call) -> dict[str, Any]:
    job = {
        "job_name": "fuzz-job",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "data/credit/train.csv"}],
    }
    call("POST", "/training-jobs", job)
    return {"job_name": "fuzz-job"}


SEEDS: dict[str, Callable[[Service, Call], dict[str, Any]]] = {
    "registry": _seed_registry,
    "deployer": _seed_deployer,
    "monitor": _seed_monitor,
    "trainer": _seed_trainer,
}


def _seed(name: str, service: Service, headers: dict[str, str]) -> dict[str, Any]:
    seed = SEEDS.get(name)
    if seed is None:
        return {}
    with get_client(service.asgi) as client:

        def call(method: str, path: str, body: dict[str, Any]) -> None:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code < 300, f"seeding {method} {path}: {response.text}"

        return seed(service, call)


def fuzz_service(
    name: str, service: Service, *, examples: int, credential: bool, randomize: bool = False
) -> FuzzReport:
    """Send each operation `examples` positive and negative cases; report 5xx and open routes.

    The same cases every run unless `randomize` (then hypothesis draws a new seed).
    """
    document = service.api.openapi()
    schema = schemathesis.openapi.from_dict(document)
    app = service.asgi
    schema.app = app
    admin = admin_headers(service.store, service.settings, name="fuzzer")
    known = _seed(name, service, admin)
    report = FuzzReport(name)
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        # Deletions last, so the seeded resources live while every other operation runs.
        operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
        for operation in operations:
            report.operations += 1
            spec = document["paths"][operation.path][operation.method.lower()]
            modes = [GenerationMode.POSITIVE]
            if _can_be_invalid(spec):
                modes.append(GenerationMode.NEGATIVE)
            names = {p["name"] for p in spec.get("parameters", []) if p.get("in") == "path"}
            seeded = {key: value for key, value in known.items() if key in names}
            for mode in modes:
                strategy = operation.as_strategy(generation_mode=mode)
                if seeded and len(seeded) == len(names):
                    aimed = operation.as_strategy(generation_mode=mode, path_parameters=seeded)
                    strategy = st.one_of(strategy, aimed)
                headers = admin if credential else {}
                _fuzz(operation, strategy, examples, headers, report, randomize)
    finally:
        shutdown_lifespans()
    return report


def _can_be_invalid(spec: dict[str, Any]) -> bool:
    """Whether an operation takes anything a client can get wrong (else negative cases are
    unsatisfiable, and hypothesis spends seconds proving it)."""
    if "requestBody" in spec:
        return True
    for parameter in spec.get("parameters", []):
        schema = parameter.get("schema", {})
        required = parameter.get("required") and parameter.get("in") != "path"
        constrained = set(schema) - {"type", "title", "description"}
        if required or constrained or schema.get("type") != "string":
            return True
    return False


def _fuzz(
    operation: Any,
    strategy: st.SearchStrategy[Any],
    examples: int,
    headers: dict[str, str],
    report: FuzzReport,
    randomize: bool,
) -> None:
    anonymous = not headers and operation.path not in OPEN_PATHS

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not randomize,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        report.requests += 1
        try:
            response = case.call(headers=headers)
        except Exception as error:  # the app raised past every handler: a 500 for a client
            report.server_errors.append(f"{case.method} {case.formatted_path} raised {error!r}")
            return
        status = response.status_code
        report.statuses[f"{operation.method.upper()} {operation.path} {status}"] += 1
        label = f"{case.method} {case.formatted_path} -> {status}: {response.text[:300]}"
        if status >= 500:
            report.server_errors.append(f"{label}\n  {case.as_curl_command()}")
        elif anonymous and status < 400:
            report.open_routes.append(label)
        elif anonymous and status != 401:
            report.refused_before_auth.append(label)

    try:
        send()
    except Exception as error:  # no case could be generated (nothing in it can be wrong)
        report.not_generated.append(f"{operation.method.upper()} {operation.path}: {error!r}")
