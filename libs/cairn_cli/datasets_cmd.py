"""`cairn datasets upload | register | list | describe`: datasets through the ingest API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cairn_cli.sdk_common import (
    HomeOption,
    answer_or_exit,
    api_headers,
    call_service,
    require_service_url,
)

INGEST_SERVICE = "ingest"
CHUNK_BYTES = 1 << 20
UPLOAD_TIMEOUT_S = 3600.0
CONTENT_TYPES = {
    "csv": "text/csv",
    "parquet": "application/x-parquet",
    "jsonl": "application/jsonlines",
}
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

datasets_app = typer.Typer(
    name="datasets", help="Upload, register and inspect datasets.", no_args_is_help=True
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Ingest service URL. Default: CAIRN_INGEST_URL, else the platform on --home.",
        show_default=False,
    ),
]


def ingest_url(url: str | None, home: Path | None = None) -> str:
    """--url, else CAIRN_INGEST_URL, else the ingest service of the platform on --home."""
    return require_service_url(INGEST_SERVICE, url, home)


def _read_schema(path: Path) -> Any:
    """The --schema file's JSON; a file that is not JSON is a usage error (exit 2), not a crash."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        message = f"{path} is not valid JSON: {exc}"
        raise typer.BadParameter(message, param_hint="--schema") from None


def _chunks(path: Path, progress: Progress, task: Any) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            progress.advance(task, len(chunk))
            yield chunk


def _store_filename(file: Path, file_format: str) -> str:
    """FILE's name as the ingest service accepts it, its suffix naming the format."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", file.name).lstrip("._-")[:100] or "upload"
    if SUFFIX_FORMATS.get(Path(safe).suffix.lower()) != file_format:
        safe = f"{safe}.{file_format}"
    return safe


def _upload_via_store(
    base: str,
    name: str,
    file: Path,
    file_format: str,
    schema: Path | None,
    home: Path | None,
    progress: Progress,
) -> None:
    """Ask for a presigned URL, PUT FILE straight into the store, then register it."""
    headers = api_headers(home)
    ticket = answer_or_exit(
        httpx.post(
            f"{base}/datasets/{name}/upload-url",
            json={"filename": _store_filename(file, file_format)},
            headers=headers,
            timeout=60.0,
            trust_env=False,
        )
    )
    size = file.stat().st_size
    with progress:
        task = progress.add_task(f"upload {file.name} to the store", total=size)
        put = httpx.put(
            ticket["upload_url"],
            content=_chunks(file, progress, task),
            headers={**ticket["headers"], "Content-Length": str(size)},
            timeout=UPLOAD_TIMEOUT_S,
        )
    if put.status_code >= 300:
        Console(stderr=True).print(f"[red]error {put.status_code}:[/] {escape(put.text[:500])}")
        raise typer.Exit(1)
    body: dict[str, Any] = {"source_uri": ticket["source_uri"], "format": ticket["format"]}
    if schema is not None:
        body["declared_schema"] = _read_schema(schema)
    answer = answer_or_exit(
        httpx.post(
            f"{base}{ticket['register_path']}",
            json=body,
            headers=headers,
            timeout=UPLOAD_TIMEOUT_S,
            trust_env=False,
        )
    )
    verb = "stored" if answer["created"] else "unchanged (identical content)"
    typer.echo(f"{answer['uri']} {verb}: {answer['row_count']} rows, sha256 {answer['sha256']}")


@datasets_app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
    schema: Annotated[
        Path | None,
        typer.Option("--schema", exists=True, dir_okay=False, help="JSON list of columns."),
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: from suffix).")
    ] = None,
    via_store: Annotated[
        bool,
        typer.Option(
            "--via-store",
            help="PUT FILE straight into the object store through a presigned URL, then "
            "register it: for files over the service's upload limit (S3 / MinIO stores, "
            "up to 5 GiB per file).",
        ),
    ] = False,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Stream FILE to the ingest service as a new version of dataset NAME.

    Bodies over CAIRN_INGEST_MAX_UPLOAD_BYTES (default 2 GiB) are refused (413):
    send bigger files with --via-store.
    CSV and JSON Lines must be UTF-8 text.
    """
    suffix = file.suffix.lower() if file.suffix.lower() != ".gz" else Path(file.stem).suffix
    chosen = file_format or SUFFIX_FORMATS.get(suffix)
    if chosen not in CONTENT_TYPES:
        raise typer.BadParameter("cannot tell the format; pass --format", param_hint="--format")
    params = {"schema": json.dumps(_read_schema(schema))} if schema else {}
    headers = {**api_headers(home), "Content-Type": CONTENT_TYPES[chosen]}
    base = ingest_url(url, home)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    if via_store:
        _upload_via_store(base, name, file, chosen, schema, home, progress)
        return
    with progress:
        task = progress.add_task(f"upload {file.name}", total=file.stat().st_size)
        try:
            response = httpx.post(
                f"{base}/datasets/{name}/upload",
                content=_chunks(file, progress, task),
                params=params,
                headers=headers,
                timeout=UPLOAD_TIMEOUT_S,
                trust_env=False,
            )
        except httpx.HTTPError as error:
            Console(stderr=True).print(
                f"[red]error:[/] cannot reach {escape(base)}: {escape(str(error))}"
            )
            raise typer.Exit(1) from None
    body = answer_or_exit(response)
    verb = "stored" if body["created"] else "unchanged (identical content)"
    typer.echo(f"{body['uri']} {verb}: {body['row_count']} rows, sha256 {body['sha256']}")


@datasets_app.command("register")
def register_prefix(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    source_uri: Annotated[str, typer.Argument(help="Store prefix or key of the data files.")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet, jsonl.")
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option("--schema", exists=True, dir_okay=False, help="JSON list of columns."),
    ] = None,
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """Register the objects under a store prefix as a new version of dataset NAME."""
    body: dict[str, Any] = {"source_uri": source_uri, "format": file_format}
    if schema is not None:
        body["declared_schema"] = _read_schema(schema)
    answer = call_service(
        "POST",
        f"{ingest_url(url, home)}/datasets/{name}/register",
        home=home,
        timeout_s=UPLOAD_TIMEOUT_S,
        json=body,
    )
    typer.echo(f"{answer['uri']} ({answer['row_count']} rows, created={answer['created']})")


@datasets_app.command("list")
def list_datasets(url: UrlOption = None, home: HomeOption = None) -> None:
    """Every dataset and its newest version."""
    rows = call_service("GET", f"{ingest_url(url, home)}/datasets", home=home)
    table = Table("name", "versions", "latest", "rows", "sha256")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["versions"]),
            str(row["latest_version"]),
            str(row["latest_row_count"]),
            row["latest_sha256"][:12],
        )
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@datasets_app.command()
def describe(
    dataset: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: latest).")],
    url: UrlOption = None,
    home: HomeOption = None,
) -> None:
    """A version's schema and column profile."""
    name, _, version = dataset.removeprefix("dataset://").partition("@")
    path = f"/datasets/{name}/{version or 'latest'}"
    body = call_service("GET", f"{ingest_url(url, home)}{path}", home=home)
    console = Console()
    console.print(
        f"[bold]dataset://{body['name']}@{body['version']}[/]  {body['row_count']} rows  "
        f"sha256 {body['sha256']}  source {escape(body.get('source') or '-')}"
    )
    table = Table("column", "type", "nullable", "missing", "min", "max", "mean", "p50", "top")
    nullable = {column["name"]: column["nullable"] for column in body["columns"]}
    for column in body["profile"]:
        top = ", ".join(f"{item['value']} ({item['count']})" for item in column["top_values"][:3])
        table.add_row(
            column["name"],
            column["dtype"],
            "yes" if nullable.get(column["name"], True) else "no",
            f"{column['missing_share']:.1%}",
            _cell(column["min"]),
            _cell(column["max"]),
            _cell(column["mean"]),
            _cell(column["quantiles"].get("p50")),
            escape(top),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the `datasets` group to the `cairn` app."""
    app.add_typer(datasets_app)
