"""Feast's local file offline store doing bench/pit_join.py's point-in-time join (Feast venv only).

Runs inside bench/.venv-feast (see runner.py, which creates it). Reads the files pit_join.py wrote:

    DATA/entity.parquet          id, event_timestamp, label, _row (input order)
    DATA/groups/<group>.parquet  id, event_time, f0..f3 (the same rows Cairn's offline store holds)

generates a minimal Feast repo (one Entity, one FileSource + FeatureView per group, TTL longer than
the history) in a temp folder, runs `get_historical_features` with full feature names
(`<group>__f<k>`, Cairn's names too), writes the result (sorted by `_row`) to OUT and prints one
JSON line: wall seconds of the retrieval and rows in vs out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

# Longer than any gap between a feature row and an entity row, so TTL never hides a value.
TTL = timedelta(days=3650)
FEATURE_STORE_YAML = """project: cairn_bench
registry: {registry}
provider: local
offline_store:
  type: file
online_store:
  type: sqlite
  path: {online}
entity_key_serialization_version: 3
"""


def build_store(repo: Path, groups: dict[str, Path]) -> tuple[FeatureStore, list[str]]:
    """A Feast repo with one FeatureView per group file; returns the store and feature refs."""
    (repo / "feature_store.yaml").write_text(
        FEATURE_STORE_YAML.format(registry=repo / "registry.db", online=repo / "online.db")
    )
    store = FeatureStore(repo_path=str(repo))
    entity = Entity(name="id", join_keys=["id"], value_type=ValueType.INT64)
    views: list[FeatureView] = []
    refs: list[str] = []
    for group, path in groups.items():
        features = [name for name in pq.read_schema(path).names if name not in ("id", "event_time")]
        source = FileSource(name=f"{group}_source", path=str(path), timestamp_field="event_time")
        views.append(
            FeatureView(
                name=group,
                entities=[entity],
                ttl=TTL,
                schema=[Field(name="id", dtype=Int64)]
                + [Field(name=name, dtype=Float64) for name in features],
                source=source,
                online=False,
            )
        )
        refs += [f"{group}:{name}" for name in features]
    store.apply([entity, *views])
    return store, refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with entity.parquet and groups/")
    parser.add_argument("out", type=Path, help="where to write Feast's result (Parquet)")
    args = parser.parse_args()

    groups = {path.stem: path for path in sorted((args.data / "groups").glob("*.parquet"))}
    entity = pq.read_table(args.data / "entity.parquet").to_pandas()
    with tempfile.TemporaryDirectory(prefix="cairn-feast-repo-") as repo:
        store, refs = build_store(Path(repo), groups)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = store.get_historical_features(
            entity_df=entity, features=refs, full_feature_names=True
        ).to_df()
        wall_s = time.perf_counter() - start_wall
        cpu_s = time.process_time() - start_cpu
    result = result.sort_values("_row", kind="stable").reset_index(drop=True)
    columns = ["_row", *(ref.replace(":", "__") for ref in refs)]
    pq.write_table(pa.Table.from_pandas(result[columns], preserve_index=False), args.out)
    print(
        json.dumps(
            {
                "feast_version": _feast_version(),
                "pandas_version": pd.__version__,
                "wall_s": wall_s,
                "cpu_s": cpu_s,
                "rows_in": len(entity),
                "rows_out": len(result),
            }
        )
    )


def _feast_version() -> str:
    from importlib.metadata import version

    return version("feast")


if __name__ == "__main__":
    main()
