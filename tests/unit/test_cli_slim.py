"""The slim install: the CLI and the SDK work without the services' model and data libraries."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cairn_cli import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "pandas", "pyarrow", "duckdb", "redis", "xgboost", "sklearn", "skops", "scipy")
HEAVY_DISTRIBUTIONS = {
    "numpy", "pandas", "pyarrow", "duckdb", "redis", "xgboost-cpu", "xgboost", "scikit-learn",
    "skops", "alibi-detect", "matplotlib",
}  # fmt: skip
SERVICE_GROUPS = ("training", "serving", "monitoring", "features", "data")


def _names(requirements: list[str]) -> set[str]:
    return {
        requirement.split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        for requirement in requirements
    }


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def test_the_base_install_has_no_model_or_data_library() -> None:
    base = _names(project()["dependencies"])  # type: ignore[arg-type]

    assert not base & HEAVY_DISTRIBUTIONS
    assert {"httpx", "typer", "rich", "cryptography", "pydantic"} <= base


def test_the_platform_extra_installs_every_service_groups_libraries() -> None:
    extras: dict[str, list[str]] = project()["optional-dependencies"]  # type: ignore[assignment]
    platform = set(extras["platform"])

    for group in SERVICE_GROUPS:
        assert set(extras[group]) <= platform, group
    assert _names(extras["platform"]) >= HEAVY_DISTRIBUTIONS - {"xgboost"}


def test_the_cli_and_sdk_import_no_model_or_data_library() -> None:
    probe = (
        "import sys, cairn_sdk, cairn_cli, cairn_cli.demo_cmd; "
        "from cairn_sdk import Client; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert answer.stdout.strip() == "[]", answer.stdout + answer.stderr


def test_the_kernel_does_not_import_the_users_tools() -> None:
    probe = "import sys, cairn, cairn.service; print(sorted(m for m in sys.modules if m.startswith(('cairn_cli', 'cairn_sdk'))))"  # noqa: E501
    answer = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert answer.stdout.strip() == "[]", answer.stdout + answer.stderr


def test_demo_without_its_libraries_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pandas" else real(name, *a)
    )

    result = CliRunner().invoke(app, ["demo", "--target", "http://127.0.0.1:9"])

    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "needs pandas" in flat and "cairn[platform]" in flat
