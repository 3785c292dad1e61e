"""`cairn trace` on the real broker: a causal chain spread over topics comes back as one tree."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cairn.bus import EventProducer, ensure_topics
from cairn.contracts import Envelope, spec_for
from cairn.settings import CairnSettings
from cairn_cli import app
from click.testing import Result
from pydantic import BaseModel
from typer.testing import CliRunner

from tests.support.tansu import unique_name

pytestmark = pytest.mark.integration

MakeEvent = Callable[..., type[BaseModel]]
STEP_S = 0.3


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAIRN_KAFKA_BOOTSTRAP_SERVERS", raising=False)


async def cairn(*args: str) -> Result:
    """Run the CLI in a thread: it calls asyncio.run, which cannot nest in the test's loop."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def publish_chain(
    settings: CairnSettings, types: list[type[BaseModel]], correlation_id: str
) -> list[Envelope[Any]]:
    """request -> started -> (done, audit): a fork, across two topics, STEP_S apart."""
    request, work = types
    async with EventProducer(settings, source="trace-test") as producer:
        await producer.publish(request(item_id="decoy"), correlation_id=unique_name("other"))
        root = await producer.publish(request(item_id="job-1"), correlation_id=correlation_id)
        await asyncio.sleep(STEP_S)
        started = await producer.publish(work(item_id="job-1", note="started"), cause=root)
        await asyncio.sleep(STEP_S)
        done = await producer.publish(work(item_id="job-1", note="done", seq=3), cause=started)
        audit = await producer.publish(request(item_id="audit", note="seen"), cause=started)
    return [root, started, done, audit]


async def test_trace_prints_the_chain_as_a_tree_with_timings(
    kafka_settings: CairnSettings, make_test_event: MakeEvent
) -> None:
    types = [make_test_event(partitions=2), make_test_event(partitions=3)]
    await ensure_topics(kafka_settings, [spec_for(t) for t in types])
    correlation_id = unique_name("wf")
    root, started, done, audit = await publish_chain(kafka_settings, types, correlation_id)
    kafka = kafka_settings.kafka_bootstrap_servers or ""

    text = await cairn("trace", correlation_id, "--kafka", kafka)
    as_json = await cairn("trace", correlation_id, "--kafka", kafka, "--json")

    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    request_type, work_type = (t.__name__ for t in types)
    assert lines[0].startswith(f"{request_type}  [trace-test]  key=job-1")
    assert "+0.000s" in lines[0]
    assert lines[1].startswith(f"└─ {work_type}  [trace-test]  key=job-1")
    assert "note=started" in lines[1]
    assert lines[2].startswith(f"   ├─ {work_type}") and "note=done" in lines[2]
    assert lines[3].startswith(f"   └─ {request_type}") and "key=audit" in lines[3]
    assert lines[4].startswith("4 events from 1 source in ")
    assert "decoy" not in text.output

    document = json.loads(as_json.stdout)
    assert document["events"] == 4
    tree = document["tree"]
    assert [node["event_id"] for node in tree] == [str(root.event_id)]
    child = tree[0]["children"][0]
    assert child["event_id"] == str(started.event_id)
    assert [c["event_id"] for c in child["children"]] == [str(done.event_id), str(audit.event_id)]
    expected_s = (done.occurred_at - root.occurred_at).total_seconds()
    assert child["children"][0]["offset_s"] == pytest.approx(expected_s, abs=1e-3)
    assert 2 * STEP_S <= document["duration_s"] < 2 * STEP_S + 2


async def test_follow_prints_new_events_of_the_chain_even_on_a_new_topic(
    kafka_settings: CairnSettings, make_test_event: MakeEvent
) -> None:
    first_type = make_test_event(partitions=2)
    await ensure_topics(kafka_settings, [spec_for(first_type)])
    late_type = make_test_event(partitions=2)  # its topic appears only when the event is sent
    correlation_id = unique_name("wf")
    async with EventProducer(kafka_settings, source="trace-test") as producer:
        root = await producer.publish(first_type(item_id="a"), correlation_id=correlation_id)
        kafka = kafka_settings.kafka_bootstrap_servers or ""
        following = asyncio.ensure_future(
            cairn("trace", correlation_id, "--kafka", kafka, "--follow", "--json", "--timeout", "6")
        )
        await asyncio.sleep(2.5)  # the history is read; the new topic is created after it
        late = await producer.publish(late_type(item_id="b", note="late"), cause=root)
        result = await following

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["event_id"], r["depth"]) for r in records] == [
        (str(root.event_id), 0),
        (str(late.event_id), 1),
    ]
    assert records[1]["topic"] == spec_for(late_type).topic


async def test_an_unknown_correlation_id_exits_1_saying_so(kafka_settings: CairnSettings) -> None:
    result = await cairn(
        "trace", "no-such-workflow", "--kafka", kafka_settings.kafka_bootstrap_servers or ""
    )

    assert result.exit_code == 1
    assert "no event has correlation id 'no-such-workflow'" in result.output
