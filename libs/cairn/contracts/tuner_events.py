"""Hyperparameter tuning events (owner: the tuner service)."""

from __future__ import annotations
