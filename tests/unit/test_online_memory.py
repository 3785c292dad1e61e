"""The online-store contract on the in-memory adapter, plus URL selection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cairn.errors import ConfigError

from services.featurestore.online import OnlineStore, open_online_store
from services.featurestore.online.memory import MemoryOnlineStore
from tests.support.online_contract import OnlineStoreContract


class TestMemoryOnlineStore(OnlineStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[OnlineStore]:
        with open_online_store("memory://") as store:
            assert isinstance(store, MemoryOnlineStore)
            yield store


@pytest.mark.parametrize("url", ["postgres://db/x", "sqlite://", "file:///tmp/x.db", "nonsense"])
def test_unsupported_or_malformed_urls_are_config_errors(url: str):
    with pytest.raises(ConfigError):
        open_online_store(url)
