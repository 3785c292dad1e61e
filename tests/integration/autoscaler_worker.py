"""A slow pool worker for the autoscaler tests: a real Cairn service, one effect per event.

Run by the autoscaler's local backend as `python -m tests.integration.autoscaler_worker`, with
the platform's CAIRN_* settings and AUTOSCALER_WORKER_{TYPE,TOPIC,PARTITIONS,GROUP,DELAY_S}.
Each event writes `started/<item_id>` when it is picked up and, after the delay, the create-only
`effects/<item_id>` (a second handling leaves `duplicates/<item_id>-<uuid>` instead). SIGTERM
stops it the way it stops the trainer: the in-flight handler finishes, then its offset commits.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from cairn.contracts import Envelope
from cairn.errors import PreconditionFailed
from cairn.service import Service

from tests.support.tansu import make_event_type


def create_worker() -> Service:
    model = make_event_type(
        os.environ["AUTOSCALER_WORKER_TYPE"],
        topic=os.environ["AUTOSCALER_WORKER_TOPIC"],
        partitions=int(os.environ["AUTOSCALER_WORKER_PARTITIONS"]),
    )
    delay_s = float(os.environ.get("AUTOSCALER_WORKER_DELAY_S", "0.05"))
    service = Service("autoscaler-test-worker")

    @service.on(model, group=os.environ["AUTOSCALER_WORKER_GROUP"], worker_pool=True)
    async def work(envelope: Envelope[Any]) -> None:
        item = envelope.data.item_id
        await asyncio.to_thread(
            service.store.put_bytes, f"started/{item}", str(os.getpid()).encode()
        )
        await asyncio.sleep(delay_s)
        try:
            await asyncio.to_thread(
                service.store.put_bytes, f"effects/{item}", b"done", if_none_match=True
            )
        except PreconditionFailed:
            await asyncio.to_thread(
                service.store.put_bytes, f"duplicates/{item}-{uuid.uuid4()}", b""
            )

    return service


if __name__ == "__main__":
    create_worker().run()
