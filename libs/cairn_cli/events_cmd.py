"""`cairn events publish | tail | list`: trigger workflows and watch the bus from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cairn.contracts.catalogue import catalogue, load_contract_modules, spec_for, validate_data
from cairn.contracts.envelope import Envelope
from cairn.errors import CairnError, ConfigError, EventValidationError, UnknownEventType
from cairn.runtime.discovery import import_roots
from cairn.runtime.state import pid_alive, read_state
from cairn.settings import CairnSettings

from cairn_cli.credential import user_signer

if TYPE_CHECKING:
    from cairn.bus.publish import Signer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_INVALID = 2

events_app = typer.Typer(
    name="events", help="Publish, tail and list platform events.", no_args_is_help=True
)

KafkaOption = Annotated[
    str | None,
    typer.Option(
        "--kafka",
        help="Bootstrap servers host:port. Default: CAIRN_KAFKA_BOOTSTRAP_SERVERS, else the "
        "platform `cairn up` runs on CAIRN_HOME.",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Runtime folder of `cairn up`. Default: CAIRN_HOME or .cairn."),
]


def _settings(home: Path | None) -> CairnSettings:
    """Settings with every contract module loaded, so user event types are known."""
    settings = CairnSettings(home=home) if home is not None else CairnSettings()
    try:
        for root in import_roots(settings):
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        load_contract_modules(settings.contract_modules)
    except ConfigError as exc:
        raise _fail(Console(stderr=True), exc.message, 1) from None
    except ImportError as exc:
        message = f"cannot import a CAIRN_CONTRACT_MODULES module: {exc}"
        raise _fail(Console(stderr=True), message, 1) from None
    return settings


def _with_bootstrap(settings: CairnSettings, kafka: str | None) -> CairnSettings:
    """Settings pointing at --kafka, CAIRN_KAFKA_BOOTSTRAP_SERVERS or the running platform."""
    servers = kafka or settings.kafka_bootstrap_servers
    if not servers:
        state = read_state(settings.home.resolve())
        if state is not None and pid_alive(state.supervisor_pid):
            servers = state.kafka_bootstrap_servers
    if not servers:
        raise ConfigError(
            f"no Kafka to talk to: Cairn is not running on {settings.home.resolve()}; "
            "start it with `cairn up` or pass --kafka HOST:PORT"
        )
    return settings.model_copy(update={"kafka_bootstrap_servers": servers})


def _fail(console: Console, message: str, code: int) -> typer.Exit:
    console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _parse_data(text: str) -> dict[str, Any]:
    """The event data from --data: inline JSON, or `@path` to read it from a file."""
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventValidationError(f"--data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventValidationError("--data must be a JSON object")
    return data


@events_app.command("publish")
def publish(
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. TrainingJobRequested.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Event data as JSON, or @file.json.")],
    correlation_id: Annotated[
        str | None, typer.Option(help="Workflow id shared by every resulting event.")
    ] = None,
    kafka: KafkaOption = None,
    home: HomeOption = None,
) -> None:
    """Validate event data against its model, sign it with your credential and publish it.

    Exit 2 when the data is invalid. The envelope names your key (`key_id`) and carries its HMAC
    signature; services dead-letter a privileged request whose key lacks the scope.
    """
    console = Console(stderr=True)
    settings = _settings(home)
    try:
        payload = _parse_data(data)
        validate_data(event_type, payload)
    except (EventValidationError, UnknownEventType) as exc:
        raise _fail(console, exc.message, EXIT_INVALID) from None
    except OSError as exc:
        raise _fail(console, f"cannot read --data file: {exc}", EXIT_INVALID) from None
    try:
        signer = _signer_for(event_type, home)
        settings = _with_bootstrap(settings, kafka)
        envelope = asyncio.run(_publish(settings, event_type, payload, correlation_id, signer))
    except (EventValidationError, UnknownEventType) as exc:
        raise _fail(console, exc.message, EXIT_INVALID) from None
    except CairnError as exc:
        raise _fail(console, exc.message, 1) from None
    spec = spec_for(event_type)
    key = str(getattr(envelope.data, spec.key_field))
    typer.echo(f"event_id={envelope.event_id} topic={spec.topic} key={key}")


def _signer_for(event_type: str, home: Path | None) -> Signer | None:
    """The user's credential; a privileged request (one a scope guards) cannot go unsigned."""
    signer = user_signer(home)
    scope = spec_for(event_type).required_scope
    if signer is None and scope is not None:
        raise ConfigError(
            f"{event_type} needs a signature by a key with the {scope!r} scope, and no credential "
            "was found: set CAIRN_API_KEY, or start the platform once with `cairn up` (it saves "
            "one in the home)"
        )
    return signer


async def _publish(
    settings: CairnSettings,
    event_type: str,
    data: dict[str, Any],
    correlation_id: str | None,
    signer: Signer | None,
) -> Envelope[Any]:
    from cairn.bus.client import EventProducer

    async with EventProducer(settings, source="cli", signer=signer) as producer:
        return await producer.publish_raw(event_type, data, correlation_id=correlation_id)


@events_app.command("tail")
def tail(
    event_types: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="Only this event type (repeatable). Default: all."),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest retained event.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int | None, typer.Option(help="Exit after this many events.", min=1)] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Exit after this many seconds.", min=0)
    ] = None,
    kafka: KafkaOption = None,
    home: HomeOption = None,
) -> None:
    """Print each event as it arrives: time, type, key, correlation id, data."""
    console = Console(stderr=True)
    settings = _settings(home)
    try:
        types = [spec_for(name).type for name in event_types] if event_types else list(catalogue())
        settings = _with_bootstrap(settings, kafka)
    except UnknownEventType as exc:
        raise _fail(console, exc.message, EXIT_INVALID) from None
    except CairnError as exc:
        raise _fail(console, exc.message, 1) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(settings, types, from_beginning, as_json, limit, timeout))


async def _tail(
    settings: CairnSettings,
    types: list[str],
    from_beginning: bool,
    as_json: bool,
    limit: int | None,
    timeout_s: float | None,
) -> None:
    from cairn.bus.client import tail_events

    out = Console(soft_wrap=True, highlight=False)
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for topic, partition, offset, key, item, error in tail_events(
                settings, types, from_beginning=from_beginning
            ):
                record = _record(topic, partition, offset, key, item, error)
                if as_json:
                    sys.stdout.write(json.dumps(record, default=str) + "\n")
                else:
                    out.print(_line(record))
                sys.stdout.flush()
                seen += 1
                if limit is not None and seen >= limit:
                    return


def _record(
    topic: str, partition: int, offset: int, key: Any, item: Any, error: Any
) -> dict[str, Any]:
    """One consumed message as plain data, whether it decoded or not."""
    key_text = key.decode(errors="replace") if isinstance(key, bytes) else key
    record: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key_text,
    }
    if error is not None or not isinstance(item, BaseModel):
        record["error"] = str(error) if error is not None else "undecodable message"
        raw = item.decode(errors="replace") if isinstance(item, bytes) else item
        record["raw"] = raw.model_dump(mode="json") if isinstance(raw, BaseModel) else raw
        return record
    record.update(item.model_dump(mode="json"))
    return record


def _line(record: dict[str, Any]) -> str:
    """A one-line rich rendering of a record from `_record`."""
    if "error" in record:
        where = f"{record['topic']}[{record['partition']}]@{record['offset']}"
        return f"[red]invalid[/] {escape(where)} {escape(str(record['error']))}"
    data = json.dumps(record["data"], separators=(",", ":"), default=str)
    return (
        f"[dim]{escape(str(record['occurred_at']))}[/] [bold cyan]{escape(record['type'])}[/] "
        f"key=[green]{escape(str(record['key']))}[/] "
        f"correlation={escape(str(record['correlation_id']))} {escape(data)}"
    )


@events_app.command("list")
def list_events(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """Print the event catalogue: type, topic, key field and owning service."""
    _settings(home)
    specs = list(catalogue().values())
    if as_json:
        rows = [
            {
                "type": s.type,
                "topic": s.topic,
                "key": s.key_field,
                "owner": s.owner,
                "partitions": s.partitions,
                "description": s.description,
            }
            for s in specs
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Cairn events")
    for column in ("type", "topic", "key", "owner", "description"):
        table.add_column(column)
    for spec in specs:
        table.add_row(spec.type, spec.topic, spec.key_field, spec.owner, spec.description)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add the `events` group to the `cairn` app."""
    app.add_typer(events_app)
