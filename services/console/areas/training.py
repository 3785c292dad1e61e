"""Training jobs: the list with filters, and a job's page with its live metric curves, logs,
hyperparameters, device and attempts.

The page reads the trainer through the console's proxy (its logs are text/plain, which the proxy
passes through) and the curves from the bus events the console keeps and streams; it needs no
route of its own.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="training", title="Training", order=30, services=("trainer",))
