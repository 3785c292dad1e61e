"""Kafka ACLs from the catalogue: each service's principal may write only its own topics."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cairn.contracts import EventSpec, catalogue
from cairn.errors import ConfigError
from cairn.kafka_acls import (
    USER_PRINCIPAL,
    AclBinding,
    Subscriptions,
    is_request,
    kafka_acls,
    render_acl_commands,
    render_acl_json,
    service_principal,
    subscriptions_of,
)
from faststream.kafka import KafkaBroker

TRAINER = service_principal("trainer")


def _specs() -> dict[str, EventSpec]:
    return catalogue()


def _subscriptions() -> list[Subscriptions]:
    """What the trainer, registry and monitor consume, as their brokers declare it."""
    specs = _specs()
    return [
        Subscriptions(
            "trainer",
            frozenset({specs["TrainingJobRequested"].topic}),
            frozenset({"cairn.trainer"}),
        ),
        Subscriptions(
            "registry",
            frozenset({specs["TrainingJobCompleted"].topic, specs["ModelApprovalRequested"].topic}),
            frozenset({"cairn.registry.training-job-completed"}),
        ),
        Subscriptions("monitor", frozenset({specs["DriftDetected"].topic}), frozenset()),
        Subscriptions("gateway", broadcasts=frozenset({specs["EndpointUpdated"].topic})),
    ]


@pytest.fixture(scope="module")
def acls() -> list[AclBinding]:
    return kafka_acls(_specs().values(), _subscriptions())


def _topics(acls: list[AclBinding], principal: str, operation: str) -> set[str]:
    return {
        acl.resource_name
        for acl in acls
        if acl.principal == principal
        and acl.operation == operation
        and acl.resource_type == "TOPIC"
    }


def test_trainer_writes_its_own_topics_and_no_registry_topic(acls: list[AclBinding]) -> None:
    writes = _topics(acls, TRAINER, "WRITE")
    specs = _specs().values()

    assert {spec.topic for spec in specs if spec.owner == "trainer"} <= writes
    assert "cairn.trainer.training-job-completed" in writes
    registry_topics = {
        topic
        for spec in specs
        if spec.owner == "registry" and "trainer" not in spec.senders
        for topic in (spec.topic, spec.dlq_topic)
    }
    assert registry_topics, "the catalogue has registry events"
    assert writes.isdisjoint(registry_topics)
    # No wildcard: every topic the trainer may touch is named.
    assert all(
        acl.pattern_type == "LITERAL"
        for acl in acls
        if acl.principal == TRAINER and acl.resource_type == "TOPIC"
    )


def test_user_writes_only_request_topics_and_reads_everything(acls: list[AclBinding]) -> None:
    writes = _topics(acls, USER_PRINCIPAL, "WRITE")
    specs = _specs().values()
    facts = {spec.topic for spec in specs if not is_request(spec)}

    assert writes == {spec.topic for spec in specs if is_request(spec)}
    assert "cairn.trainer.training-job-requested" in writes
    assert writes.isdisjoint(facts)
    assert AclBinding(USER_PRINCIPAL, "TOPIC", "PREFIXED", "cairn.", "READ") in acls
    assert AclBinding(USER_PRINCIPAL, "GROUP", "PREFIXED", "cairn-cli", "READ") in acls


def test_consumer_reads_its_topics_in_its_groups_and_writes_their_dead_letters(
    acls: list[AclBinding],
) -> None:
    registry = service_principal("registry")
    completed = _specs()["TrainingJobCompleted"]

    assert completed.topic in _topics(acls, registry, "READ")
    assert completed.topic not in _topics(acls, registry, "WRITE")
    assert completed.dlq_topic in _topics(acls, registry, "WRITE")
    assert AclBinding(registry, "GROUP", "PREFIXED", "cairn.registry.", "READ") in acls
    # A group outside the service's prefix (the trainer's worker pool) is granted by name.
    assert AclBinding(TRAINER, "GROUP", "LITERAL", "cairn.trainer", "READ") in acls
    assert not any(
        acl.principal == registry and acl.resource_name == "cairn.trainer"
        for acl in acls
        if acl.resource_type == "GROUP"
    )


def test_a_broadcast_reader_reads_without_a_group_and_never_dead_letters(
    acls: list[AclBinding],
) -> None:
    gateway = service_principal("gateway")
    updated = _specs()["EndpointUpdated"]

    assert updated.topic in _topics(acls, gateway, "READ")
    assert updated.dlq_topic not in _topics(acls, gateway, "WRITE")
    assert updated.topic not in _topics(acls, gateway, "WRITE")


def test_listed_senders_may_write_a_request_and_others_may_not(acls: list[AclBinding]) -> None:
    specs = _specs()
    requested = specs["TrainingJobRequested"]
    senders = set(requested.senders)

    for service in ("registry", "monitor", "trainer"):
        allowed = service in senders or service == requested.owner
        assert (requested.topic in _topics(acls, service_principal(service), "WRITE")) is allowed


def test_every_service_writes_the_audit_topic(acls: list[AclBinding]) -> None:
    audit = _specs()["AuditRecorded"].topic
    services = {spec.owner for spec in _specs().values() if spec.owner != "kernel"}

    for service in services:
        assert audit in _topics(acls, service_principal(service), "WRITE"), service
    assert audit not in _topics(acls, USER_PRINCIPAL, "WRITE")


def test_commands_run_with_sh_and_grant_exactly_the_json_bindings(
    acls: list[AclBinding], tmp_path: Path
) -> None:
    script = tmp_path / "kafka-acls.txt"
    script.write_text(render_acl_commands(acls))
    log = tmp_path / "calls.log"
    fake = tmp_path / "bin" / "kafka-acls"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}

    missing = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "BOOTSTRAP" in missing.stderr
    subprocess.run(["sh", str(script)], env={**env, "BOOTSTRAP": "kafka:9092"}, check=True)

    calls = log.read_text().splitlines()
    assert all(
        c.startswith("--bootstrap-server kafka:9092 --command-config admin.properties --add")
        for c in calls
    )
    granted = {_binding_of(call) for call in calls}
    documented = json.loads(render_acl_json(acls))
    from_json = {
        (a["principal"], a["resource_type"], a["pattern_type"], a["resource_name"], a["operation"])
        for a in documented["acls"]
    }
    assert set().union(*granted) == from_json
    assert set(documented["principals"]) >= {TRAINER, USER_PRINCIPAL}
    assert (
        "--allow-principal User:cairn-trainer --operation Write --operation Describe "
        "--topic cairn.trainer.training-job-completed"
    ) in script.read_text()


def _binding_of(call: str) -> frozenset[tuple[str, str, str, str, str]]:
    words = call.split()
    value = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
    operations = [words[i + 1].upper() for i, word in enumerate(words) if word == "--operation"]
    kind = "TOPIC" if "--topic" in value else "GROUP"
    name = value["--topic"] if kind == "TOPIC" else value["--group"]
    pattern = value.get("--resource-pattern-type", "literal").upper()
    return frozenset((value["--allow-principal"], kind, pattern, name, op) for op in operations)


def test_subscriptions_are_read_off_the_broker_and_a_pattern_is_refused() -> None:
    broker = KafkaBroker("localhost:9092")

    @broker.subscriber("cairn.trainer.training-job-completed", group_id="cairn.registry.done")
    async def done(body: dict[str, str]) -> None: ...

    @broker.subscriber("cairn.deployer.endpoint-updated")
    async def routing(body: dict[str, str]) -> None: ...

    subs = subscriptions_of("registry", broker)
    assert subs.topics == {
        "cairn.trainer.training-job-completed",
        "cairn.deployer.endpoint-updated",
    }
    assert subs.groups == {"cairn.registry.done"}

    patterned = KafkaBroker("localhost:9092")

    @patterned.subscriber(pattern="cairn\\..*", group_id="g")
    async def everything(body: dict[str, str]) -> None: ...

    with pytest.raises(ConfigError, match="pattern"):
        subscriptions_of("spy", patterned)
