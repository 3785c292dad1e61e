"""The audit log: who changed what, read from the kernel's `/admin/audit` (admin keys only)."""

from __future__ import annotations

from services.console.areas import Area

AREA = Area(name="audit", title="Audit log", order=90, services=("gateway",))
