"""The event bus: FastStream + aiokafka with envelopes, at-least-once handling, DLQs and lag.

build_broker      a FastStream KafkaBroker from the settings (security, OpenTelemetry)
start_broker      start it with every subscriber joining its group concurrently
publish_event     envelope + catalogue topic + aggregate key, through a broker
subscribe         decode, dedupe (ProcessedLedger), retry, dead-letter, commit after success
ensure_topics     create the catalogue's topics and their `.dlq`
consumer_group_lag  lag that is right on Kafka and on Tansu
EventProducer / tail_events  for the CLI and SDK, without a FastStream app
"""

from cairn.bus.broker import broker_security, build_broker, kafka_client_options, start_broker
from cairn.bus.client import EventProducer, TailedEvent, tail_events
from cairn.bus.lag import GroupLag, PartitionLag, consumer_group_lag
from cairn.bus.ledger import ProcessedLedger
from cairn.bus.publish import envelope_for, publish_event
from cairn.bus.subscribe import (
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_SIZE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REASON,
    DLQ_TRUNCATED,
    DLQ_TRUNCATED_VALUE_BYTES,
    EventHandler,
    RetryPolicy,
    subscribe,
)
from cairn.bus.topics import ensure_topics

__all__ = [
    "DLQ_ATTEMPTS",
    "DLQ_ERROR",
    "DLQ_ERROR_TYPE",
    "DLQ_GROUP",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_SIZE",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_REASON",
    "DLQ_TRUNCATED",
    "DLQ_TRUNCATED_VALUE_BYTES",
    "EventHandler",
    "EventProducer",
    "GroupLag",
    "PartitionLag",
    "ProcessedLedger",
    "RetryPolicy",
    "TailedEvent",
    "broker_security",
    "build_broker",
    "consumer_group_lag",
    "ensure_topics",
    "envelope_for",
    "kafka_client_options",
    "publish_event",
    "start_broker",
    "subscribe",
    "tail_events",
]
