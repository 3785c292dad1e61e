"""Pipelines benchmark: orchestration overhead per step, and the time of a step served from cache.

    .venv/bin/python -m bench.pipelines.overhead [--steps 20] [--runs 3]

On a real Tansu broker with a local-directory store, a stand-in trainer answers every
`TrainingJobRequested` at once with `TrainingJobCompleted` (no training: the figure is the
orchestration alone). Measured, per step:

- direct: a client publishes the request and waits for the completion event, step after step
  (two event hops, what calling the owning services by hand costs);
- pipeline: a chain of N Training steps run by the pipelines service (the same two hops, plus the
  execution document's conditional writes, the wait index, the outbox and the cache key);
- cache hit: the same pipeline again with every step served from the cache (no event hop).

overhead per step = pipeline - direct. Medians over `--runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from cairn.auth.principal import AUTH_DISABLED
from cairn.bus import EventProducer
from cairn.bus.broker import kafka_client_options
from cairn.contracts.catalogue import decode_envelope, spec_for
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import InputChannel, TrainingJobCompleted, TrainingJobRequested
from cairn.settings import CairnSettings

from bench.autoscaler_reaction import start_tansu
from services.pipelines.app import create_service
from services.pipelines.config import PipelinesSettings
from services.pipelines.handlers import PipelineHandlers
from tests.support.auth import auth_settings


def chain(steps: int) -> dict[str, Any]:
    """N Training steps, each reading the previous one's model artifact."""
    body: list[dict[str, Any]] = []
    for i in range(steps):
        uri: Any = "data/bench/" if i == 0 else {"get": f"steps.s{i - 1}.model_artifact"}
        body.append(
            {
                "name": f"s{i}",
                "type": "Training",
                "arguments": {
                    "algorithm": "xgboost",
                    "input_channels": [{"name": "train", "uri": uri}],
                },
                "cache": {"enabled": True},
            }
        )
    return {"steps": body, "parallelism": {"max_parallel_steps": 1}}


async def stand_in(settings: CairnSettings, answered: dict[str, asyncio.Future[None]]) -> None:
    """The trainer, answering at once; resolves the future of each job it completes.

    Its consumer fetches with a 5 ms wait, so the direct figure is the bus's round trip, not a
    reader's polling.
    """
    topics = [spec_for(name).topic for name in ("TrainingJobRequested", "TrainingJobCompleted")]
    consumer = AIOKafkaConsumer(
        *topics,
        **kafka_client_options(settings, client_id="bench-trainer"),
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        async with EventProducer(settings, source="bench-trainer") as producer:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        await answer(producer, decode_envelope(record.value or b"{}"), answered)
    finally:
        await consumer.stop()


async def answer(
    producer: EventProducer, event: Envelope[Any], answered: dict[str, asyncio.Future[None]]
) -> None:
    if event.type == "TrainingJobCompleted":
        future = answered.pop(event.data.job_name, None)
        if future is not None and not future.done():
            future.set_result(None)
        return
    await producer.publish(
        TrainingJobCompleted(
            job_name=event.data.job_name,
            algorithm="xgboost",
            artifact_uri=f"models/{event.data.job_name}/",
            device="cpu",
            training_time_s=0,
            total_time_s=0,
        )
    )


async def direct(settings: CairnSettings, steps: int, run: int, answered: dict[str, Any]) -> float:
    loop = asyncio.get_running_loop()
    async with EventProducer(settings, source="bench-client") as producer:
        started = time.perf_counter()
        for i in range(steps):
            job = f"direct-{run}-{i}"
            answered[job] = loop.create_future()
            request = TrainingJobRequested(
                job_name=job,
                algorithm="xgboost",
                input_channels=[InputChannel(name="train", uri="data/bench/")],
            )
            await producer.publish(request)
            await asyncio.wait_for(answered[job], 60)
        return (time.perf_counter() - started) / steps


async def pipeline(handlers: PipelineHandlers, name: str, steps: int) -> float:
    started = time.perf_counter()
    execution, _ = await handlers.start(name, {}, AUTH_DISABLED)
    # Polled every 5 ms: it adds at most that once per run, not per step.
    while (execution := await handlers.execution(execution.execution_id)).status == "Executing":  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert execution.status == "Succeeded", execution.failure_reason
    return (time.perf_counter() - started) / steps


async def main(steps: int, runs: int) -> None:
    tansu, bootstrap = start_tansu()
    try:
        with tempfile.TemporaryDirectory() as folder:
            settings = auth_settings(
                home=Path(folder),
                kafka_bootstrap_servers=bootstrap,
                bus_session_timeout_ms=1000,
                bus_heartbeat_interval_ms=100,
            )
            service = create_service(settings, config=PipelinesSettings(sweep_interval_s=0.5))
            handlers: PipelineHandlers = service.api.state.pipelines
            answered: dict[str, asyncio.Future[None]] = {}
            async with service.api.router.lifespan_context(service.api):
                responder = asyncio.create_task(stand_in(settings, answered))
                await handlers.save("warm", chain(1), AUTH_DISABLED, new=True)
                await pipeline(handlers, "warm", 1)  # every consumer group has joined
                await direct(settings, 2, -1, answered)
                figures: dict[str, list[float]] = {"direct": [], "pipeline": [], "cache hit": []}
                for run in range(runs):
                    name = f"bench-{run}"
                    # A run of its own: the first step's input differs, so nothing is cached yet.
                    document = chain(steps)
                    first = document["steps"][0]["arguments"]["input_channels"][0]
                    first["uri"] = f"data/bench-{run}/"
                    await handlers.save(name, document, AUTH_DISABLED, new=True)
                    figures["direct"].append(await direct(settings, steps, run, answered))
                    figures["pipeline"].append(await pipeline(handlers, name, steps))
                    figures["cache hit"].append(await pipeline(handlers, name, steps))
                responder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await responder
    finally:
        tansu.kill()
    medians = {key: statistics.median(values) * 1000 for key, values in figures.items()}
    print(f"{steps} steps in a chain, median of {runs} runs, ms per step:")
    for key, value in medians.items():
        print(f"  {key:<10} {value:8.1f}")
    print(f"  overhead   {medians['pipeline'] - medians['direct']:8.1f}  (pipeline - direct)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.steps, arguments.runs))
