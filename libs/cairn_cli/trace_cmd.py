"""`cairn trace CORRELATION_ID`: print one workflow's events as a causal tree, with timings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import datetime
from typing import Annotated

import typer
from cairn.errors import CairnError
from cairn.settings import CairnSettings
from rich.console import Console

from cairn_cli.events_cmd import HomeOption, KafkaOption, _fail, _settings, _with_bootstrap
from cairn_cli.trace import (
    ChainReader,
    TraceEvent,
    build_tree,
    chain_document,
    chain_summary,
    describe,
    event_record,
    render_tree,
    walk,
)


def trace(
    correlation_id: Annotated[str, typer.Argument(help="The workflow's correlation id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document (with --follow: one event a line).")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events of the chain.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --follow: stop after this many seconds.", min=0)
    ] = None,
    kafka: KafkaOption = None,
    home: HomeOption = None,
) -> None:
    """Every event sharing CORRELATION_ID, as a tree by causation, with +time since the first."""
    console = Console(stderr=True)
    settings = _settings(home)
    try:
        settings = _with_bootstrap(settings, kafka)
        found = asyncio.run(_trace(settings, correlation_id, as_json, follow, timeout, console))
    except KeyboardInterrupt:
        found = True
    except CairnError as exc:
        raise _fail(console, exc.message, 1) from None
    if not found:
        raise _fail(console, f"no event has correlation id {correlation_id!r}", 1)


async def _trace(
    settings: CairnSettings,
    correlation_id: str,
    as_json: bool,
    follow: bool,
    timeout_s: float | None,
    console: Console,
) -> bool:
    """Print the chain (and, following, what comes next); True when any event was found."""
    async with ChainReader(settings, correlation_id) as reader:
        history = await reader.history()
        roots = build_tree(history)
        if as_json and not follow:
            typer.echo(json.dumps(chain_document(correlation_id, roots), indent=2, default=str))
        elif as_json:
            first_at = history[0].occurred_at if history else None
            for depth, node in walk(roots):
                _echo_json(node.event, first_at or node.event.occurred_at, depth)
        elif history:
            for line in render_tree(roots):
                typer.echo(line)
            typer.echo(chain_summary(history))
        if not follow:
            return bool(history)
        if not history:
            console.print(f"no event has correlation id {correlation_id!r} yet; waiting for one")
        seen = list(history)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await _follow(reader, seen, as_json)
        return bool(seen)


async def _follow(reader: ChainReader, seen: list[TraceEvent], as_json: bool) -> None:
    """Print each new event indented under its cause, as it arrives."""
    depths = {node.event.event_id: depth for depth, node in walk(build_tree(seen))}
    async for event in reader.follow():
        first_at = min([e.occurred_at for e in seen] + [event.occurred_at])
        seen.append(event)
        parent = event.causation_id
        depth = depths[parent] + 1 if parent is not None and parent in depths else 0
        depths[event.event_id] = depth
        if as_json:
            _echo_json(event, first_at, depth)
        else:
            typer.echo(("   " * (depth - 1) + "└─ " if depth else "") + describe(event, first_at))
            sys.stdout.flush()


def _echo_json(event: TraceEvent, first_at: datetime, depth: int) -> None:
    typer.echo(json.dumps(event_record(event, first_at, depth), default=str))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add `trace` to the `cairn` app."""
    app.command("trace")(trace)
