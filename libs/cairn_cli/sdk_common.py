"""What the SDK-backed commands share: finding the services, errors -> exit codes, output."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from cairn.errors import CairnError
from cairn_sdk import Client, service_url
from cairn_sdk.credentials import bearer_headers, resolve_token
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_SERVICE_ERROR = 1
EXIT_BAD_INPUT = 2

TargetOption = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="Base URL of every service (one ingress). Default: CAIRN_TARGET, else the platform "
        "`cairn up` runs on --home. CAIRN_<SERVICE>_URL overrides one service.",
        show_default=False,
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Runtime folder of `cairn up`. Default: CAIRN_HOME or .cairn.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def client_for(target: str | None, home: Path | None, **options: Any) -> Client:
    """The SDK client for the services named by --target, the environment or runtime.json."""
    return Client.from_env(target=target, home=home, **options)


def require_service_url(name: str, url: str | None, home: Path | None = None) -> str:
    """--url, else CAIRN_<NAME>_URL, else the running platform's service; exit 2 saying how."""
    found = service_url(name, url, home)
    if found is None:
        from cairn.settings import CairnSettings

        where = (home or CairnSettings().home).resolve()
        raise typer.BadParameter(
            f"no {name} service: Cairn is not running on {where}; start it with `cairn up`, "
            f"or pass --url / set CAIRN_{name.upper()}_URL",
            param_hint="--url",
        )
    return found


def api_headers(home: Path | None = None) -> dict[str, str]:
    """`Authorization: Bearer` with CAIRN_API_KEY, else the credential `cairn up` saved in home."""
    return bearer_headers(resolve_token(home))


def answer_or_exit(response: httpx.Response) -> Any:
    """A service's JSON answer (None when empty), or `error <status>: <reason>` and exit 1."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = {"error": response.text}
    if response.status_code >= 400:
        reason = body.get("error") if isinstance(body, dict) else response.text
        console = Console(stderr=True)
        console.print(f"[red]error {response.status_code}:[/] {escape(str(reason))}")
        details = body.get("details") if isinstance(body, dict) else None
        for violation in (details or {}).get("violations", []):
            console.print(f"  {escape(json.dumps(violation))}", highlight=False)
        raise typer.Exit(EXIT_SERVICE_ERROR)
    return body


def call_service(
    method: str, url: str, *, home: Path | None = None, timeout_s: float = 60.0, **kwargs: Any
) -> Any:
    """One request to a service's control plane with the user's credential, by `answer_or_exit`."""
    headers = api_headers(home)
    try:
        response = httpx.request(method, url, headers=headers, timeout=timeout_s, **kwargs)
    except httpx.HTTPError as error:
        Console(stderr=True).print(
            f"[red]error:[/] cannot reach {escape(url)}: {escape(str(error))}"
        )
        raise typer.Exit(EXIT_SERVICE_ERROR) from None
    return answer_or_exit(response)


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """A service's refusal becomes `error: <reason>` on stderr and exit 1."""
    try:
        yield
    except CairnError as error:
        status = error.details.get("status")
        prefix = f"error ({status} {error.code})" if status else f"error ({error.code})"
        Console(stderr=True).print(
            f"[red]{prefix}:[/] {escape(error.message)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_SERVICE_ERROR) from None


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table of plain cells (None shows as a dash)."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("-" if cell is None else escape(str(cell)) for cell in row))
    return grid


def key_value_table(title: str, document: dict[str, Any]) -> Table:
    """A two-column table of a document's top-level fields (nested values as compact JSON)."""
    rows = [
        (key, value if not isinstance(value, dict | list) else json.dumps(value, default=str))
        for key, value in document.items()
    ]
    grid = table(title, ("field", "value"), rows)
    grid.columns[0].style = "cyan"
    return grid


def format_metrics(metrics: dict[str, float], limit: int = 4) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in list(metrics.items())[:limit])


def parse_value(text: str) -> str | int | float | bool:
    """A hyperparameter value as the type it reads as (`5` -> 5, `0.1` -> 0.1, `true` -> True)."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def parse_pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """`k=v` items into a dict; exit 2 naming the flag and the bad item."""
    pairs: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=flag)
        pairs[name.strip()] = value.strip()
    return pairs


def wait_for_job(
    client: Client, job_name: str, console: Console, poll_s: float = 0.5
) -> dict[str, Any]:
    """Wait for a training job with a progress bar (iterations) and its latest metrics.

    A trainer restart (or a whole platform's, on other ports) is waited out, not reported as a
    failure: the job's real outcome is what the bar ends on.
    """
    total = None
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(job_name, total=None, status="Pending", metrics="")

        def update(job: dict[str, Any]) -> None:
            nonlocal total
            if total is None:
                hyperparameters = job.get("request", {}).get("hyperparameters", {})
                rounds = hyperparameters.get("num_round") or hyperparameters.get("epochs")
                total = int(rounds) if isinstance(rounds, int | float) else None
                if total:
                    progress.update(task, total=total)
            done = job.get("iteration") or 0
            if job["status"] == "Completed" and total:
                done = total
            progress.update(
                task,
                completed=done,
                status=job["status"],
                metrics=escape(format_metrics(job.get("metrics") or {})),
            )

        def unreachable(error: Exception) -> None:
            progress.update(task, status="trainer unreachable, retrying")

        return client.wait_for_training_job(
            job_name, on_progress=update, poll_s=poll_s, on_retry=unreachable
        )
