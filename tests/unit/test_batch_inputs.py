"""What a batch worker reads, and with what it calls the gateway: a shard's byte range or row
groups through ranged reads (never the whole file), and the batch service's own invoke key."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.auth.authenticator import Authenticator
from cairn.auth.keys import KeyRing, load_key, revoke_key
from cairn.auth.sealing import SecretBox
from cairn.contracts.envelope import utc_now
from cairn.runtime.state import RuntimeState, ServiceState, write_state
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore
from cryptography.fernet import Fernet

from services.batch.access import KEY_POINTER, GatewayAccess, ensure_invoke_key
from services.batch.domain import byte_ranges
from services.batch.endpoint import GatewayUnavailable
from services.batch.inputs import RANGE_BUFFER_BYTES, open_ranged
from services.batch.records import read_row_groups, read_text_shard, row_group_layout
from tests.unit.test_batch_transform import csv_text


class RangeRecordingStore(InMemoryObjectStore):
    """A memory store that records ranged reads and refuses whole-object reads of inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[str, int, int]] = []

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self.ranges.append((key, start, end))
        return super().get_range(key, start, end)

    def get_bytes(self, key: str) -> bytes:
        assert not key.startswith("data/"), f"{key} read whole"
        return super().get_bytes(key)

    def get_file(self, key: str, path: Path) -> object:  # type: ignore[override]
        raise AssertionError(f"{key} downloaded whole")

    def read_bytes(self) -> int:
        return sum(end - start for _, start, end in self.ranges)


def test_a_text_shard_reads_its_range_and_the_rest_of_its_last_record_only() -> None:
    store = RangeRecordingStore()
    data = b"id,f0,f1,f2\n" + csv_text(40_000)  # ~1.2 MB
    store.put_bytes("data/big.csv", data)
    shard_bytes = 100_000
    lines: list[bytes] = []
    for start, end in byte_ranges(len(data), shard_bytes):
        store.ranges.clear()
        with open_ranged(store, "data/big.csv", len(data)) as handle:
            shard = read_text_shard(handle, start, end, header=True)
        lines += shard.lines
        assert shard.header == ["id", "f0", "f1", "f2"]
        assert store.read_bytes() <= (end - start) + 3 * RANGE_BUFFER_BYTES
        assert all(s >= start - 1 or s == 0 for _, s, _ in store.ranges)  # header, then its range
    assert lines == data.splitlines()[1:]  # every record once, in order, as a whole-file read


def test_a_parquet_shard_reads_the_footer_and_its_row_groups_only() -> None:
    store = RangeRecordingStore()
    rng = np.random.default_rng(3)
    table = pa.table({"id": np.arange(50_000), "f0": rng.normal(size=50_000)})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=5_000)
    size = len(sink.getvalue())
    store.put_bytes("data/rows.parquet", sink.getvalue())
    with open_ranged(store, "data/rows.parquet", size) as footer:
        layout = row_group_layout(footer)
    assert [rows for rows, _ in layout] == [5_000] * 10
    assert store.read_bytes() <= RANGE_BUFFER_BYTES
    store.ranges.clear()
    with open_ranged(store, "data/rows.parquet", size) as source:
        rows = read_row_groups(source, [4, 5])
    assert rows.equals(table.slice(20_000, 10_000))
    assert store.read_bytes() < size * 0.2 + 2 * RANGE_BUFFER_BYTES


# The batch service's invoke key and the gateway's URL ----------------------------------------


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


def test_the_invoke_key_is_issued_once_and_replaced_when_it_cannot_be_used(
    box: SecretBox,
) -> None:
    store = InMemoryObjectStore()
    first = ensure_invoke_key(store, box)
    assert first.issued and first.key.scopes == ["invoke"] and first.key.endpoints == ["*"]
    again = ensure_invoke_key(store, box)
    assert (again.key.key_id, again.token, again.issued) == (first.key.key_id, first.token, False)
    revoke_key(store, first.key.key_id)
    fresh = ensure_invoke_key(store, box)
    assert fresh.issued and fresh.key.key_id != first.key.key_id
    assert f'"{fresh.key.key_id}"' in store.get_bytes(KEY_POINTER).decode()
    old = load_key(store, first.key.key_id)
    assert old is not None and not old.is_active()  # kept, revoked, for the audit trail
    other_platform = SecretBox(Fernet.generate_key())  # the store outlived its platform key
    moved = ensure_invoke_key(store, other_platform)
    assert moved.issued and moved.key.key_id != fresh.key.key_id
    assert other_platform.open(moved.key.sealed_secret) == moved.token.partition(":")[2]


def test_a_worker_token_is_accepted_by_the_key_ring_as_an_invoke_key(
    box: SecretBox, tmp_path: Path
) -> None:
    store = InMemoryObjectStore()
    access = GatewayAccess(store, box, CairnSettings(home=tmp_path), "http://gw:8080/")
    principal = Authenticator(KeyRing(store, box)).check_token(access.token())
    assert principal.allows("invoke", "any-endpoint") and not principal.allows("deploy")
    assert access.url() == "http://gw:8080"


def test_without_a_setting_the_url_is_the_embedded_runtimes_gateway(
    box: SecretBox, tmp_path: Path
) -> None:
    access = GatewayAccess(InMemoryObjectStore(), box, CairnSettings(home=tmp_path), None)
    with pytest.raises(GatewayUnavailable, match="CAIRN_BATCH_GATEWAY_URL"):
        access.url()
    gateway = ServiceState(
        name="gateway", module="services.gateway", port=8080, url="http://127.0.0.1:8080",
        log_path="gateway.log",
    )  # fmt: skip
    state = RuntimeState(
        supervisor_pid=os.getpid(),
        started_at=utc_now(),
        home=str(tmp_path),
        kafka_bootstrap_servers="127.0.0.1:9092",
        broker_embedded=True,
        store_url="file:///tmp/store",
        services=[gateway],
    )
    write_state(tmp_path, state)
    assert access.url() == "http://127.0.0.1:8080"
