"""Cairn: a self-hosted, event-driven ML platform (the shared kernel)."""

__version__ = "0.1.0"
