"""`cairn contracts`: deterministic output, a --check that catches drift, new events, services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from cairn.contracts import catalogue
from cairn.contracts.state import all_states
from cairn.contracts_gen import diff_contracts, write_contracts
from cairn.settings import CairnSettings
from cairn_cli import app
from typer.testing import CliRunner

REPO_CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"


CLI = [sys.executable, "-c", "from cairn_cli import main; main()"]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without a developer's CAIRN_* settings, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}, **extra}


def _settings() -> CairnSettings:
    # Explicit, so a developer's CAIRN_* environment cannot change what is generated here.
    return CairnSettings(contract_modules=[], services_paths=[])


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_generation_is_deterministic_and_complete(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_contracts(first, _settings())
    write_contracts(second, _settings())

    files = _tree(first)
    assert files == _tree(second)
    for event_type in catalogue():
        assert f"events/{event_type}.json" in files
    for state in all_states():
        assert f"state/{state.name}.json" in files
    assert {
        "asyncapi.yaml",
        "catalogue.json",
        "README.md",
        "kafka-acls.txt",
        "kafka-acls.json",
    } <= files.keys()
    for name, content in files.items():
        assert content.endswith(b"\n") and not content.endswith(b"\n\n"), name
        assert str(tmp_path).encode() not in content, name
        assert b"/work/" not in content, name


@pytest.mark.timeout(60)
def test_checked_in_contracts_are_current() -> None:
    # A fresh process, as in CI: other tests register throw-away events in this one's catalogue.
    result = subprocess.run(
        [*CLI, "contracts", "--check", "--out", str(REPO_CONTRACTS)],
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_event_schema_is_the_full_envelope(tmp_path: Path) -> None:
    write_contracts(tmp_path, _settings())
    schema = json.loads((tmp_path / "events" / "TrainingJobRequested.json").read_text())
    assert set(schema["required"]) >= {"type", "source", "correlation_id", "data"}
    assert schema["properties"]["data"] == {"$ref": "#/$defs/TrainingJobRequested"}
    assert "algorithm" in schema["$defs"]["TrainingJobRequested"]["required"]

    entries = {
        e["type"]: e for e in json.loads((tmp_path / "catalogue.json").read_text())["events"]
    }
    assert entries["TrainingJobRequested"] == {
        "type": "TrainingJobRequested",
        "topic": "cairn.trainer.training-job-requested",
        "dlq_topic": "cairn.trainer.training-job-requested.dlq",
        "key_field": "job_name",
        "owner": "trainer",
        "partitions": 8,
        "description": "A user or service asks for a training job (CreateTrainingJob).",
        "schema": "events/TrainingJobRequested.json",
        "required_scope": "train",
        "senders": ["monitor", "tuner", "pipelines", "labeling"],
    }

    asyncapi = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())
    channel = asyncapi["channels"]["TrainingJobRequested"]
    assert channel["address"] == "cairn.trainer.training-job-requested"
    assert asyncapi["operations"]["TrainingJobRequested"]["action"] == "send"
    payload_ref = asyncapi["components"]["messages"]["TrainingJobRequested:Message"]["payload"]
    assert payload_ref["$ref"].endswith("Envelope%5BTrainingJobRequested%5D")


def test_stored_state_contract_schema_names_owner_prefix_and_version(tmp_path: Path) -> None:
    write_contracts(tmp_path, _settings())
    schema = json.loads((tmp_path / "state" / "EndpointStateView.json").read_text())

    assert schema["x-cairn-state"] == {
        "owner": "deployer",
        "prefix": "deployer/endpoints/",
        "key_pattern": "{0}.json",
        "version": 1,
    }
    assert "endpoint_name" in schema["required"]


def test_kafka_acls_follow_what_each_service_subscribes_to(tmp_path: Path) -> None:
    write_contracts(tmp_path, _settings())
    acls = json.loads((tmp_path / "kafka-acls.json").read_text())["acls"]

    def granted(service: str, operation: str) -> set[str]:
        return {
            acl["resource_name"]
            for acl in acls
            if acl["principal"] == f"User:cairn-{service}" and acl["operation"] == operation
        }

    # The registry consumes TrainingJobCompleted: it reads it and may dead-letter it, not forge it.
    assert "cairn.trainer.training-job-completed" in granted("registry", "READ")
    assert "cairn.trainer.training-job-completed.dlq" in granted("registry", "WRITE")
    assert "cairn.trainer.training-job-completed" not in granted("registry", "WRITE")
    assert "cairn.trainer.training-job-requested" in granted("trainer", "READ")
    assert "cairn.trainer" in granted("trainer", "READ"), "the worker pool's consumer group"
    # The gateway's routing table follows EndpointUpdated as a broadcast (no group, no DLQ).
    assert "cairn.deployer.endpoint-updated" in granted("gateway", "READ")
    assert "cairn.deployer.endpoint-updated.dlq" not in granted("gateway", "WRITE")
    text = (tmp_path / "kafka-acls.txt").read_text()
    assert (
        "kafka-acls --bootstrap-server $BOOTSTRAP --command-config admin.properties --add "
        "--allow-principal User:cairn-trainer --operation Write --operation Describe "
        "--topic cairn.trainer.training-job-completed\n"
    ) in text


def test_check_passes_after_generation_and_names_tampered_files(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "contracts"
    assert runner.invoke(app, ["contracts", "--out", str(out)]).exit_code == 0
    clean = runner.invoke(app, ["contracts", "--check", "--out", str(out)])
    assert clean.exit_code == 0, clean.output

    (out / "events" / "TrainingJobFailed.json").write_text("{}\n")
    (out / "events" / "RemovedEvent.json").write_text("{}\n")
    (out / "catalogue.json").unlink()
    acls = (out / "kafka-acls.txt").read_text()
    (out / "kafka-acls.txt").write_text(acls.replace("--operation Write", "--operation All"))
    stale = runner.invoke(app, ["contracts", "--check", "--out", str(out)])
    assert stale.exit_code == 1
    assert "changed: kafka-acls.txt" in stale.output
    assert "changed: events/TrainingJobFailed.json" in stale.output
    assert "stale: events/RemovedEvent.json" in stale.output
    assert "missing: catalogue.json" in stale.output

    assert runner.invoke(app, ["contracts", "--out", str(out)]).exit_code == 0
    assert not (out / "events" / "RemovedEvent.json").exists()
    assert runner.invoke(app, ["contracts", "--check", "--out", str(out)]).exit_code == 0


def test_generation_never_deletes_files_it_does_not_own(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    write_contracts(tmp_path, _settings())
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    assert diff_contracts(tmp_path, _settings()).up_to_date


_CONTRACT_MODULE = '''
from pydantic import BaseModel

from cairn.contracts import event


@event(owner="acme", key="widget_id")
class WidgetPolished(BaseModel):
    """A widget was polished."""

    widget_id: str
'''

_SERVICE_APP = '''
from types import SimpleNamespace

from faststream.kafka import KafkaBroker

from cairn.http import create_api
from cairn.settings import CairnSettings
from cairn_cli import app

broker = KafkaBroker("acme-kafka:9092")


@broker.subscriber("cairn.acme.widget-polished", group_id="acme-polisher")
async def on_widget_polished(body: dict) -> None:
    """Count polished widgets."""


api = create_api("acme", CairnSettings())


@api.get("/widgets/{widget_id}")
async def get_widget(widget_id: str) -> dict:
    return {"widget_id": widget_id}


service = SimpleNamespace(broker=broker, api=api)
'''


@pytest.mark.timeout(60)
def test_new_event_and_new_service_show_up_and_vanish(tmp_path: Path) -> None:
    modules, services, out = tmp_path / "modules", tmp_path / "services", tmp_path / "contracts"
    modules.mkdir()
    (modules / "acme_events.py").write_text(_CONTRACT_MODULE)
    acme = services / "acme"
    acme.mkdir(parents=True)
    (acme / "__init__.py").write_text("")
    (acme / "__main__.py").write_text("")
    (acme / "app.py").write_text(textwrap.dedent(_SERVICE_APP))
    env = _clean_env(
        PYTHONPATH=os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]),
        CAIRN_CONTRACT_MODULES='["acme_events"]',
        CAIRN_SERVICES_PATHS=json.dumps([str(services)]),
    )
    subprocess.run([*CLI, "contracts", "--out", str(out)], env=env, check=True, capture_output=True)

    schema = json.loads((out / "events" / "WidgetPolished.json").read_text())
    assert schema["properties"]["data"] == {"$ref": "#/$defs/WidgetPolished"}
    topics = {
        e["type"]: e["topic"] for e in json.loads((out / "catalogue.json").read_text())["events"]
    }
    assert topics["WidgetPolished"] == "cairn.acme.widget-polished"
    asyncapi = yaml.safe_load((out / "asyncapi.yaml").read_text())
    received = [
        asyncapi["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in asyncapi["operations"].values()
        if op["action"] == "receive"
    ]
    assert "cairn.acme.widget-polished" in received
    assert list(asyncapi["servers"]) == ["kafka"]
    assert "acme-kafka" not in (out / "asyncapi.yaml").read_text()
    openapi = json.loads((out / "openapi" / "acme.json").read_text())
    assert {"/widgets/{widget_id}", "/healthz", "/readyz"} <= openapi["paths"].keys()
    acme = [
        acl
        for acl in json.loads((out / "kafka-acls.json").read_text())["acls"]
        if acl["principal"] == "User:cairn-acme"
    ]
    granted = {(a["operation"], a["resource_type"], a["resource_name"]) for a in acme}
    assert {
        ("WRITE", "TOPIC", "cairn.acme.widget-polished"),
        ("READ", "TOPIC", "cairn.acme.widget-polished"),
        ("WRITE", "TOPIC", "cairn.acme.widget-polished.dlq"),
        ("READ", "GROUP", "acme-polisher"),
    } <= granted

    # Without the module and the service, their files are stale and go away.
    diff = diff_contracts(out, _settings())
    assert {"events/WidgetPolished.json", "openapi/acme.json"} <= set(diff.stale)
    assert "kafka-acls.txt" in diff.changed
    write_contracts(out, _settings())
    assert not (out / "events" / "WidgetPolished.json").exists()
    assert not (out / "openapi" / "acme.json").exists()
