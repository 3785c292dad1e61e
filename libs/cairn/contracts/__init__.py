"""Event contracts: the envelope, the catalogue and every event model."""

from cairn.contracts import (
    async_events,
    batch_events,
    edge_events,
    events,
    labeling_events,
    pipeline_events,
    processing_events,
    review_events,
    scaling_events,
    training_events,
    tuner_events,
)
from cairn.contracts.catalogue import (
    EventSpec,
    catalogue,
    decode_envelope,
    event,
    load_contract_modules,
    spec_for,
    spec_for_topic,
    validate_data,
)
from cairn.contracts.envelope import Envelope, RawEnvelope

__all__ = [
    "Envelope",
    "EventSpec",
    "RawEnvelope",
    "async_events",
    "batch_events",
    "catalogue",
    "decode_envelope",
    "edge_events",
    "event",
    "events",
    "labeling_events",
    "load_contract_modules",
    "pipeline_events",
    "processing_events",
    "review_events",
    "scaling_events",
    "spec_for",
    "spec_for_topic",
    "training_events",
    "tuner_events",
    "validate_data",
]
