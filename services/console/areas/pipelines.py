"""Pipelines: definitions, executions, and each execution's DAG drawn with its steps' status.

The page reads the pipelines service's public API through the console's proxy.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="pipelines", title="Pipelines", order=43, services=("pipelines",))
