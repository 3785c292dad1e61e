"""Labeling jobs (progress, agreement, per-annotator quality) and the human review queue.

The page reads the labeling service's public API through the console's proxy. Annotators and
reviewers work on the labeling service's own page (`/ui/`); the one route here tells the console
page where that is, so it can link to it.
"""

from __future__ import annotations

from typing import Any

from cairn.auth import requires
from fastapi import APIRouter, Request

from services.console.areas import Area
from services.console.upstream import upstream_of

AREA = Area(name="labeling", title="Labeling", order=40, services=("labeling",))

router = APIRouter(prefix="/api/labeling", tags=["console-labeling"])


@router.get("/page", dependencies=[requires("read")])
async def labeling_page(request: Request) -> dict[str, Any]:
    """The annotators' and the admin page on the labeling service (null when it does not run)."""
    base = (await upstream_of(request).urls()).get("labeling")
    return {
        "url": f"{base}/ui/" if base else None,
        "admin_url": f"{base}/ui/admin.html" if base else None,
    }
