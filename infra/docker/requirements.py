"""Print pyproject.toml's requirements (dependencies + extras) for the image's cached layer.

The image installs these before it copies the source, so editing code never re-downloads wheels.
The `gpu` extra's full `xgboost` wheel replaces `xgboost-cpu`: both install the `xgboost` module.
Usage: python requirements.py pyproject.toml [EXTRA ...] > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Requirements that another extra replaces, keyed by that extra.
REPLACED_BY_EXTRA = {"gpu": {"xgboost-cpu"}}


def _project_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The project's dependencies plus those of `extras`, minus what an extra replaces."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"unknown extras {unknown}; pyproject.toml has {sorted(optional)}")
    dropped = set().union(*(REPLACED_BY_EXTRA.get(extra, set()) for extra in extras))
    wanted = [*project["dependencies"], *(dep for extra in extras for dep in optional[extra])]
    return [dep for dep in dict.fromkeys(wanted) if _project_name(dep) not in dropped]


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
