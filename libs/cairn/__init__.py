"""Cairn: a self-hosted, event-driven ML platform (the shared kernel).

The user's tools live outside the kernel: the SDK in `cairn_sdk` (`from cairn_sdk import Client`),
the `cairn` command line and the demo in `cairn_cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
