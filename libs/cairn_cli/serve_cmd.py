"""`cairn serve <service>`: run one service in the foreground, the command of every container.

The process replaces itself with `python -m <module>` (the code `cairn up` starts), so the service
is PID 1 in a container and receives SIGTERM itself. `cairn serve serve` is the gateway: SageMaker
starts an inference image as `docker run IMAGE serve` and expects `/ping` and `/invocations` on
port 8080.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from cairn.errors import CairnError
from cairn.runtime.discovery import ServiceSpec, discover_services
from cairn.settings import CairnSettings
from rich.console import Console

# SageMaker's inference container contract: the image is started with the argument `serve`.
SAGEMAKER_SERVE_ALIAS = "serve"
SAGEMAKER_SERVICE = "gateway"


def resolve_service(name: str, settings: CairnSettings) -> ServiceSpec:
    """The discovered service called `name` (`serve` means the gateway).

    Raises:
        typer.BadParameter: no such service; the message lists the ones that exist.
    """
    specs = {spec.name: spec for spec in discover_services(settings)}
    wanted = SAGEMAKER_SERVICE if name == SAGEMAKER_SERVE_ALIAS and name not in specs else name
    spec = specs.get(wanted)
    if spec is None:
        raise typer.BadParameter(
            f"no service named {name!r}; found: {', '.join(specs) or 'none'}",
            param_hint="SERVICE",
        )
    return spec


def service_environment(
    spec: ServiceSpec, host: str | None, port: int | None, base: dict[str, str]
) -> dict[str, str]:
    """The environment the service runs with: `--host/--port` over `CAIRN_HTTP_*`, import path."""
    env = dict(base)
    if host is not None:
        env["CAIRN_HTTP_HOST"] = host
    if port is not None:
        env["CAIRN_HTTP_PORT"] = str(port)
    elif "CAIRN_HTTP_PORT" not in env and spec.preferred_port is not None:
        # A foreground service users call by hand keeps its well-known port (gateway: 8080).
        env["CAIRN_HTTP_PORT"] = str(spec.preferred_port)
    if spec.pythonpath is not None:
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(spec.pythonpath), *([existing] if existing else [])]
        )
    return env


def serve(
    service: Annotated[
        str, typer.Argument(help="The service to run, e.g. trainer, gateway (or `serve`).")
    ],
    host: Annotated[
        str | None,
        typer.Option(help="Interface to listen on. Default: CAIRN_HTTP_HOST.", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="HTTP port. Default: CAIRN_HTTP_PORT, else the service's own port, else free.",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one service in the foreground until SIGTERM (the container command)."""
    console = Console(stderr=True)
    try:
        settings = CairnSettings()
        spec = resolve_service(service, settings)
    except CairnError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    env = service_environment(spec, host, port, dict(os.environ))
    argv = spec.command(sys.executable)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def register(app: typer.Typer) -> None:
    """Add `serve` to the `cairn` command."""
    app.command("serve")(serve)
