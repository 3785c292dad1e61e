"""The online-store contract on the Redis adapter, against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from cairn.errors import Unavailable

from services.featurestore.online import OnlineStore, open_online_store
from services.featurestore.online.redis import RedisOnlineStore
from tests.support.online_contract import OnlineStoreContract, at
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


class TestRedisOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[OnlineStore]:
        with open_online_store(f"{redis_url}?namespace=test-{uuid.uuid4().hex[:8]}") as store:
            assert isinstance(store, RedisOnlineStore)
            yield store


def test_expire_after_bounds_memory_with_a_key_expiry(redis_url: str):
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with open_online_store(f"{redis_url}?namespace={namespace}&expire_after_s=3600") as store:
        store.put("users", "fresh", now, {"v": 1})
        store.put("users", "ancient", now - timedelta(hours=2), {"v": 2})

        raw = redis.Redis.from_url(redis_url)
        remaining_ms = raw.pttl(f"{namespace}:users:fresh")
        assert 3_500_000 < remaining_ms <= 3_600_000
        assert raw.exists(f"{namespace}:users:ancient") == 0
        assert store.get("users", "ancient") is None
        raw.close()


def test_namespaces_do_not_see_each_other(redis_url: str):
    with (
        open_online_store(f"{redis_url}?namespace=ns-a-{uuid.uuid4().hex[:6]}") as first,
        open_online_store(f"{redis_url}?namespace=ns-b-{uuid.uuid4().hex[:6]}") as second,
    ):
        first.put("users", "u1", at(0), {"v": 1})
        assert second.get("users", "u1") is None


def test_unreachable_server_is_unavailable():
    with (
        open_online_store(f"redis://127.0.0.1:{free_port()}/0") as store,
        pytest.raises(Unavailable) as caught,
    ):
        store.get("users", "u1")
    assert caught.value.http_status == 503
