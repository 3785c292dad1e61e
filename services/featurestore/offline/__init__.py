"""Offline feature store: append-only Parquet history, point-in-time training sets, time travel."""

from services.featurestore.offline.pit import FeatureRef
from services.featurestore.offline.store import GroupSpec, OfflineStore

__all__ = ["FeatureRef", "GroupSpec", "OfflineStore"]
