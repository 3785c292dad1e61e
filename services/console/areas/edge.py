"""Edge fleets: devices and the versions they run, packages, and rollout plans with their stages.

The page reads the edge service's public API through the console's proxy.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="edge", title="Edge fleets", order=42, services=("edge",))
