"""Monitor: schedules and runs per endpoint, drift per feature, model quality over time.

Everything goes through the console's proxy to the monitor's API: the run list gives quality
over time, and a run's report (`/schedules/{endpoint}/runs/{run_id}`) gives each feature's test
and its reference vs current distributions, binned by the monitor so the page only plots them.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="monitor", title="Monitor", order=35, services=("monitor",))
