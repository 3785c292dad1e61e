"""Models: groups, versions, metrics, approval with a reason, and each version's lineage.

Everything goes through the console's proxy: the registry answers and, for an approval, checks
the caller's `approve` scope and audits the decision under the caller's principal. The lineage
graph joins the registry's lineage (datasets, training job, endpoints) with the monitor's runs of
those endpoints, one proxied call each, so no route of its own is needed.
"""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="models", title="Models", order=33, services=("registry",))
