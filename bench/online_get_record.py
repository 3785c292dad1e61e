"""In-process GetRecord latency of the online store adapters: `python bench/online_get_record.py`.

Loads 100k records of 10 features per adapter with put_many, then times 10k single-record gets of
random ids, idle and again while another thread bulk-loads 100k records into a second group. Redis
runs on a local `redis-server` started here (or `--redis-url`). Anchors: Feast's SQLite store
in-process p99 0.7-1.7 ms; Feast with Redis < 1.5 ms p99.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support.redis_server

from services.featurestore.online import OnlineRecord, OnlineStore, open_online_store
from tests.support.redis_server import running_redis_server

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_records(count: int, seed: int) -> Iterator[OnlineRecord]:
    rng = random.Random(seed)
    for index in range(count):
        yield OnlineRecord(
            record_id=f"customer-{index}",
            event_time=T0 + timedelta(seconds=index),
            values={
                "age": rng.randint(18, 90),
                "balance": rng.random() * 10_000,
                "segment": rng.choice(["gold", "silver", "bronze"]),
                "active": rng.random() < 0.8,
                "orders_30d": rng.randint(0, 40),
                "avg_basket": rng.random() * 200,
                "country": rng.choice(["CH", "DE", "FR", "IT"]),
                "churn_score": rng.random(),
                "tenure_days": rng.randint(0, 4000),
                "last_channel": None,
            },
        )


def time_gets(store: OnlineStore, group: str, ids: list[str]) -> list[float]:
    """Latency in µs of one `get` per id; every id must be found."""
    latencies = []
    for record_id in ids:
        before = time.perf_counter()
        record = store.get(group, record_id)
        latencies.append((time.perf_counter() - before) * 1e6)
        if record is None:
            raise AssertionError(f"{record_id} missing from {store.url}")
    return latencies


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def bench(store: OnlineStore, records: int, gets: int) -> list[tuple[str, float, list[float]]]:
    """(scenario, load records/s, latencies) for an idle store and one under a bulk load."""
    load_started = time.perf_counter()
    stored = store.put_many("bench", make_records(records, seed=1))
    load_rate = stored / (time.perf_counter() - load_started)
    rng = random.Random(2)
    ids = [f"customer-{rng.randrange(records)}" for _ in range(gets)]
    time_gets(store, "bench", ids[:1000])  # warm connections and caches
    gc.collect()
    idle = time_gets(store, "bench", ids)

    loader = threading.Thread(
        target=store.put_many, args=("bench-bulk", make_records(records, seed=3))
    )
    loader.start()
    busy = time_gets(store, "bench", ids)
    loader.join()
    return [("idle", load_rate, idle), ("during put_many", load_rate, busy)]


@contextmanager
def stores(redis_url: str | None) -> Iterator[list[tuple[str, Callable[[], OnlineStore]]]]:
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cairn-bench-"))
        url = redis_url or stack.enter_context(running_redis_server())
        yield [
            ("memory", lambda: open_online_store("memory://")),
            ("sqlite", lambda: open_online_store(f"sqlite:///{workdir}/online.db")),
            ("redis", lambda: open_online_store(f"{url}?namespace=bench")),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--redis-url", default=None, help="use this server instead of starting one")
    args = parser.parse_args()

    header = f"{'adapter':<8} {'scenario':<16} {'load rec/s':>10} {'p50 µs':>8} {'p99 µs':>8}"
    print(f"{args.records} records, {args.gets} random GetRecord calls each, in-process")
    print(header + f" {'p99.9 µs':>9} {'mean µs':>8}")
    with stores(args.redis_url) as factories:
        for name, factory in factories:
            with factory() as store:
                store.drop_group("bench")
                store.drop_group("bench-bulk")
                for scenario, load_rate, latencies in bench(store, args.records, args.gets):
                    ordered = sorted(latencies)
                    print(
                        f"{name:<8} {scenario:<16} {load_rate:>10,.0f}"
                        f" {percentile(ordered, 0.50):>8.1f} {percentile(ordered, 0.99):>8.1f}"
                        f" {percentile(ordered, 0.999):>9.1f} {statistics.fmean(ordered):>8.1f}"
                    )
                store.drop_group("bench")
                store.drop_group("bench-bulk")


if __name__ == "__main__":
    main()
