"""The console's areas: one module here (plus one `static/areas/<name>.js`) per area of the page.

A module that defines `AREA = Area(...)` is an area; if it also defines `router` (a FastAPI
`APIRouter` with its own aggregation routes under `/api/<area>/...`), the console includes it.
Discovered with `pkgutil`, so adding a service's pages is two new files and no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType

from fastapi import APIRouter


@dataclass(frozen=True)
class Area:
    """One entry of the console's navigation.

    `services` are the services whose APIs the area reads; it is shown as unavailable when one of
    them has no URL (not running on this platform).
    """

    name: str
    title: str
    order: int
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiscoveredArea:
    """An area and its module's router (None when the area has no routes of its own)."""

    area: Area
    router: APIRouter | None = field(default=None, compare=False)


def _modules() -> list[ModuleType]:
    return [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]


def discover_areas() -> list[DiscoveredArea]:
    """Every area of this package, in navigation order (then by name).

    Raises:
        ValueError: an area's name differs from its module's.
    """
    found: dict[str, DiscoveredArea] = {}
    for module in _modules():
        area = getattr(module, "AREA", None)
        if not isinstance(area, Area):
            continue
        module_name = module.__name__.rsplit(".", 1)[-1]
        if area.name != module_name:
            raise ValueError(f"area {area.name!r} must live in areas/{area.name}.py")
        router = getattr(module, "router", None)
        found[area.name] = DiscoveredArea(area, router if isinstance(router, APIRouter) else None)
    return sorted(
        found.values(), key=lambda found_area: (found_area.area.order, found_area.area.name)
    )
