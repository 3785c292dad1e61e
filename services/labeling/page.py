"""The annotator's page and the admin page: static files served by the service itself (no CDN).

The kernel's `StaticFront` serves them without a credential (they hold no data and no secret);
the page signs in with a key the person types, and the API behind it is guarded as ever.
"""

from __future__ import annotations

from cairn.static_front import StaticFront
from starlette.types import ASGIApp


class PageFront(StaticFront):
    """Serves `/ui/<file>` from `services/labeling/static/`; every other path goes to the API."""

    def __init__(self, api: ASGIApp) -> None:
        super().__init__(api, "services.labeling")
