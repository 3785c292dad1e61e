"""Find every runnable service: sub-packages with a `__main__.py`, never a hand-written list.

Two places are scanned: the installed `services` package and each folder in
`CAIRN_SERVICES_PATHS`. A service folder inside a package tree (its parents have `__init__.py`)
runs under its fully qualified name, with the top of that tree added to `PYTHONPATH`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import ConfigError
from cairn.settings import CairnSettings

INSTALLED_PACKAGE = "services"


@dataclass(frozen=True)
class ServiceSpec:
    """One service the supervisor can start with `python -m <module>`."""

    name: str
    module: str
    path: Path
    pythonpath: Path | None = None
    preferred_port: int | None = None

    def command(self, python: str) -> list[str]:
        """The argv that starts this service with the given interpreter."""
        return [python, "-m", self.module]


def _is_service_dir(folder: Path) -> bool:
    return (
        folder.is_dir()
        and (folder / "__main__.py").is_file()
        and not folder.name.startswith((".", "_"))
        and folder.name.isidentifier()
    )


def preferred_port(folder: Path) -> int | None:
    """The `HTTP_PORT = N` a service's `__init__.py` declares (read without importing it).

    A service users call by hand (the gateway on 8080) keeps a well-known port when it is free.
    """
    init = folder / "__init__.py"
    if not init.is_file():
        return None
    for node in ast.parse(init.read_text()).body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if (
            isinstance(target, ast.Name)
            and target.id == "HTTP_PORT"
            and isinstance(value, ast.Constant)
            and isinstance(value.value, int)
        ):
            return value.value
    return None


def _qualified(folder: Path) -> tuple[str, Path]:
    """The dotted module name of `folder` and the root folder to import it from."""
    parts = [folder.name]
    root = folder.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def _installed_roots() -> list[Path]:
    spec = importlib.util.find_spec(INSTALLED_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _scan(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        raise ConfigError(f"services path {str(folder)!r} is not a directory")
    return sorted(child for child in folder.iterdir() if _is_service_dir(child))


def discover_services(settings: CairnSettings) -> list[ServiceSpec]:
    """Every service of the installed `services` package and of `settings.services_paths`.

    Raises:
        ConfigError: a services path is missing, or two different services share a name.
    """
    found: dict[str, ServiceSpec] = {}
    candidates: list[ServiceSpec] = []
    for root in _installed_roots():
        for folder in _scan(root):
            candidates.append(
                ServiceSpec(
                    folder.name,
                    f"{INSTALLED_PACKAGE}.{folder.name}",
                    folder.resolve(),
                    preferred_port=preferred_port(folder),
                )
            )
    for extra in settings.services_paths:
        for folder in _scan(extra.resolve()):
            module, import_root = _qualified(folder)
            candidates.append(
                ServiceSpec(
                    folder.name, module, folder, import_root, preferred_port=preferred_port(folder)
                )
            )
    for spec in candidates:
        existing = found.get(spec.name)
        if existing is None:
            found[spec.name] = spec
        elif existing.path != spec.path:
            raise ConfigError(
                f"two services are named {spec.name!r}: {existing.path} and {spec.path}"
            )
    return sorted(found.values(), key=lambda spec: spec.name)


def import_roots(settings: CairnSettings) -> list[Path]:
    """Folders to put on `sys.path` so the extra services (and their contracts) import."""
    roots: list[Path] = []
    for spec in discover_services(settings):
        if spec.pythonpath is not None and spec.pythonpath not in roots:
            roots.append(spec.pythonpath)
    return roots
