"""The slim install (`pip install cairn`) has no model or data libraries: say which extra to add.

The CLI and the SDK import none of them at module level; the commands that need them (the demo,
running the platform) check here first and name the extra instead of failing on an import.
"""

from __future__ import annotations

import importlib.util

from cairn.errors import ConfigError

# What the services import, as the `platform` extra installs them (module names, not packages).
PLATFORM_MODULES = (
    "numpy",
    "pandas",
    "pyarrow",
    "duckdb",
    "redis",
    "xgboost",
    "sklearn",
    "skops",
    "alibi_detect",
    "matplotlib",
    "plotly",
)
DEMO_MODULES = ("numpy", "pandas")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module blanked out in sys.modules
        return False


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported here (found without importing them)."""
    return [name for name in modules if not _importable(name)]


def install_hint(extra: str) -> str:
    return f"pip install 'cairn[{extra}]' (in a checkout: pip install -e '.[{extra}]')"


def require_modules(what: str, modules: tuple[str, ...], extra: str) -> None:
    """ConfigError naming the missing modules and the extra that brings them."""
    missing = missing_modules(modules)
    if missing:
        raise ConfigError(
            f"{what} needs {', '.join(missing)}, which this install lacks: {install_hint(extra)}"
        )
