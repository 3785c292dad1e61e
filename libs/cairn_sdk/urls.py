"""Where each service answers: an explicit URL, CAIRN_<SERVICE>_URL, one target, or `cairn up`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

SERVICES = (
    "trainer",
    "registry",
    "deployer",
    "gateway",
    "ingest",
    "batch",
    "tuner",
    "edge",
    "experiments",
    "pipelines",
    "labeling",
)
ServiceName = Literal[
    "trainer",
    "registry",
    "deployer",
    "gateway",
    "ingest",
    "batch",
    "tuner",
    "edge",
    "experiments",
    "pipelines",
    "labeling",
]
TARGET_ENV = "CAIRN_TARGET"


def _urls_from_runtime(home: Path) -> dict[str, str]:
    from cairn.runtime.state import pid_alive, read_state

    state = read_state(home)
    if state is None or not pid_alive(state.supervisor_pid):
        return {}
    return {service.name: service.url.rstrip("/") for service in state.services}


def service_url(
    name: str,
    url: str | None = None,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """One service's base URL: `url`, else CAIRN_<NAME>_URL, else the platform running on `home`.

    Works for every service `cairn up` runs, not only the SDK's; None when none is found.
    """
    environ = os.environ if env is None else env
    found = url or environ.get(f"CAIRN_{name.upper()}_URL")
    if found:
        return found.rstrip("/")
    from cairn.settings import CairnSettings

    return _urls_from_runtime((home or CairnSettings().home).resolve()).get(name)


def service_urls(
    target: str | None = None, home: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each service's base URL: CAIRN_<SERVICE>_URL, else `target` (or CAIRN_TARGET), else the
    platform running on `home` (default: CAIRN_HOME or .cairn).
    """
    environ = os.environ if env is None else env
    urls: dict[str, str] = {}
    base = target or environ.get(TARGET_ENV)
    if base:
        urls = {name: base.rstrip("/") for name in SERVICES}
    else:
        from cairn.settings import CairnSettings

        resolved_home = (home or CairnSettings().home).resolve()
        urls = _urls_from_runtime(resolved_home)
    for name in SERVICES:
        explicit = environ.get(f"CAIRN_{name.upper()}_URL")
        if explicit:
            urls[name] = explicit.rstrip("/")
    return urls
