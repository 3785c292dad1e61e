"""`cairn_sdk.Client`: the platform's HTTP APIs as one Python object, with the CLI's verbs.

Each service keeps its own base URL: the embedded platform (`cairn up`) gives every service its
own port (read from `<home>/runtime.json`), compose and Kubernetes give each its own host. Every
call sends the user's credential (`CAIRN_API_KEY`, else the one `cairn up` saved in the home) as
`Authorization: Bearer`. Errors come back as the `cairn.errors` class matching the service's
`{"error", "code"}` answer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx
from cairn.errors import InvalidInput, NotFound, Unavailable

from cairn_sdk.admin import AdminCalls
from cairn_sdk.base import RECONNECT_TIMEOUT_S
from cairn_sdk.batch import BatchCalls
from cairn_sdk.credentials import bearer_headers, resolve_token
from cairn_sdk.edge import EdgeCalls
from cairn_sdk.errors import EndpointFailed
from cairn_sdk.experiments import ExperimentsCalls
from cairn_sdk.gateway import ACCESS_KEY_ENV, GatewayCalls
from cairn_sdk.labeling import LabelingCalls
from cairn_sdk.pipelines import PipelineCalls
from cairn_sdk.processing import ProcessingCalls
from cairn_sdk.review import ReviewCalls
from cairn_sdk.tuning import TuningCalls
from cairn_sdk.urls import service_urls

TERMINAL_JOB_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
UPLOAD_CHUNK_BYTES = 1 << 20
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".parquet": "application/x-parquet",
    ".pq": "application/x-parquet",
    ".jsonl": "application/jsonlines",
    ".ndjson": "application/jsonlines",
}


class Client(
    GatewayCalls,
    AdminCalls,
    BatchCalls,
    TuningCalls,
    EdgeCalls,
    ProcessingCalls,
    ExperimentsCalls,
    PipelineCalls,
    LabelingCalls,
    ReviewCalls,
):
    """One object for every control-plane verb, the gateway's invocations, keys and audit."""

    def __init__(
        self,
        trainer_url: str | None = None,
        registry_url: str | None = None,
        deployer_url: str | None = None,
        gateway_url: str | None = None,
        ingest_url: str | None = None,
        batch_url: str | None = None,
        tuner_url: str | None = None,
        edge_url: str | None = None,
        experiments_url: str | None = None,
        pipelines_url: str | None = None,
        labeling_url: str | None = None,
        *,
        api_key: str | None = None,
        access_key: str | None = None,
        home: Path | str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Args:
        trainer_url, registry_url, deployer_url, gateway_url, ingest_url, batch_url, tuner_url,
        edge_url, experiments_url, pipelines_url, labeling_url: base URLs.
        api_key: the credential `KEY_ID:SECRET`, sent as `Authorization: Bearer` on every call;
            default CAIRN_API_KEY, else `<home>/credentials.json` (made by `cairn up`).
        access_key: another credential for gateway invocations only (a narrow `invoke` key);
            default CAIRN_ACCESS_KEY, else `api_key`.
        home: the runtime folder holding the credential; default CAIRN_HOME or .cairn.
        timeout_s: per-request timeout.
        transport: an httpx transport (tests pass a MockTransport or an ASGI one).
        """
        given = {
            "trainer": trainer_url,
            "registry": registry_url,
            "deployer": deployer_url,
            "gateway": gateway_url,
            "ingest": ingest_url,
            "batch": batch_url,
            "tuner": tuner_url,
            "edge": edge_url,
            "experiments": experiments_url,
            "pipelines": pipelines_url,
            "labeling": labeling_url,
        }
        self.urls = {name: url.rstrip("/") for name, url in given.items() if url}
        self.api_key = (api_key if api_key is not None else resolve_token(home)) or None
        self.access_key = (
            access_key if access_key is not None else os.environ.get(ACCESS_KEY_ENV) or None
        )
        self._http = httpx.Client(
            timeout=timeout_s,
            headers=bearer_headers(self.api_key),
            transport=transport,
            trust_env=False,
        )

    # Construction ---------------------------------------------------------------------------

    @classmethod
    def from_runtime(cls, home: Path | str | None = None, **options: Any) -> Self:
        """The platform `cairn up` runs on `home` (default: CAIRN_HOME or .cairn)."""
        where = Path(home) if home else None
        client = cls._from_urls(service_urls(home=where), home=where, **options)
        client._rediscover = functools.partial(service_urls, home=where)
        return client

    @classmethod
    def from_target(cls, url: str | None = None, **options: Any) -> Self:
        """Every service at `url` (one ingress), each overridable by CAIRN_<SERVICE>_URL."""
        return cls._from_urls(service_urls(target=url), **options)

    @classmethod
    def from_env(cls, target: str | None = None, home: Path | None = None, **options: Any) -> Self:
        """What the CLI uses: CAIRN_<SERVICE>_URL, else --target/CAIRN_TARGET, else runtime.json."""
        client = cls._from_urls(service_urls(target=target, home=home), home=home, **options)
        client._rediscover = functools.partial(service_urls, target=target, home=home)
        return client

    @classmethod
    def _from_urls(cls, urls: dict[str, str], **options: Any) -> Self:
        return cls(
            trainer_url=urls.get("trainer"),
            registry_url=urls.get("registry"),
            deployer_url=urls.get("deployer"),
            gateway_url=urls.get("gateway"),
            ingest_url=urls.get("ingest"),
            batch_url=urls.get("batch"),
            tuner_url=urls.get("tuner"),
            edge_url=urls.get("edge"),
            experiments_url=urls.get("experiments"),
            pipelines_url=urls.get("pipelines"),
            labeling_url=urls.get("labeling"),
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
        experiment: str | None = None,
        instance_count: int = 1,
        input_mode: Literal["File", "Pipe", "FastFile"] = "File",
        checkpoint_uri: str | None = None,
        checkpoint_interval_rounds: int | None = None,
        max_wait_s: int | None = None,
        allow_cpu_fallback: bool = False,
        image: str | None = None,
        metric_definitions: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """CreateTrainingJob: `channels` maps a channel name (train, validation) to a URI.

        `instance_count` > 1 trains XGBoost over that many Dask workers (script mode: hosts);
        `checkpoint_uri` (under outputs/) makes a killed job resume from its last checkpoint.
        `image` runs your own training image (SageMaker's /opt/ml contract; the algorithm is then
        `script`), and `metric_definitions` maps a metric name to the regex that reads it from
        the job's log lines.
        """
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
            "resources": {
                "device": device,
                "instance_count": instance_count,
                "allow_cpu_fallback": allow_cpu_fallback,
            },
            "tags": dict(tags or {}),
            "input_mode": input_mode,
        }
        if register_group:
            request["registration"] = {"model_package_group": register_group}
        if output_uri:
            request["output_uri"] = output_uri
        stopping: dict[str, int] = {}
        if max_runtime_s:
            stopping["max_runtime_s"] = max_runtime_s
        if max_wait_s:
            stopping["max_wait_time_s"] = max_wait_s
        if stopping:
            request["stopping_condition"] = stopping
        if checkpoint_uri:
            checkpoint: dict[str, Any] = {"uri": checkpoint_uri}
            if checkpoint_interval_rounds:
                checkpoint["interval_rounds"] = checkpoint_interval_rounds
            request["checkpoint_config"] = checkpoint
        if experiment:
            request["experiment"] = experiment
        if image:
            request["image"] = image
        if metric_definitions:
            request["metric_definitions"] = [
                {"name": name, "regex": regex} for name, regex in metric_definitions.items()
            ]
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
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job document until it is Completed or Failed; `on_progress` sees each poll.

        A trainer that restarts meanwhile (unreachable, 502/503/504) is waited for, on its new
        URL if it moved, for up to `reconnect_timeout_s` at a time; `on_retry` sees each failure.
        """
        deadline = time.monotonic() + timeout_s
        path = f"/training-jobs/{job_name}"
        while True:
            job = dict(
                self._json_through_restarts(
                    "GET",
                    "trainer",
                    path,
                    reconnect_timeout_s=reconnect_timeout_s,
                    on_retry=on_retry,
                )
            )
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

    def _decide(self, group: str, version: int | str, status: str, reason: str) -> dict[str, Any]:
        path = f"/model-package-groups/{group}/versions/{version}/approval"
        body = {"status": status, "reason": reason}
        return dict(self._json("POST", "registry", path, json=body))

    def approve(self, group: str, version: int | str, *, reason: str = "") -> dict[str, Any]:
        """Approve a version; the registry records your key's principal as the approver."""
        return self._decide(group, version, "Approved", reason)

    def reject(self, group: str, version: int | str, *, reason: str = "") -> dict[str, Any]:
        """Reject a version; the registry records your key's principal."""
        return self._decide(group, version, "Rejected", reason)

    def set_alias(self, group: str, alias: str, version: int) -> dict[str, Any]:
        path = f"/model-package-groups/{group}/aliases/{alias}"
        return dict(self._json("PUT", "registry", path, json={"version": version}))

    def wait_for_model_package(
        self, job_name: str, group: str, *, timeout_s: float = 30.0, poll_s: float = 0.25
    ) -> dict[str, Any]:
        """The version registered from `job_name` (the registry registers on the job's event)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(NotFound, Unavailable):
                for version in self.list_model_packages(group):
                    if version.get("lineage", {}).get("training_job") == job_name:
                        return version
            if time.monotonic() > deadline:
                raise Unavailable(f"no version of {group} registered from {job_name} yet")
            time.sleep(poll_s)
            self.refresh_urls()

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

    def put_scaling_policy(
        self,
        endpoint_name: str,
        variant_name: str,
        *,
        target_invocations_per_instance: float,
        min_capacity: int = 1,
        max_capacity: int = 1,
        scale_in_cooldown_s: float = 300.0,
        scale_out_cooldown_s: float = 60.0,
    ) -> dict[str, Any]:
        """RegisterScalableTarget + PutScalingPolicy (target tracking on InvocationsPerInstance,
        invocations a minute); min_capacity 0 lets the variant scale to zero (serverless)."""
        body = {
            "target_invocations_per_instance": target_invocations_per_instance,
            "min_capacity": min_capacity,
            "max_capacity": max_capacity,
            "scale_in_cooldown_s": scale_in_cooldown_s,
            "scale_out_cooldown_s": scale_out_cooldown_s,
        }
        path = f"/endpoints/{endpoint_name}/variants/{variant_name}/scaling-policy"
        return dict(self._json("PUT", "deployer", path, json=body))

    def delete_scaling_policy(self, endpoint_name: str, variant_name: str) -> dict[str, Any]:
        path = f"/endpoints/{endpoint_name}/variants/{variant_name}/scaling-policy"
        return dict(self._json("DELETE", "deployer", path))

    def describe_scaling(self, endpoint_name: str, limit: int = 20) -> dict[str, Any]:
        """Each variant's instance count and policy, and the latest scaling activities."""
        path = f"/endpoints/{endpoint_name}/scaling"
        return dict(self._json("GET", "deployer", path, params={"limit": limit}))

    def wait_for_endpoint(
        self,
        endpoint_name: str,
        *,
        status: str = "InService",
        serving: bool = True,
        timeout_s: float = 120.0,
        poll_s: float = 0.25,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Poll until the deployer says `status` and (with `serving`) the gateway serves that
        revision or a later one: the deployer stores a revision before it announces it, so the
        gateway may still serve an older one (until the deployer, restarted, announces it).

        A deployer or gateway that restarts meanwhile is waited for (on its new URL if it moved).
        """
        deadline = time.monotonic() + timeout_s
        path = f"/endpoints/{endpoint_name}"
        while True:
            endpoint = dict(
                self._json_through_restarts(
                    "GET", "deployer", path, reconnect_timeout_s=reconnect_timeout_s
                )
            )
            if endpoint["status"] in ("Failed", "Deleted") and endpoint["status"] != status:
                raise EndpointFailed(f"endpoint {endpoint_name} is {endpoint['status']}")
            if endpoint["status"] == status:
                served = self.served_revision(endpoint_name) if serving else None
                if not serving or (served is not None and served >= endpoint["revision"]):
                    return endpoint
                self.refresh_urls()  # the gateway may have restarted on another port
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

    def served_revision(self, endpoint_name: str) -> int | None:
        """The endpoint's revision the gateway serves now; None when it serves none."""
        path = f"/endpoints/{endpoint_name}/models"
        try:
            return int(self._json("GET", "gateway", path)["revision"])
        except (NotFound, InvalidInput, Unavailable):
            return None

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
