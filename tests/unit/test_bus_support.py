"""Ledger, connection settings, lag arithmetic and the CLI's record reader, without a broker."""

from __future__ import annotations

import json
import ssl
import uuid
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from cairn.bus import ProcessedLedger, broker_security, kafka_client_options
from cairn.bus.client import read_record
from cairn.bus.lag import GroupLag, PartitionLag
from cairn.bus.publish import envelope_for
from cairn.contracts import Envelope
from cairn.contracts.events import TrainingJobStarted
from cairn.errors import ConfigError, InvalidInput
from cairn.settings import CairnSettings
from cairn.store.local import LocalObjectStore
from faststream.security import SASLScram512


async def test_ledger_remembers_across_restarts_and_keeps_groups_apart(tmp_path: Path) -> None:
    event_id = uuid.uuid4()
    ledger = ProcessedLedger(LocalObjectStore(tmp_path), "trainer")

    assert not await ledger.seen(event_id)
    assert await ledger.mark(event_id, event_type="TrainingJobRequested")
    assert not await ledger.mark(event_id)  # a concurrent duplicate loses

    restarted = ProcessedLedger(LocalObjectStore(tmp_path), "trainer")
    assert await restarted.seen(str(event_id))
    assert not await ProcessedLedger(LocalObjectStore(tmp_path), "registry").seen(event_id)
    stored = json.loads(LocalObjectStore(tmp_path).get_bytes(ledger.key_for(event_id)))
    assert stored["type"] == "TrainingJobRequested"


def test_ledger_refuses_a_group_id_that_is_not_a_folder_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        ProcessedLedger(LocalObjectStore(tmp_path), "../escape")


def test_plaintext_needs_no_security_object() -> None:
    settings = CairnSettings(kafka_bootstrap_servers="a:9092, b:9092")

    assert broker_security(settings) is None
    assert kafka_client_options(settings, client_id="x") == {
        "bootstrap_servers": ["a:9092", "b:9092"],
        "client_id": "x",
    }


def test_scram_over_tls_reaches_aiokafka_with_credentials_and_an_ssl_context() -> None:
    settings = CairnSettings(
        kafka_bootstrap_servers="kafka:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cairn",
        kafka_sasl_password="s3cret",
    )

    security = broker_security(settings)
    options = kafka_client_options(settings, client_id="x")

    assert isinstance(security, SASLScram512)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "cairn"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_without_credentials_and_no_bootstrap_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="SASL_MECHANISM"):
        broker_security(CairnSettings(kafka_security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(ConfigError, match="BOOTSTRAP"):
        kafka_client_options(CairnSettings(kafka_bootstrap_servers=" "), client_id="x")


def test_lag_counts_from_the_commit_or_from_the_log_start() -> None:
    lag = GroupLag(
        group_id="g",
        partitions=[
            PartitionLag("t", 0, committed=7, log_start=0, end_offset=10),
            PartitionLag("t", 1, committed=None, log_start=2, end_offset=5),  # never committed
            PartitionLag("t", 2, committed=1, log_start=4, end_offset=6),  # log was truncated
            PartitionLag("u", 0, committed=3, log_start=0, end_offset=3),
        ],
    )

    assert [p.lag for p in lag.partitions] == [3, 3, 2, 0]
    assert lag.total == 8
    assert lag.by_topic() == {"t": 8, "u": 0}


def _record(value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="t",
        partition=1,
        offset=9,
        timestamp=0,
        timestamp_type=0,
        key=b"job-1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=0,
        headers=[],
    )


def test_tail_reader_gives_envelopes_and_explains_bad_records() -> None:
    envelope = envelope_for(
        TrainingJobStarted(job_name="job-1", worker_id="w", device="cpu"), source="t"
    )

    good = read_record(_record(envelope.model_dump_json().encode()))
    bad_json = read_record(_record(b"oops"))
    bad_data = read_record(_record(b'{"type": "TrainingJobStarted", "data": {}}'))

    assert good.key == "job-1" and good.error is None
    assert isinstance(good.event, Envelope) and good.event.event_id == envelope.event_id
    assert bad_json.event == {"raw": "oops"} and "invalid envelope" in (bad_json.error or "")
    assert bad_data.event["type"] == "TrainingJobStarted"  # type: ignore[index]
    assert bad_data.error
