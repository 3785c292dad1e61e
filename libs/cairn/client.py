"""`cairn.Client`: the platform's HTTP APIs as one Python object, with the CLI's verbs.

Each service keeps its own base URL: the embedded platform (`cairn up`) gives every service its
own port (read from `<home>/runtime.json`), compose and Kubernetes give each its own host. Errors
come back as the `cairn.errors` class matching the service's `{"error", "code"}` answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from cairn.errors import (
    CairnError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)

SERVICES = ("trainer", "registry", "deployer", "gateway", "ingest")
ServiceName = Literal["trainer", "registry", "deployer", "gateway", "ingest"]
TERMINAL_JOB_STATUSES = frozenset({"Completed", "Failed"})
TARGET_ENV = "CAIRN_TARGET"
API_KEY_ENV = "CAIRN_API_KEY"
ACCESS_KEY_ENV = "CAIRN_ACCESS_KEY"
UPLOAD_CHUNK_BYTES = 1 << 20
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".parquet": "application/x-parquet",
    ".pq": "application/x-parquet",
    ".jsonl": "application/jsonlines",
    ".ndjson": "application/jsonlines",
}

_BY_STATUS: dict[int, type[CairnError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: InvalidInput,
    422: InvalidInput,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


class ServiceNotConfigured(InvalidInput):
    """The client was asked for a service it has no URL for."""

    code = "service_not_configured"


class EndpointFailed(CairnError):
    """An endpoint ended Failed (or was deleted) while we waited for it to serve."""

    code = "endpoint_failed"


def error_from_response(response: httpx.Response) -> CairnError:
    """The `cairn.errors` class a service's error answer stands for, with its message and code."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = response.text.strip()[:500] or response.reason_phrase
    code = None
    details: dict[str, Any] = {}
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("message") or message)
        code = body.get("code")
        if isinstance(body.get("details"), dict):
            details = body["details"]
    error_class = _BY_STATUS.get(response.status_code, CairnError)
    error = error_class(message, status=response.status_code, **details)
    if isinstance(code, str):
        # The service's precise code (endpoint_not_found, ...) shadows the class's generic one.
        vars(error)["code"] = code
    return error


def _urls_from_runtime(home: Path) -> dict[str, str]:
    from cairn.runtime.state import pid_alive, read_state

    state = read_state(home)
    if state is None or not pid_alive(state.supervisor_pid):
        return {}
    return {service.name: service.url.rstrip("/") for service in state.services}


def service_url(
    name: str,
    url: str | None = None,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """One service's base URL: `url`, else CAIRN_<NAME>_URL, else the platform running on `home`.

    Works for every service `cairn up` runs, not only the SDK's; None when none is found.
    """
    environ = os.environ if env is None else env
    found = url or environ.get(f"CAIRN_{name.upper()}_URL")
    if found:
        return found.rstrip("/")
    from cairn.settings import CairnSettings

    return _urls_from_runtime((home or CairnSettings().home).resolve()).get(name)


def service_urls(
    target: str | None = None, home: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each service's base URL: CAIRN_<SERVICE>_URL, else `target` (or CAIRN_TARGET), else the
    platform running on `home` (default: CAIRN_HOME or .cairn).
    """
    environ = os.environ if env is None else env
    urls: dict[str, str] = {}
    base = target or environ.get(TARGET_ENV)
    if base:
        urls = {name: base.rstrip("/") for name in SERVICES}
    else:
        from cairn.settings import CairnSettings

        resolved_home = (home or CairnSettings().home).resolve()
        urls = _urls_from_runtime(resolved_home)
    for name in SERVICES:
        explicit = environ.get(f"CAIRN_{name.upper()}_URL")
        if explicit:
            urls[name] = explicit.rstrip("/")
    return urls


@dataclass
class Invocation:
    """One gateway answer: the parsed body, which variant served it, and the raw bytes."""

    body: Any
    variant: str | None
    content_type: str
    raw: bytes = field(repr=False)
    latency_ms: float = 0.0

    @property
    def predictions(self) -> list[Any]:
        """The predicted values, one per row, whatever the answer's format was."""
        if isinstance(self.body, dict) and "predictions" in self.body:
            return [_single(record) for record in self.body["predictions"]]
        if isinstance(self.body, dict) and "outputs" in self.body:
            return list(self.body["outputs"][0]["data"])
        if isinstance(self.body, list):
            return [_single(item) for item in self.body]
        return [self.body]


def _single(record: Any) -> Any:
    if isinstance(record, dict) and len(record) == 1:
        return next(iter(record.values()))
    return record


def _parse_answer(raw: bytes, content_type: str) -> Any:
    media = content_type.split(";", 1)[0].strip().lower()
    text = raw.decode(errors="replace")
    if media == "text/csv":
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
        return [float(row[0]) if len(row) == 1 else [float(cell) for cell in row] for row in rows]
    if media in ("application/jsonlines", "application/jsonl", "application/x-ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if media == "application/json":
        return json.loads(text)
    return text


class Client:
    """One object for every control-plane verb and the gateway's invocations."""

    def __init__(
        self,
        trainer_url: str | None = None,
        registry_url: str | None = None,
        deployer_url: str | None = None,
        gateway_url: str | None = None,
        ingest_url: str | None = None,
        *,
        api_key: str | None = None,
        access_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Args:
        trainer_url, registry_url, deployer_url, gateway_url, ingest_url: base URLs.
        api_key: control-plane key (services run with CAIRN_API_KEYS); default CAIRN_API_KEY.
        access_key: gateway bearer token `KEY_ID:SECRET`; default CAIRN_ACCESS_KEY.
        timeout_s: per-request timeout.
        transport: an httpx transport (tests pass a MockTransport or an ASGI one).
        """
        given = {
            "trainer": trainer_url,
            "registry": registry_url,
            "deployer": deployer_url,
            "gateway": gateway_url,
            "ingest": ingest_url,
        }
        self.urls = {name: url.rstrip("/") for name, url in given.items() if url}
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.access_key = (
            access_key if access_key is not None else os.environ.get(ACCESS_KEY_ENV) or None
        )
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self._http = httpx.Client(
            timeout=timeout_s, headers=headers, transport=transport, trust_env=False
        )

    # Construction ---------------------------------------------------------------------------

    @classmethod
    def from_runtime(cls, home: Path | str | None = None, **options: Any) -> Self:
        """The platform `cairn up` runs on `home` (default: CAIRN_HOME or .cairn)."""
        return cls._from_urls(service_urls(home=Path(home) if home else None), **options)

    @classmethod
    def from_target(cls, url: str | None = None, **options: Any) -> Self:
        """Every service at `url` (one ingress), each overridable by CAIRN_<SERVICE>_URL."""
        return cls._from_urls(service_urls(target=url), **options)

    @classmethod
    def from_env(cls, target: str | None = None, home: Path | None = None, **options: Any) -> Self:
        """What the CLI uses: CAIRN_<SERVICE>_URL, else --target/CAIRN_TARGET, else runtime.json."""
        return cls._from_urls(service_urls(target=target, home=home), **options)

    @classmethod
    def _from_urls(cls, urls: dict[str, str], **options: Any) -> Self:
        return cls(
            trainer_url=urls.get("trainer"),
            registry_url=urls.get("registry"),
            deployer_url=urls.get("deployer"),
            gateway_url=urls.get("gateway"),
            ingest_url=urls.get("ingest"),
            **options,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Plumbing -------------------------------------------------------------------------------

    def url(self, service: ServiceName) -> str:
        """The base URL of `service`; ServiceNotConfigured says how to give one."""
        try:
            return self.urls[service]
        except KeyError:
            raise ServiceNotConfigured(
                f"no URL for the {service} service: start the platform with `cairn up`, pass "
                f"--target, or set CAIRN_{service.upper()}_URL",
                service=service,
            ) from None

    def _send(self, method: str, service: ServiceName, path: str, **kwargs: Any) -> httpx.Response:
        url = self.url(service) + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise Unavailable(f"cannot reach the {service} service at {url}: {error}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, service: ServiceName, path: str, **kwargs: Any) -> Any:
        return self._send(method, service, path, **kwargs).json()

    # Training -------------------------------------------------------------------------------

    def create_training_job(
        self,
        job_name: str,
        algorithm: str,
        channels: Mapping[str, str],
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        content_type: str = "text/csv",
        label_column: str | None = None,
        device: Literal["cpu", "gpu"] = "cpu",
        register_group: str | None = None,
        output_uri: str | None = None,
        max_runtime_s: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """CreateTrainingJob: `channels` maps a channel name (train, validation) to a URI."""
        request: dict[str, Any] = {
            "job_name": job_name,
            "algorithm": algorithm,
            "hyperparameters": dict(hyperparameters or {}),
            "input_channels": [
                {
                    "name": name,
                    "uri": uri,
                    "content_type": content_type,
                    "label_column": label_column,
                }
                for name, uri in channels.items()
            ],
            "resources": {"device": device},
            "tags": dict(tags or {}),
        }
        if register_group:
            request["registration"] = {"model_package_group": register_group}
        if output_uri:
            request["output_uri"] = output_uri
        if max_runtime_s:
            request["stopping_condition"] = {"max_runtime_s": max_runtime_s}
        return dict(self._json("POST", "trainer", "/training-jobs", json=request))

    def describe_training_job(self, job_name: str) -> dict[str, Any]:
        return dict(self._json("GET", "trainer", f"/training-jobs/{job_name}"))

    def list_training_jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "trainer", "/training-jobs")["training_jobs"])

    def training_job_logs(self, job_name: str) -> str:
        return self._send("GET", "trainer", f"/training-jobs/{job_name}/logs").text

    def wait_for_training_job(
        self,
        job_name: str,
        *,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Poll the job document until it is Completed or Failed; `on_progress` sees each poll."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.describe_training_job(job_name)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in TERMINAL_JOB_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"training job {job_name} is still {job['status']} after {timeout_s:.0f}s"
                )
            time.sleep(poll_s)

    # Registry -------------------------------------------------------------------------------

    def list_model_package_groups(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "registry", "/model-package-groups"))

    def list_model_packages(self, group: str, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else None
        path = f"/model-package-groups/{group}/versions"
        return list(self._json("GET", "registry", path, params=params))

    def describe_model_package(self, group: str, version: int | str) -> dict[str, Any]:
        """A version by number or alias (`champion`)."""
        return dict(
            self._json("GET", "registry", f"/model-package-groups/{group}/versions/{version}")
        )

    def model_package_lineage(self, group: str, version: int | str) -> dict[str, Any]:
        path = f"/model-package-groups/{group}/versions/{version}/lineage"
        return dict(self._json("GET", "registry", path))

    def _decide(
        self, group: str, version: int | str, status: str, by: str, reason: str
    ) -> dict[str, Any]:
        path = f"/model-package-groups/{group}/versions/{version}/approval"
        body = {"status": status, "by": by, "reason": reason}
        return dict(self._json("POST", "registry", path, json=body))

    def approve(
        self, group: str, version: int | str, *, by: str | None = None, reason: str = ""
    ) -> dict[str, Any]:
        return self._decide(group, version, "Approved", by or _user(), reason)

    def reject(
        self, group: str, version: int | str, *, by: str | None = None, reason: str = ""
    ) -> dict[str, Any]:
        return self._decide(group, version, "Rejected", by or _user(), reason)

    def set_alias(self, group: str, alias: str, version: int) -> dict[str, Any]:
        path = f"/model-package-groups/{group}/aliases/{alias}"
        return dict(self._json("PUT", "registry", path, json={"version": version}))

    def wait_for_model_package(
        self, job_name: str, group: str, *, timeout_s: float = 30.0, poll_s: float = 0.25
    ) -> dict[str, Any]:
        """The version registered from `job_name` (the registry registers on the job's event)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(NotFound):
                for version in self.list_model_packages(group):
                    if version.get("lineage", {}).get("training_job") == job_name:
                        return version
            if time.monotonic() > deadline:
                raise Unavailable(f"no version of {group} registered from {job_name} yet")
            time.sleep(poll_s)

    # Endpoints ------------------------------------------------------------------------------

    def create_endpoint(
        self,
        endpoint_name: str,
        production_variants: Sequence[Mapping[str, Any]],
        *,
        shadow_variant: Mapping[str, Any] | None = None,
        rollout: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """CreateEndpoint; variants are VariantSpec dicts (variant_name, model_package_group,
        model_version, initial_weight, instance_count)."""
        body: dict[str, Any] = {
            "endpoint_name": endpoint_name,
            "production_variants": [dict(v) for v in production_variants],
            "shadow_variant": dict(shadow_variant) if shadow_variant else None,
        }
        if rollout:
            body["rollout"] = dict(rollout)
        return dict(self._json("POST", "deployer", "/endpoints", json=body))

    def update_endpoint(
        self,
        endpoint_name: str,
        production_variants: Sequence[Mapping[str, Any]],
        *,
        shadow_variant: Mapping[str, Any] | None = None,
        rollout: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "production_variants": [dict(v) for v in production_variants],
            "shadow_variant": dict(shadow_variant) if shadow_variant else None,
        }
        if rollout:
            body["rollout"] = dict(rollout)
        return dict(self._json("PUT", "deployer", f"/endpoints/{endpoint_name}", json=body))

    def update_weights(self, endpoint_name: str, weights: Mapping[str, float]) -> dict[str, Any]:
        """UpdateEndpointWeightsAndCapacities: new weights by variant name, no redeploy."""
        body = {"variants": [{"variant_name": n, "weight": w} for n, w in weights.items()]}
        return dict(
            self._json("POST", "deployer", f"/endpoints/{endpoint_name}/weights", json=body)
        )

    def describe_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        return dict(self._json("GET", "deployer", f"/endpoints/{endpoint_name}"))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "deployer", "/endpoints"))

    def delete_endpoint(self, endpoint_name: str) -> dict[str, Any]:
        return dict(self._json("DELETE", "deployer", f"/endpoints/{endpoint_name}"))

    def wait_for_endpoint(
        self,
        endpoint_name: str,
        *,
        status: str = "InService",
        serving: bool = True,
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
    ) -> dict[str, Any]:
        """Poll until the deployer says `status` and (with `serving`) the gateway has it loaded."""
        deadline = time.monotonic() + timeout_s
        while True:
            endpoint = self.describe_endpoint(endpoint_name)
            if endpoint["status"] in ("Failed", "Deleted") and endpoint["status"] != status:
                raise EndpointFailed(f"endpoint {endpoint_name} is {endpoint['status']}")
            if endpoint["status"] == status and (not serving or self.endpoint_ready(endpoint_name)):
                return endpoint
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"endpoint {endpoint_name} is {endpoint['status']}, not {status} being "
                    f"served, after {timeout_s:.0f}s"
                )
            time.sleep(poll_s)

    def endpoint_ready(self, endpoint_name: str) -> bool:
        """Whether the gateway serves the endpoint now (OIP v2 model readiness)."""
        try:
            self._send("GET", "gateway", f"/v2/models/{endpoint_name}/ready")
        except (NotFound, InvalidInput, Unavailable):
            return False
        return True

    # Gateway --------------------------------------------------------------------------------

    def create_access_key(self, description: str = "") -> dict[str, Any]:
        """A new gateway access key; the secret (and bearer token) is shown only here."""
        return dict(self._json("POST", "gateway", "/admin/keys", json={"description": description}))

    def use_access_key(self, key: Mapping[str, Any] | str) -> None:
        """Send this key with every invocation from now on."""
        self.access_key = key if isinstance(key, str) else str(key["bearer_token"])

    def _gateway_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_key}"} if self.access_key else {}

    def invoke(
        self,
        endpoint_name: str,
        body: str | bytes | Any,
        content_type: str = "text/csv",
        *,
        accept: str | None = None,
        target_variant: str | None = None,
        explain: bool = False,
        inference_id: str | None = None,
    ) -> Invocation:
        """InvokeEndpoint (SageMaker runtime); a non-str/bytes body is sent as JSON."""
        if isinstance(body, str | bytes):
            payload = body.encode() if isinstance(body, str) else body
        else:
            payload = json.dumps(body).encode()
            content_type = "application/json"
        headers = {**self._gateway_headers(), "Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        if target_variant:
            headers["X-Amzn-SageMaker-Target-Variant"] = target_variant
        if explain:
            headers["X-Amzn-SageMaker-Enable-Explanations"] = "true"
        if inference_id:
            headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
        started = time.perf_counter()
        path = f"/endpoints/{endpoint_name}/invocations"
        response = self._send("POST", "gateway", path, content=payload, headers=headers)
        answer_type = response.headers.get("content-type", "application/json")
        return Invocation(
            body=_parse_answer(response.content, answer_type),
            variant=response.headers.get("x-amzn-invoked-production-variant"),
            content_type=answer_type,
            raw=response.content,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def invoke_v2(
        self,
        model_name: str,
        rows: Sequence[Sequence[Any]],
        *,
        version: str | None = None,
        explain: bool = False,
        request_id: str | None = None,
    ) -> Invocation:
        """Open Inference Protocol v2 infer of rows in signature order.

        Numeric rows go as one [rows, columns] FP64 tensor; rows with categories go as one 1-D
        tensor per input column (BYTES for categories), named from the model's v2 metadata.
        """
        flat = [cell for row in rows for cell in row]
        request: dict[str, Any]
        if any(isinstance(cell, str) for cell in flat):
            request = {"inputs": self._column_tensors(model_name, rows)}
        else:
            width = len(rows[0]) if rows else 0
            tensor = {"name": "input-0", "shape": [len(rows), width], "datatype": "FP64"}
            request = {"inputs": [{**tensor, "data": flat}]}
        if explain:
            request["parameters"] = {"explain": True}
        if request_id:
            request["id"] = request_id
        path = f"/v2/models/{model_name}"
        path += f"/versions/{version}/infer" if version else "/infer"
        started = time.perf_counter()
        response = self._send(
            "POST", "gateway", path, json=request, headers=self._gateway_headers()
        )
        answer = response.json()
        return Invocation(
            body=answer,
            variant=answer.get("model_version"),
            content_type="application/json",
            raw=response.content,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def model_metadata(self, model_name: str) -> dict[str, Any]:
        """OIP v2 model metadata: input and output tensors (names, datatypes)."""
        return dict(self._json("GET", "gateway", f"/v2/models/{model_name}"))

    def _column_tensors(
        self, model_name: str, rows: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        inputs = self.model_metadata(model_name)["inputs"]
        if any(len(row) != len(inputs) for row in rows):
            raise InvalidInput(f"{model_name} takes {len(inputs)} columns per row")
        tensors = []
        for index, column in enumerate(inputs):
            values = [row[index] for row in rows]
            if column["datatype"] == "BYTES":
                values = [str(value) for value in values]
                datatype = "BYTES"
            else:
                datatype = "FP64"
            tensor = {"name": column["name"], "shape": [len(rows)], "datatype": datatype}
            tensors.append({**tensor, "data": values})
        return tensors

    # Datasets -------------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: Path | str,
        name: str,
        *,
        content_type: str | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream a CSV / Parquet / JSON Lines file to the ingest service as a dataset version."""
        file = Path(path)
        media = content_type or CONTENT_TYPES.get(file.suffix.lower())
        if media is None:
            raise InvalidInput(f"cannot tell the format of {file.name}; pass content_type")

        def chunks() -> Iterator[bytes]:
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(UPLOAD_CHUNK_BYTES), b""):
                    if on_chunk is not None:
                        on_chunk(len(chunk))
                    yield chunk

        response = self._send(
            "POST",
            "ingest",
            f"/datasets/{name}/upload",
            content=chunks(),
            headers={"Content-Type": media},
            timeout=3600.0,
        )
        return dict(response.json())


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "cairn-client"
