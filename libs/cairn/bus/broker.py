"""Kafka connection settings and the FastStream broker every service talks through.

One place turns the `CAIRN_KAFKA_*` settings into FastStream security objects, so the FastStream
broker and the bare aiokafka clients (admin, lag, CLI producer/tail) connect the same way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from opentelemetry.trace import TracerProvider

from cairn.errors import ConfigError
from cairn.settings import CairnSettings


def bootstrap_servers(settings: CairnSettings) -> list[str]:
    """The `host:port` list from the settings; ConfigError when none is set."""
    servers = [part.strip() for part in settings.kafka_bootstrap_servers.split(",") if part.strip()]
    if not servers:
        raise ConfigError(
            "CAIRN_KAFKA_BOOTSTRAP_SERVERS is empty; start the embedded broker (`cairn up`) "
            "or point it at a Kafka cluster"
        )
    return servers


def _ssl_context(settings: CairnSettings) -> ssl.SSLContext:
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    return context


def broker_security(settings: CairnSettings) -> BaseSecurity | None:
    """FastStream's security object for the configured protocol (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    use_ssl = protocol in ("SSL", "SASL_SSL")
    context = _ssl_context(settings) if use_ssl else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    mechanism = settings.kafka_sasl_mechanism
    username = settings.kafka_sasl_username
    password = settings.sasl_password()
    if mechanism is None or username is None or password is None:
        raise ConfigError(
            f"{protocol} needs CAIRN_KAFKA_SASL_MECHANISM, CAIRN_KAFKA_SASL_USERNAME "
            "and CAIRN_KAFKA_SASL_PASSWORD (or CAIRN_KAFKA_SASL_PASSWORD_FILE)"
        )
    sasl_class = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }[mechanism]
    return sasl_class(
        username=username,
        password=password,
        ssl_context=context,
        use_ssl=use_ssl,
    )


def kafka_client_options(settings: CairnSettings, *, client_id: str) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client.

    Built from the same security object FastStream gets, with FastStream's own translation.
    """
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": client_id,
        **parse_security(broker_security(settings)),
    }


def build_broker(
    settings: CairnSettings,
    *,
    client_id: str,
    tracer_provider: TracerProvider | None = None,
    **kwargs: Any,
) -> KafkaBroker:
    """A FastStream Kafka broker for one process, with OpenTelemetry spans across every hop.

    Args:
        settings: where the cluster is and how to authenticate.
        client_id: names this process in broker logs and consumer-group listings.
        tracer_provider: where spans go; default the global one (see `cairn.telemetry`).
        **kwargs: passed to `KafkaBroker` (extra `middlewares` run after the telemetry one).
    """
    telemetry = KafkaTelemetryMiddleware(tracer_provider=tracer_provider)
    middlewares = (telemetry, *kwargs.pop("middlewares", ()))
    kwargs.setdefault("acks", "all")
    return KafkaBroker(
        bootstrap_servers(settings),
        client_id=client_id,
        security=broker_security(settings),
        middlewares=middlewares,
        **kwargs,
    )


async def start_broker(
    broker: KafkaBroker,
    deferred_groups: frozenset[str] = frozenset(),
    idle_groups: frozenset[str] = frozenset(),
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Start a broker with all its subscribers joining their groups at once.

    FastStream starts subscribers one after another, and each consumer's group join waits on the
    coordinator (about half the session timeout on Tansu), so a service with four subscribers took
    four joins in a row to become ready. Joining concurrently makes start-up one join long.

    Subscribers of `deferred_groups` are not started here: the returned coroutine function starts
    them, for a service that must not wait on those joins to be ready (the gateway serves
    invocations while its async workers' group still rebalances around a replica that died).
    Subscribers of `idle_groups` are never started: declared (contracts, ACLs) for the replicas
    that do join, such as the trainer's GPU pool, and left alone by this one.
    """
    await broker.connect()
    groups = [(s, getattr(s, "group_id", None)) for s in broker.subscribers]
    now = [s for s, group in groups if group not in deferred_groups | idle_groups]
    later = [s for s, group in groups if group in deferred_groups and group not in idle_groups]
    await asyncio.gather(*(subscriber.start() for subscriber in now))
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True

    async def start_deferred() -> None:
        await asyncio.gather(*(subscriber.start() for subscriber in later))

    return start_deferred
