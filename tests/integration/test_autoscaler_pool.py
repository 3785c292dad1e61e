"""The autoscaler on real Tansu with real worker processes: flood -> max -> drain -> min.

Workers are `tests.integration.autoscaler_worker` (a real Cairn service consuming slowly, like the
trainer) on a throwaway event type, so the session's shared broker and the trainer tests' group
`cairn.trainer` are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cairn.bus import EventProducer, consumer_group_lag, tail_events
from cairn.settings import CairnSettings
from cairn.store.local import LocalObjectStore
from pydantic import BaseModel

from services.autoscaler.app import create_service
from services.autoscaler.backends import LocalProcessBackend
from services.autoscaler.handlers import Autoscaler
from services.autoscaler.pools import WorkerPool
from tests.support.tansu import unique_name

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_MODULE = "tests.integration.autoscaler_worker"


@dataclass
class Rig:
    settings: CairnSettings
    store: LocalObjectStore
    model: type[BaseModel]
    pool: WorkerPool

    def count(self, prefix: str) -> int:
        return sum(1 for _ in self.store.list(prefix, recursive=True))

    async def lag(self) -> int:
        return (
            await consumer_group_lag(self.settings, self.pool.group_id, self.pool.topics())
        ).total

    async def publish(self, count: int, prefix: str = "job") -> None:
        async with EventProducer(self.settings, source="autoscaler-test") as producer:
            await asyncio.gather(
                *(producer.publish(self.model(item_id=f"{prefix}-{i:04d}")) for i in range(count))
            )

    async def drained(self) -> bool:
        return await self.lag() == 0


def make_rig(
    kafka_settings: CairnSettings,
    tmp_path: Path,
    make_test_event: Callable[..., type[BaseModel]],
    *,
    partitions: int,
    delay_s: float,
    **pool_fields: Any,
) -> Rig:
    topic = unique_name("pool")
    model = make_test_event(
        f"Pool{unique_name('w').replace('-', '')}Requested", topic=topic, partitions=partitions
    )
    store_dir = tmp_path / "store"
    settings = kafka_settings.model_copy(update={"store_url": store_dir.as_uri()})
    group = unique_name("cairn.pool")
    pool = WorkerPool(
        name=unique_name("pool"),
        module=WORKER_MODULE,
        group_id=group,
        event_types=[model.__name__],
        env={
            "AUTOSCALER_WORKER_TYPE": model.__name__,
            "AUTOSCALER_WORKER_TOPIC": topic,
            "AUTOSCALER_WORKER_PARTITIONS": str(partitions),
            "AUTOSCALER_WORKER_GROUP": group,
            "AUTOSCALER_WORKER_DELAY_S": str(delay_s),
        },
        **pool_fields,
    )
    return Rig(settings, LocalObjectStore(store_dir), model, pool)


def local_backend(rig: Rig, tmp_path: Path, drain_timeout_s: float) -> LocalProcessBackend:
    return LocalProcessBackend(
        rig.settings,
        log_dir=tmp_path / "logs",
        drain_timeout_s=drain_timeout_s,
        extra_env={"PYTHONPATH": str(REPO_ROOT)},
    )


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@contextlib.asynccontextmanager
async def scaled_events(
    settings: CairnSettings, pool: str
) -> AsyncIterator[list[tuple[float, dict[str, Any]]]]:
    """WorkerPoolScaled events about `pool`, with the monotonic time each was read."""
    seen: list[tuple[float, dict[str, Any]]] = []

    async def collect() -> None:
        async for tailed in tail_events(settings, ["WorkerPoolScaled"], from_beginning=True):
            data = tailed.event.data.model_dump() if tailed.error is None else {}  # type: ignore[union-attr]
            if data.get("pool") == pool:
                seen.append((time.monotonic(), data))

    task = asyncio.create_task(collect())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.timeout(120)
async def test_a_flood_scales_to_max_drains_and_returns_to_min(
    kafka_settings: CairnSettings, tmp_path: Path, make_test_event: Callable[..., type[BaseModel]]
) -> None:
    rig = make_rig(
        kafka_settings,
        tmp_path,
        make_test_event,
        partitions=4,
        delay_s=0.05,
        lag_threshold=10,
        activation_lag_threshold=5,
        min_replicas=0,
        max_replicas=6,  # above the 4 partitions: clamped to 4
        polling_interval_s=0.5,
        scale_down_cooldown_s=3.0,
    )
    backend = local_backend(rig, tmp_path, drain_timeout_s=20)
    service = create_service(rig.settings, rig.store, pools=[rig.pool], backend=backend)
    scaler: Autoscaler = service.api.state.autoscaler
    status = scaler.status[rig.pool.name]
    assert status.pool.max_replicas == 4

    # The lifespan creates the topics first: the tail only sees topics that exist when it starts.
    async with (
        service.api.router.lifespan_context(service.api),
        scaled_events(rig.settings, rig.pool.name) as events,
    ):
        await wait_for(lambda: status.last_decision is not None, 10, "a first round")
        assert status.current == 0  # idle pool: nothing runs
        await rig.publish(200)
        await wait_for(lambda: status.current == 4, 30, "the pool at its max")
        assert len(backend.pids(rig.pool)) == 4

        await wait_for(lambda: rig.count("effects/") == 200, 60, "the flood drained")
        await wait_for(lambda: status.lag == 0, 5, "lag back to 0")
        drained_at = time.monotonic()
        await wait_for(lambda: status.current == 0, 10, "scale back to min")
        idle_s = time.monotonic() - drained_at
        assert idle_s >= rig.pool.scale_down_cooldown_s - 1.0, idle_s
        await wait_for(lambda: not backend.pids(rig.pool, draining=True), 20, "workers gone")
        # Scale-down may take steps (4 -> 2 -> 0) as lag readings fall: wait for the last one.
        await wait_for(
            lambda: bool(events) and events[-1][1]["to_replicas"] == 0,
            10,
            "the scale-down to 0 announced",
        )

    moves = [(e["from_replicas"], e["to_replicas"]) for _, e in events]
    assert moves[0] == (0, 4), moves
    assert moves[-1][1] == 0, moves
    assert events[0][1]["lag"] >= 40
    assert "cooldown" in events[-1][1]["reason"]
    assert await rig.lag() == 0


@pytest.mark.timeout(90)
async def test_a_scaled_down_worker_finishes_or_hands_back_its_job(
    kafka_settings: CairnSettings, tmp_path: Path, make_test_event: Callable[..., type[BaseModel]]
) -> None:
    rig = make_rig(
        kafka_settings, tmp_path, make_test_event, partitions=1, delay_s=3.0, max_replicas=1
    )

    # Drained with time to spare: the worker finishes its job and commits before it exits.
    patient = local_backend(rig, tmp_path, drain_timeout_s=20)
    await rig.publish(1)
    await patient.scale(rig.pool, 1)
    await wait_for(lambda: rig.count("started/") == 1, 30, "the job in flight")
    assert rig.count("effects/") == 0
    await patient.scale(rig.pool, 0)
    assert await patient.current(rig.pool) == 0  # draining workers no longer count
    await wait_for(lambda: not patient.pids(rig.pool, draining=True), 20, "the worker to exit")
    assert rig.count("effects/") == 1
    assert await rig.lag() == 0

    # Drained impatiently: killed mid-job, the uncommitted job goes to the next worker.
    hasty = local_backend(rig, tmp_path, drain_timeout_s=0.5)
    await rig.publish(1, prefix="killed")
    await hasty.scale(rig.pool, 1)
    await wait_for(lambda: rig.count("started/killed") == 1, 30, "the second job in flight")
    await hasty.scale(rig.pool, 0)
    await asyncio.sleep(0.6)
    await hasty.current(rig.pool)  # reaps: past the drain timeout, the worker is killed
    assert not hasty.pids(rig.pool, draining=True)
    assert rig.count("effects/killed") == 0
    assert await rig.lag() == 1  # not committed: handed back, not lost
    await hasty.scale(rig.pool, 1)
    await wait_for(lambda: rig.count("effects/killed") == 1, 30, "the job redone elsewhere")
    await wait_for(rig.drained, 10, "the redelivered job committed")
    await hasty.close()
    assert rig.count("effects/") == 2
