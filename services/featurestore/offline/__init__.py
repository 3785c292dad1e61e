"""Offline feature store: append-only Parquet history, point-in-time training sets, time travel."""

from services.featurestore.offline.pit import FeatureRef
from services.featurestore.offline.store import Appended, GroupSpec, OfflineStore

__all__ = ["Appended", "FeatureRef", "GroupSpec", "OfflineStore"]
