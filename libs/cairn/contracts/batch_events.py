"""Batch transform events (owner: the batch service)."""

from __future__ import annotations
