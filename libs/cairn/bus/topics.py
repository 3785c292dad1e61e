"""Create the catalogue's topics and their dead-letter topics with the catalogue's partitions."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from cairn.bus.broker import kafka_client_options
from cairn.contracts import EventSpec, catalogue
from cairn.errors import Unavailable
from cairn.settings import CairnSettings


def topics_for(specs: Iterable[EventSpec], replication_factor: int = 1) -> list[NewTopic]:
    """Each spec's topic and its `.dlq`, once per name."""
    wanted: dict[str, NewTopic] = {}
    for spec in specs:
        for name in (spec.topic, spec.dlq_topic):
            wanted.setdefault(name, NewTopic(name, spec.partitions, replication_factor))
    return list(wanted.values())


async def ensure_topics(
    settings: CairnSettings,
    specs: Iterable[EventSpec] | None = None,
    *,
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic and `.dlq` of `specs` (default: the catalogue); existing ones are fine.

    Args:
        settings: where the cluster is.
        specs: the event types whose topics to create; None for every catalogued type.
        replication_factor: copies of each partition (1 for the embedded broker).

    Returns:
        The names of the topics this call created.
    """
    new_topics = topics_for(catalogue().values() if specs is None else specs, replication_factor)
    if not new_topics:
        return []
    admin = AIOKafkaAdminClient(**kafka_client_options(settings, client_id="cairn-admin"))
    try:
        await admin.start()
        response = await admin.create_topics(new_topics)
    except KafkaError as error:
        raise Unavailable(f"cannot create topics: {error!r}") from error
    finally:
        await admin.close()
    created: list[str] = []
    failures: list[str] = []
    for topic, error_code, *rest in response.topic_errors:
        if error_code == 0:
            created.append(topic)
            continue
        error_class = for_code(error_code)
        if issubclass(error_class, TopicAlreadyExistsError | TopicAuthorizationFailedError):
            continue  # exists, or not this principal's to create (Kafka ACLs): the operator's
        detail = rest[0] if rest and rest[0] else error_class.__name__
        failures.append(f"{topic}: {detail}")
    if failures:
        raise Unavailable("cannot create topics: " + "; ".join(failures))
    return created
