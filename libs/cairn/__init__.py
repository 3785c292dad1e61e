"""Cairn: a self-hosted, event-driven ML platform (the shared kernel)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cairn.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """`from cairn import Client` without importing httpx for every `cairn.*` import."""
    if name == "Client":
        from cairn.client import Client

        return Client
    raise AttributeError(f"module 'cairn' has no attribute {name!r}")
