"""Offline feature store: append-only Parquet history, point-in-time training sets, time travel."""

from cairn.offline.pit import FeatureRef
from cairn.offline.store import GroupSpec, OfflineStore

__all__ = ["FeatureRef", "GroupSpec", "OfflineStore"]
