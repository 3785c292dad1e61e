"""Tuning jobs: the leaderboard, the objective over trials and the parameters' parallel coordinates.

The page reads the tuner's public API through the console's proxy; it needs no route of its own.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="tuning", title="Tuning", order=31, services=("tuner",))
