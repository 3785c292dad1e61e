"""`cairn events`: bad input is refused before anything is sent, naming what is wrong; what is
sent is signed with the user's credential."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cairn.auth.credentials import save_home_credential
from cairn.auth.keys import KeyRing
from cairn.auth.sealing import secret_box
from cairn.auth.signing import EnvelopeVerifier
from cairn.bus.publish import Signer, envelope_for, outgoing_message, signed
from cairn.contracts.catalogue import validate_data
from cairn.errors import Forbidden
from cairn.store.memory import InMemoryObjectStore
from cairn_cli import app
from typer.testing import CliRunner

from tests.support.auth import auth_settings, token_for

runner = CliRunner()
catalogue_module = importlib.import_module("cairn.contracts.catalogue")


ECHO_CONTRACTS = "tests.services.echo.contracts"


@pytest.fixture(autouse=True)
def echo_contracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The echo test service's events are known; no platform runs on the temporary home.

    The catalogue is process-wide: the echo types are removed afterwards so they cannot leak
    into other tests (contract generation above all).
    """
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAIRN_CONTRACT_MODULES", json.dumps([ECHO_CONTRACTS]))
    monkeypatch.delenv("CAIRN_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CAIRN_SERVICES_PATHS", raising=False)
    monkeypatch.delenv("CAIRN_API_KEY", raising=False)
    yield
    if sys.modules.pop(ECHO_CONTRACTS, None) is not None:
        for name in ("EchoRequested", "EchoCompleted"):
            catalogue_module._CATALOGUE.pop(name, None)


def test_publish_with_a_missing_field_exits_2_naming_the_field() -> None:
    result = runner.invoke(
        app, ["events", "publish", "EchoRequested", "--data", '{"request_id": "r-1"}']
    )

    assert result.exit_code == 2
    assert "data.message" in result.output
    assert "Field required" in result.output


def test_publish_with_a_wrongly_typed_nested_field_names_its_path() -> None:
    data = {
        "job_name": "job-1",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "s3://b/k", "content_type": "text/xml"}],
    }
    result = runner.invoke(
        app, ["events", "publish", "TrainingJobRequested", "--data", json.dumps(data)]
    )

    assert result.exit_code == 2
    assert "data.input_channels.0.content_type" in result.output


def test_publish_of_an_unknown_type_exits_2_and_lists_known_types() -> None:
    result = runner.invoke(app, ["events", "publish", "EchoRequestd", "--data", "{}"])

    assert result.exit_code == 2
    assert "unknown event type 'EchoRequestd'" in result.output
    assert "EchoRequested" in result.output


@pytest.mark.parametrize("data", ["{not json", "[1, 2]"])
def test_publish_of_malformed_json_exits_2(data: str) -> None:
    result = runner.invoke(app, ["events", "publish", "EchoRequested", "--data", data])

    assert result.exit_code == 2
    assert "--data" in result.output


def test_publish_reads_data_from_a_file(tmp_path: Path) -> None:
    payload = tmp_path / "event.json"
    payload.write_text('{"request_id": "bad id!", "message": "hi"}')

    result = runner.invoke(app, ["events", "publish", "EchoRequested", "--data", f"@{payload}"])

    assert result.exit_code == 2
    assert "data.request_id" in result.output


def test_valid_publish_without_a_running_platform_says_how_to_start_one() -> None:
    result = runner.invoke(
        app,
        ["events", "publish", "EchoRequested", "--data", '{"request_id": "r-1", "message": "x"}'],
    )

    assert result.exit_code == 1
    assert "cairn up" in result.output
    assert "--kafka" in result.output


def test_tail_of_an_unknown_type_exits_2() -> None:
    result = runner.invoke(app, ["events", "tail", "--type", "Nope", "--kafka", "127.0.0.1:1"])

    assert result.exit_code == 2
    assert "unknown event type 'Nope'" in result.output


def test_list_shows_builtin_and_contract_module_events() -> None:
    result = runner.invoke(app, ["events", "list", "--json"])

    assert result.exit_code == 0
    rows = {row["type"]: row for row in json.loads(result.stdout)}
    assert rows["EchoRequested"] == {
        "type": "EchoRequested",
        "topic": "cairn.echo.echo-requested",
        "key": "request_id",
        "owner": "echo",
        "partitions": 2,
        "description": "Someone asks echo to store a message and answer.",
    }
    assert rows["TrainingJobRequested"]["owner"] == "trainer"


class RecordingProducer:
    """Stands in for Kafka: builds, signs and encodes the envelope as EventProducer does."""

    sent: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, settings: Any, *, source: str, signer: Signer | None = None) -> None:
        self.source = source
        self.signer = signer

    async def __aenter__(self) -> RecordingProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def publish_raw(
        self, event_type: str, data: dict[str, Any], *, correlation_id: str | None = None
    ) -> Any:
        model = validate_data(event_type, data)
        envelope = envelope_for(model, source=self.source, correlation_id=correlation_id)
        envelope = signed(envelope, self.signer)
        self.sent.append(json.loads(outgoing_message(envelope).value))
        return envelope


@pytest.fixture()
def key_ring(monkeypatch: pytest.MonkeyPatch) -> tuple[InMemoryObjectStore, Any]:
    from cairn.bus import client

    RecordingProducer.sent.clear()
    monkeypatch.setattr(client, "EventProducer", RecordingProducer)
    return InMemoryObjectStore(), auth_settings()


def _verify(ring: tuple[InMemoryObjectStore, Any], payload: dict[str, Any]) -> str:
    store, settings = ring
    box = secret_box(settings)
    return EnvelopeVerifier(KeyRing(store, box), box).verify(payload).name


def test_publish_signs_the_envelope_with_the_users_key(
    key_ring: tuple[InMemoryObjectStore, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, settings = key_ring
    monkeypatch.setenv("CAIRN_API_KEY", token_for(store, settings, ["train"], name="alice"))
    data = {"request_id": "r-1", "message": "hi"}

    result = runner.invoke(
        app, ["events", "publish", "EchoRequested", "--data", json.dumps(data), "--kafka", "k:1"]
    )

    assert result.exit_code == 0, result.output
    [payload] = RecordingProducer.sent
    assert payload["key_id"] == os.environ["CAIRN_API_KEY"].split(":")[0]
    assert _verify(key_ring, payload) == "alice"
    payload["data"]["message"] = "tampered"
    with pytest.raises(Forbidden):
        _verify(key_ring, payload)


def test_publish_signs_with_the_homes_credential_when_no_key_is_set(
    key_ring: tuple[InMemoryObjectStore, Any], tmp_path: Path
) -> None:
    store, settings = key_ring
    save_home_credential(tmp_path / "home", token_for(store, settings, ["admin"]), name="admin")
    data = {"request_id": "r-2", "message": "hi"}

    result = runner.invoke(
        app, ["events", "publish", "EchoRequested", "-d", json.dumps(data), "--kafka", "k:1"]
    )

    assert result.exit_code == 0, result.output
    assert _verify(key_ring, RecordingProducer.sent[0]) == "tester"


def test_a_privileged_request_without_a_credential_is_not_sent(
    key_ring: tuple[InMemoryObjectStore, Any],
) -> None:
    data = {
        "job_name": "job-1",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "data/x.csv", "content_type": "text/csv"}],
    }

    result = runner.invoke(
        app,
        ["events", "publish", "TrainingJobRequested", "-d", json.dumps(data), "--kafka", "k:1"],
    )

    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "'train' scope" in flat and "CAIRN_API_KEY" in flat
    assert RecordingProducer.sent == []
