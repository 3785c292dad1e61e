"""Experiments: runs compared side by side (parameter diff, overlaid curves with min/max/last).

The page reads the experiments service's public API through the console's proxy.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="experiments", title="Experiments", order=32, services=("experiments",))
