"""A consumer process for the crash test: one create-only effect object per event it handles.

Run as `python -m tests.integration.bus_worker --bootstrap ... --type-name ... --topic ...
--group ... --store DIR`. An event that finds its effect already written (handled before a crash,
not yet recorded in the ledger) leaves a `replays/` marker instead, so the test can count
redeliveries that reached the handler.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path
from typing import Any

from cairn.bus import ProcessedLedger, build_broker, subscribe
from cairn.contracts import Envelope
from cairn.errors import PreconditionFailed
from cairn.settings import CairnSettings
from cairn.store.local import LocalObjectStore

from tests.support.tansu import make_event_type


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--type-name", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--group", required=True)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--delay-s", type=float, default=0.01)
    return parser.parse_args()


async def _run(args: argparse.Namespace) -> None:
    model = make_event_type(args.type_name, topic=args.topic, partitions=args.partitions)
    settings = CairnSettings(
        kafka_bootstrap_servers=args.bootstrap,
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        otel_exporter="none",
    )
    store = LocalObjectStore(args.store)
    broker = build_broker(settings, client_id="bus-worker", logger=None)

    async def handler(envelope: Envelope[Any]) -> None:
        await asyncio.sleep(args.delay_s)
        try:
            store.put_bytes(
                f"effects/{envelope.event_id}",
                envelope.model_dump_json().encode(),
                if_none_match=True,
            )
        except PreconditionFailed:
            store.put_bytes(f"replays/{envelope.event_id}-{uuid.uuid4()}", b"", if_none_match=True)

    subscribe(
        broker,
        model,
        handler,
        group_id=args.group,
        ledger=ProcessedLedger(store, args.group),
        settings=settings,
        worker_pool=True,
    )
    await broker.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_run(_parse()))
