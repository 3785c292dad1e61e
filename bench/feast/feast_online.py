"""Feast's sqlite online store, in-process `get_online_features` latency (Feast venv only).

The anchor for bench/online_get_record.py: the same shape of data (records of 10 features: ints,
floats, strings, a bool, one always-null), written with `write_to_online_store`, then single-record
reads of random ids, each one `get_online_features(...).to_dict()` as a Feast user calls it.
Prints one JSON line with p50/p99/max in µs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FEATURES = {
    "age": Int64,
    "balance": Float64,
    "segment": String,
    "active": Bool,
    "orders_30d": Int64,
    "avg_basket": Float64,
    "country": String,
    "churn_score": Float64,
    "tenure_days": Int64,
    "last_channel": String,
}
YAML = """project: cairn_online_bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
entity_key_serialization_version: 3
"""


def records(count: int, seed: int) -> pd.DataFrame:
    """The rows bench/online_get_record.py loads (same generator and seed)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        rows.append(
            {
                "customer_id": f"customer-{index}",
                "event_time": T0 + timedelta(seconds=index),
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
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    frame = records(args.records, args.seed)
    with tempfile.TemporaryDirectory(prefix="cairn-feast-online-") as folder:
        repo = Path(folder)
        (repo / "feature_store.yaml").write_text(YAML.format(repo=repo))
        frame.head(10).to_parquet(repo / "source.parquet")
        store = FeatureStore(repo_path=str(repo))
        customer = Entity(
            name="customer_id", join_keys=["customer_id"], value_type=ValueType.STRING
        )
        view = FeatureView(
            name="customers",
            entities=[customer],
            ttl=timedelta(days=3650),
            schema=[Field(name=name, dtype=kind) for name, kind in FEATURES.items()],
            source=FileSource(path=str(repo / "source.parquet"), timestamp_field="event_time"),
            online=True,
        )
        store.apply([customer, view])
        start = time.perf_counter()
        store.write_to_online_store("customers", frame)
        load_s = time.perf_counter() - start
        refs = [f"customers:{name}" for name in FEATURES]
        rng = random.Random(args.seed + 1)
        ids = [f"customer-{rng.randrange(args.records)}" for _ in range(args.gets)]
        for record_id in ids[:200]:  # warm caches (registry, connection) as a server would be
            store.get_online_features(features=refs, entity_rows=[{"customer_id": record_id}])
        latencies = []
        for record_id in ids:
            before = time.perf_counter()
            answer = store.get_online_features(
                features=refs, entity_rows=[{"customer_id": record_id}]
            ).to_dict()
            latencies.append((time.perf_counter() - before) * 1e6)
            assert answer["age"][0] is not None, f"{record_id} not found"
    cuts = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "records": args.records,
                "gets": args.gets,
                "load_s": load_s,
                "p50_us": cuts[49],
                "p99_us": cuts[98],
                "max_us": max(latencies),
            }
        )
    )


if __name__ == "__main__":
    main()
