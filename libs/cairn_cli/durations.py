"""`30d`, `12h`, `90m` and ISO times on the command line, as the CLI's options take them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import typer

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str, flag: str) -> timedelta:
    """`30d` -> 30 days (s, m, h, d, w); exit 2 naming the flag otherwise."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(
            f"{text!r} is not a duration like 90m, 12h, 30d or 2w", param_hint=flag
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_since(text: str, flag: str, now: datetime | None = None) -> datetime:
    """A duration ago (`1h`) or an ISO time (`2026-11-21T10:00:00Z`; naive means UTC)."""
    if _DURATION.match(text):
        return (now or datetime.now(UTC)) - parse_duration(text, flag)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (1h, 7d) nor an ISO time", param_hint=flag
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
