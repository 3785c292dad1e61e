"""The reliability suites' figures, appended to one JSON file CI keeps as an artifact.

Set `CAIRN_RELIABILITY_REPORT_DIR` and each suite appends one entry (its name, seed, figures) to
`reliability-report.json` there, a JSON list; unset, nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPORT_DIR_ENV = "CAIRN_RELIABILITY_REPORT_DIR"
REPORT_NAME = "reliability-report.json"


def append_report(entry: dict[str, Any]) -> Path | None:
    """Append `entry` to the report file; its path, or None when no folder is set."""
    folder = os.environ.get(REPORT_DIR_ENV)
    if not folder:
        return None
    path = Path(folder) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = json.loads(path.read_text()) if path.exists() else []
    entries.append(entry)
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return path
