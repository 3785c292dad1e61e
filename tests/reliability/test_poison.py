"""Poison: every topic a service consumes gets records no handler can take, then a valid event.

Each service runs in process on a real Tansu broker and the real S3 server. For every topic it
reads (found on the service itself, so a new subscription is covered at once), the suite sends
malformed JSON, JSON of the wrong shape, an envelope whose data has the wrong types, a 2 MiB
record (over the 1 MiB the dead-letter producer may send) and a NaN, then one valid event on the
same partition. Each poison record must reach `<topic>.dlq` from the service's consumer group
with a reason naming what was wrong (the 2 MiB one as a truncated copy), and the valid event
behind them must be handled. A broadcast reader (the gateway's routing table) never
dead-letters: it must log each poison record and apply the valid event. The long variant sends
many more shapes (unsigned, forged and wrongly sent requests, tombstones, deep nesting,
5,000-digit numbers, Infinity ...) over several rounds:

    CAIRN_POISON_ROUNDS=3 .venv/bin/pytest -m long tests/reliability/test_poison.py -s
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from cairn.contracts import decode_envelope
from cairn.errors import CairnError
from cairn.settings import CairnSettings
from cairn.store import open_store

from tests.reliability.fuzz import service_names
from tests.reliability.poison import build_service, consumptions, poisons, valid_envelope
from tests.reliability.poison_checks import (
    TopicRecords,
    attack,
    broadcast_log_problems,
    check,
    topics_to_read,
)
from tests.reliability.probes import BROADCAST_EFFECTS, PROBES
from tests.reliability.report import append_report
from tests.support.auth import PLATFORM_KEY, auth_settings
from tests.support.moto_server import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.tansu import running_tansu

pytestmark = pytest.mark.integration

HANG_GUARD_S = float(os.environ.get("CAIRN_POISON_HANG_GUARD_S", "90"))
LONG_ROUNDS = int(os.environ.get("CAIRN_POISON_ROUNDS", "3"))


@pytest.fixture(scope="module")
def poison_settings(
    tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str
) -> Iterator[CairnSettings]:
    """A broker of the suite's own (no other test's records or groups on the service topics),
    a fresh bucket on the session's S3 server, one platform key, quick joins and retries."""
    root = tmp_path_factory.mktemp("poison")
    with running_tansu(root / "tansu.log") as bootstrap:
        yield CairnSettings(
            home=root / "home",
            kafka_bootstrap_servers=bootstrap,
            store_url=f"s3://cairn-poison-{uuid.uuid4().hex[:12]}",
            s3_endpoint=s3_endpoint,
            s3_access_key=S3_ACCESS_KEY,
            s3_secret_key=S3_SECRET_KEY,
            platform_key=PLATFORM_KEY,
            bus_session_timeout_ms=1000,
            bus_heartbeat_interval_ms=100,
            bus_max_retries=2,
            bus_retry_backoff_s=0.05,
            bus_retry_backoff_max_s=0.2,
            otel_exporter="none",
        )


async def poison_service(
    name: str,
    settings: CairnSettings,
    caplog: pytest.LogCaptureFixture,
    *,
    rounds: int,
    every_shape: bool,
) -> None:
    """Run the service, poison every topic it reads, and check each record's fate."""
    service = build_service(name, settings)
    consumed = consumptions(service)
    if not consumed:
        pytest.skip(f"{name} consumes no topic")
    missing = sorted({c.spec.type for c in consumed} - set(PROBES))
    assert not missing, f"add a valid probe event to tests/reliability/probes.py for {missing}"
    caplog.set_level(logging.ERROR, logger="cairn.bus")
    store = open_store(settings=settings)
    async with service.api.router.lifespan_context(service.api):
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=8 * 1024 * 1024
        )
        await producer.start()
        try:
            attacks = [
                await attack(producer, c, service, rounds=rounds, every_shape=every_shape)
                for c in consumed
            ]
        finally:
            await producer.stop()
        deadline = time.monotonic() + HANG_GUARD_S
        async with TopicRecords(settings, topics_to_read(consumed)) as records:
            results = await asyncio.gather(
                *(check(sent, service, records, store, deadline) for sent in attacks)
            )
    problems = [problem for found, _ in results for problem in found]
    problems += broadcast_log_problems(attacks, caplog.records)
    figures = {
        "suite": "poison",
        "service": name,
        "variant": "long" if every_shape else "ci",
        "topics": sorted({c.spec.topic for c in consumed}),
        "poison_records": sum(sent.poison_count for sent in attacks),
        "dead_lettered_with_reason": sum(count for _, count in results),
        # A broadcast reader's poison: checked above to be logged and skipped.
        "skipped_by_broadcast_readers": sum(
            sent.poison_count for sent in attacks if sent.consumption.group is None
        ),
        "valid_events": sum(len(sent.rounds) for sent in attacks),
        "problems": len(problems),
    }
    append_report(figures)
    print(
        f"\npoison: {name}: {len(consumed)} topics, {figures['poison_records']} poison records, "
        f"{figures['dead_lettered_with_reason']} dead-lettered with their reason, "
        f"{figures['skipped_by_broadcast_readers']} logged and skipped by a broadcast reader, "
        f"{figures['valid_events']} valid events behind them, {len(problems)} problems"
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", service_names())
async def test_poison_is_dead_lettered_and_the_next_event_is_handled(
    name: str, poison_settings: CairnSettings, caplog: pytest.LogCaptureFixture
) -> None:
    await poison_service(name, poison_settings, caplog, rounds=1, every_shape=False)


@pytest.mark.long
@pytest.mark.parametrize("name", service_names())
async def test_every_poison_shape_is_dead_lettered_round_after_round(
    name: str, poison_settings: CairnSettings, caplog: pytest.LogCaptureFixture
) -> None:
    await poison_service(name, poison_settings, caplog, rounds=LONG_ROUNDS, every_shape=True)


def test_every_consumed_topic_has_a_probe_and_every_shape_is_poison(tmp_path: Path) -> None:
    """Coverage: every topic any service reads has a valid probe (and each broadcast reader an
    effect to observe it by); each probe decodes, and every poison shape of it does not."""
    settings = auth_settings(home=tmp_path)
    consumed = [c for name in service_names() for c in consumptions(build_service(name, settings))]
    assert consumed, "no service consumes anything?"
    missing = sorted({c.spec.type for c in consumed} - set(PROBES))
    assert not missing, f"add a valid probe event to tests/reliability/probes.py for {missing}"
    broadcasters = {c.service for c in consumed if c.group is None}
    assert broadcasters <= set(BROADCAST_EFFECTS), broadcasters - set(BROADCAST_EFFECTS)
    for spec in {c.spec.type: c.spec for c in consumed}.values():
        valid = valid_envelope(spec, PROBES[spec.type].make("poison-probe"), settings)
        decode_envelope(valid)
        for poison in poisons(spec, valid, settings, every_shape=True):
            if poison.reason == "undecodable":
                with pytest.raises(CairnError):
                    decode_envelope(poison.value or b"")
