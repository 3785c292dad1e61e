"""Service discovery: every folder with a __main__.py runs, under the right module name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cairn.errors import ConfigError
from cairn.runtime.discovery import discover_services, import_roots
from cairn.settings import CairnSettings


def _service(folder: Path, *, package: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "__main__.py").write_text("")
    if package:
        (folder / "__init__.py").write_text("")
    return folder


@pytest.fixture
def no_installed_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty installed `services` package, so only the extra paths are found."""
    root = tmp_path / "site"
    (root / "services").mkdir(parents=True)
    (root / "services" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "services", raising=False)
    return root / "services"


def test_installed_services_package_is_scanned(no_installed_services: Path) -> None:
    _service(no_installed_services / "trainer")
    _service(no_installed_services / "registry")
    (no_installed_services / "helpers").mkdir()  # no __main__.py: a library, not a service

    specs = discover_services(CairnSettings(services_paths=[]))

    assert [(s.name, s.module, s.pythonpath) for s in specs] == [
        ("registry", "services.registry", None),
        ("trainer", "services.trainer", None),
    ]
    assert specs[1].command("/usr/bin/python3") == ["/usr/bin/python3", "-m", "services.trainer"]


def test_extra_path_inside_a_package_tree_runs_under_its_qualified_name(
    tmp_path: Path, no_installed_services: Path
) -> None:
    tree = tmp_path / "repo" / "tests" / "services"
    for package in (tmp_path / "repo" / "tests", tree):
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    _service(tree / "echo")

    specs = discover_services(CairnSettings(services_paths=[tree]))

    assert [(s.name, s.module, s.pythonpath) for s in specs] == [
        ("echo", "tests.services.echo", (tmp_path / "repo").resolve())
    ]
    assert import_roots(CairnSettings(services_paths=[tree])) == [(tmp_path / "repo").resolve()]


def test_extra_plain_folder_is_put_on_the_python_path(
    tmp_path: Path, no_installed_services: Path
) -> None:
    plain = tmp_path / "plugins"
    _service(plain / "scorer", package=False)
    _service(plain / ".hidden")
    _service(plain / "_private")

    specs = discover_services(CairnSettings(services_paths=[plain]))

    assert [(s.name, s.module, s.pythonpath) for s in specs] == [
        ("scorer", "scorer", plain.resolve())
    ]


def test_two_services_with_one_name_are_refused(
    tmp_path: Path, no_installed_services: Path
) -> None:
    _service(no_installed_services / "echo")
    _service(tmp_path / "extra" / "echo")

    with pytest.raises(ConfigError, match="two services are named 'echo'"):
        discover_services(CairnSettings(services_paths=[tmp_path / "extra"]))


def test_missing_services_path_is_a_config_error(
    tmp_path: Path, no_installed_services: Path
) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        discover_services(CairnSettings(services_paths=[tmp_path / "nope"]))


def test_services_paths_come_from_the_environment(
    tmp_path: Path, no_installed_services: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _service(tmp_path / "extra" / "echo", package=False)
    monkeypatch.setenv("CAIRN_SERVICES_PATHS", f'["{tmp_path / "extra"}"]')

    assert [s.name for s in discover_services(CairnSettings())] == ["echo"]


def test_a_service_keeps_the_port_its_package_declares(tmp_path: Path) -> None:
    from cairn.runtime.discovery import preferred_port

    gateway = tmp_path / "gateway"
    gateway.mkdir()
    (gateway / "__main__.py").write_text("")
    (gateway / "__init__.py").write_text('"""Gateway."""\n\nHTTP_PORT: int = 8080\n')
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "__init__.py").write_text("OTHER = 1\n")
    assert preferred_port(gateway) == 8080
    assert preferred_port(plain) is None
