"""`cairn events`: bad input is refused before anything is sent, naming what is wrong."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cairn.cli import app
from typer.testing import CliRunner

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
