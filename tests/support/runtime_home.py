"""A home whose `runtime.json` says a platform runs there, pointing at servers a test started."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from cairn.auth.credentials import save_home_credential
from cairn.runtime.state import RuntimeState, ServiceState, write_state


def fake_platform(home: Path, services: dict[str, str], token: str | None = None) -> Path:
    """Write `<home>/runtime.json` naming `services` (name -> URL), as `cairn up` would.

    The supervisor pid is this process's, so clients take the platform for a running one; call
    again with other URLs to stand for a restart on other ports.
    """
    state = RuntimeState(
        supervisor_pid=os.getpid(),
        started_at=datetime.now(UTC),
        home=str(home),
        kafka_bootstrap_servers="127.0.0.1:1",
        broker_embedded=False,
        store_url="memory://",
        services=[
            ServiceState(
                name=name,
                module=f"services.{name}",
                port=int(url.rsplit(":", 1)[1]),
                url=url,
                status="healthy",
                log_path=str(home / "logs" / f"{name}.log"),
            )
            for name, url in services.items()
        ],
    )
    write_state(home, state)
    if token is not None:
        save_home_credential(home, token, name="operator")
    return home
