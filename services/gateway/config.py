"""Gateway settings (`CAIRN_GATEWAY_*`): limits, batching, capture and reporting.

Credentials are the kernel's (`CAIRN_AUTH_ENABLED`, keys in `platform/keys/`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """What only the gateway reads; the kernel settings (`CAIRN_*`) say where the store is."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_GATEWAY_", extra="ignore")

    max_body_bytes: int = Field(default=6 * 1024 * 1024, gt=0, description="SageMaker's limit.")
    default_endpoint: str | None = Field(
        default=None, description="Served by POST /invocations; default: the only endpoint."
    )
    batch_max_size: int = Field(default=64, ge=1, description="Rows stacked into one predict.")
    batch_inline_max_rows: int = Field(
        default=64,
        ge=0,
        description="Batches of at most this many rows predict on the event loop, larger ones "
        "in a worker thread (0: every batch in a thread).",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait for a batch to fill once requests queue; 0: batch only what "
        "arrives while the previous batch runs (no added latency).",
    )
    micro_batching: bool = True
    gpu: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: large requests to XGBoost models predict on a GPU when one is usable "
        "(an XGBoost built with CUDA and `nvidia-smi -L` listing a GPU); off: never.",
    )
    gpu_min_rows: int = Field(
        default=2048,
        ge=1,
        description="Rows from which a request is large: it skips the micro-batcher for the GPU "
        "when there is one, and its answer says which device served it (X-Cairn-Device).",
    )
    mme_cache_bytes: int = Field(
        default=1 << 30,
        gt=0,
        description="Memory budget of models not pinned by a deployed variant.",
    )
    capture_sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests captured (0 turns capture off)."
    )
    capture_flush_s: float = Field(default=5.0, gt=0)
    capture_flush_records: int = Field(default=1000, ge=1)
    metrics_report_s: float = Field(default=5.0, gt=0)
    role: Literal["all", "serve", "worker"] = Field(
        default="all",
        description="all: serve invocations and run async requests too; serve: serve only "
        "(the gateway-async pool runs async requests); worker: run async requests only (a "
        "member of the autoscaled pool).",
    )
    async_concurrency: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Async requests one instance runs at once (its consumers of the queue).",
    )
    async_max_inline_bytes: int = Field(
        default=128_000, gt=0, description="Largest inline InvokeEndpointAsync body (SageMaker's)."
    )
    script_invocation_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a script model's inference.py may take per request (SageMaker's "
        "60 s) before its model server is killed and restarted.",
    )
    max_processes: int = Field(
        default=0,
        ge=0,
        description="Most gateway processes the variants' instance counts may start on this "
        "machine (they share the port with SO_REUSEPORT); 0: one per core.",
    )
    process_index: int = Field(
        default=0, ge=0, description="Set by the primary (0) on the processes it starts."
    )
    script_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a script model's model_fn may take to load (a container model's "
        "image: to answer GET /ping).",
    )
    container_engine_url: str | None = Field(
        default=None,
        description="The Docker engine container models run on; default: DOCKER_HOST, else the "
        "local socket.",
    )
    container_network: str | None = Field(
        default=None,
        description="A network model containers join, reached there on port 8080 (a gateway in a "
        "container); default: a port published on 127.0.0.1.",
    )
    container_instance: str | None = Field(
        default=None,
        description="This gateway's `cairn.gateway` label on its model containers; default: the "
        "host name and process index.",
    )
