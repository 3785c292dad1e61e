"""The offline store on a real S3 server (moto over HTTP): writes, PIT joins, cache, idempotency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store

from services.featurestore.offline import FeatureRef, OfflineStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(s3_settings: CairnSettings) -> ObjectStore:
    return open_store(f"{s3_settings.store_url}/t-{uuid.uuid4().hex[:8]}", s3_settings)


def test_training_set_and_time_travel_over_s3(store: ObjectStore, tmp_path: Path) -> None:
    offline = OfflineStore(store, cache_dir=tmp_path / "cache")
    offline.create_group("card", "card_id", "event_time")
    offline.append(
        "card",
        pa.table(
            {
                "card_id": ["a", "a", "b"],
                "event_time": [T0, T0 + timedelta(days=2), T0 + timedelta(days=1)],
                "spend_7d": [10.0, 30.0, 5.0],
            }
        ),
    )
    offline.delete("card", "b", T0 + timedelta(days=3))
    assert {info.key.split("/")[2] for info in offline.files("card")} == {
        "event_date=2026-05-01",
        "event_date=2026-05-02",
        "event_date=2026-05-03",
        "event_date=2026-05-04",
    }
    entity = pa.table(
        {
            "card_id": ["a", "b", "a", "b", "c"],
            "ts": pa.array(
                [T0 + timedelta(days=d) for d in (1, 2, 3, 4, 4)], pa.timestamp("us", "UTC")
            ),
            "is_fraud": [0, 1, 0, 0, 1],
        }
    )
    out = offline.build_training_set(entity, "card_id", "ts", [FeatureRef("card")])
    assert out.column("card__spend_7d").to_pylist() == [10.0, 5.0, 30.0, None, None]
    assert out.column("is_fraud").to_pylist() == [0, 1, 0, 0, 1]
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.parquet"))
    assert len(cached) == 4  # every file fetched once, named by its ETag

    state = offline.state_as_of("card", T0 + timedelta(days=2, hours=1))
    assert state.column("card_id").to_pylist() == ["a", "b"]
    assert state.column("spend_7d").to_pylist() == [30.0, 5.0]


def test_racing_retries_of_one_batch_write_it_once(store: ObjectStore, tmp_path: Path) -> None:
    offline = OfflineStore(store, cache_dir=tmp_path / "cache")
    offline.create_group("card", "card_id", "event_time")
    batch = pa.table({"card_id": ["a"], "event_time": [T0], "spend_7d": [1.0]})
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: offline.append("card", batch, batch_id="b-1"), range(4)))
    assert sorted(len(keys) for keys in results) == [0, 0, 0, 1]
    assert offline.state_as_of("card", T0).num_rows == 1
    assert len(offline.files("card")) == 1
