"""Ports kept across restarts of one home: `<home>/ports.json` remembers each service's last port.

`cairn down` / `cairn up` then gives every service (and the embedded broker) the port it had,
when that port is free, so a URL a user saved (the demo's curl) keeps working.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from cairn.runtime.broker import free_port, port_open

PORTS_FILE = "ports.json"
BROKER = "_broker"  # the embedded broker's entry (no service may start with "_")


def ports_path(home: Path) -> Path:
    return home / PORTS_FILE


def read_ports(home: Path) -> dict[str, int]:
    """The remembered ports by service name; empty when none (or the file is unreadable)."""
    try:
        raw = json.loads(ports_path(home).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): port for name, port in raw.items() if isinstance(port, int) and 0 < port < 65536
    }


def remember_ports(home: Path, ports: dict[str, int]) -> None:
    """Merge `ports` into the remembered ones (atomically: a sibling file, then rename)."""
    merged = {**read_ports(home), **ports}
    home.mkdir(parents=True, exist_ok=True)
    target = ports_path(home)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(merged, indent=2, sort_keys=True))
    os.replace(temporary, target)


def can_bind(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (nothing listens, nothing holds it)."""
    if port_open(host, port, timeout_s=0.2):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn and Tansu do: a port in TIME_WAIT from the last run is still usable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            probe.bind((host, port))
            return True
    return False


def pick_port(host: str, *candidates: int | None) -> int:
    """The first candidate that is free (remembered, then declared), else one the OS picks."""
    for port in candidates:
        if port is not None and can_bind(host, port):
            return port
    return free_port(host)
