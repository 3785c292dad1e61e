"""Batch transform jobs: status, shard progress, throughput and where the output went.

The page reads the batch service's public API through the console's proxy.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="batch", title="Batch transform", order=41, services=("batch",))
