"""Settings shared by every Cairn process (pydantic-settings, `CAIRN_` prefix).

A service adds its own class with the prefix `CAIRN_<SERVICE>_` for what only it reads. The same
code runs embedded, in compose and on Kubernetes; only these values differ.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CairnSettings(BaseSettings):
    """Kernel settings: where the broker and the object store are, telemetry, auth, bus policy."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_", extra="ignore")

    home: Path = Field(
        default=Path(".cairn"), description="Runtime state, logs and the embedded store live here."
    )

    # Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="", description="host:port[,...]. Empty: `cairn up` starts the embedded broker."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (a compose / Kubernetes secret)."
    )
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # Object store --------------------------------------------------------------------------
    store_url: str = Field(
        default="", description="file:///abs/dir or s3://bucket[/prefix]. Empty: <home>/store."
    )
    s3_endpoint: str | None = Field(
        default=None, description="http(s)://host:port of MinIO / S3; empty for AWS."
    )
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # Bus policy ----------------------------------------------------------------------------
    bus_max_retries: int = Field(default=3, ge=0, description="Handler attempts after the first.")
    bus_retry_backoff_s: float = Field(default=0.2, gt=0)
    bus_retry_backoff_max_s: float = Field(default=5.0, gt=0)
    bus_session_timeout_ms: int = Field(default=6000, ge=1000)
    bus_heartbeat_interval_ms: int = Field(default=1000, ge=100)

    # HTTP ----------------------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535, description="0: pick a free port.")

    # Auth ----------------------------------------------------------------------------------
    auth_enabled: bool = Field(
        default=True,
        description="False turns every credential check off (a warning is logged at each start).",
    )
    platform_key: SecretStr | None = Field(
        default=None,
        description="Fernet key sealing stored secrets; default <home>/platform.key.",
    )
    platform_key_file: Path | None = Field(
        default=None, description="File holding the platform key (a compose / Kubernetes secret)."
    )
    bootstrap_admin_token: SecretStr | None = Field(
        default=None,
        description="`<key_id>:<secret>` of an admin key to create at start if absent (compose).",
    )
    bootstrap_admin_token_file: Path | None = Field(
        default=None, description="File holding the bootstrap admin token (a secret)."
    )

    # Telemetry -----------------------------------------------------------------------------
    otel_exporter: Literal["console", "otlp", "none"] = "console"
    otel_endpoint: str | None = Field(default=None, description="OTLP/HTTP endpoint URL.")
    log_level: str = "INFO"
    log_json: bool = True

    # Extensions ----------------------------------------------------------------------------
    contract_modules: list[str] = Field(
        default_factory=list,
        description="Extra modules imported to register more event types in the catalogue.",
    )
    services_paths: list[Path] = Field(
        default_factory=list,
        description="Extra folders scanned for services, besides the installed `services` package.",
    )

    def sasl_password(self) -> str | None:
        """The SASL password, from the setting or its secret file."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text().strip()
        return None

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to a directory under `home`."""
        if self.store_url:
            return self.store_url
        return (self.home / "store").resolve().as_uri()


@lru_cache(maxsize=1)
def get_settings() -> CairnSettings:
    """The process-wide settings, read once from the environment."""
    return CairnSettings()
