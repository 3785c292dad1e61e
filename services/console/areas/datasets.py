"""Datasets: versions, schema and profile (from ingest), and the models trained on each version.

The page reads ingest through the console's proxy. One route of its own: which model versions
were trained on a dataset, which needs every group's versions from the registry (one call per
group); it is gathered here in one answer instead of by the page. It calls the registry with the
caller's own credential, so the registry decides what they may read.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from cairn.auth import requires
from cairn.datasets import DATASET_NAME_PATTERN
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from services.console.areas import Area
from services.console.upstream import upstream_of

AREA = Area(name="datasets", title="Datasets", order=20, services=("ingest",))

router = APIRouter(prefix="/api/datasets", tags=["console-datasets"])
DatasetName = Annotated[str, PathParam(pattern=DATASET_NAME_PATTERN)]


def dataset_reference(uri: str) -> tuple[str, int] | None:
    """`dataset://<name>@<version>` -> (name, version); None for any other input URI."""
    if not uri.startswith("dataset://") or "@" not in uri:
        return None
    name, _, version = uri.removeprefix("dataset://").rpartition("@")
    return (name, int(version)) if version.isdigit() else None


def trained_on(versions: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """The model versions whose lineage names a version of `dataset`, one row per channel."""
    rows: list[dict[str, Any]] = []
    for version in versions:
        for source in (version.get("lineage") or {}).get("datasets") or []:
            reference = dataset_reference(str(source.get("uri", "")))
            if reference is None or reference[0] != dataset:
                continue
            rows.append(
                {
                    "dataset_version": reference[1],
                    "channel": source.get("channel"),
                    "model_package_group": version.get("model_package_group"),
                    "version": version.get("version"),
                    "approval_status": version.get("approval_status"),
                    "training_job": (version.get("lineage") or {}).get("training_job"),
                    "created_at": version.get("created_at"),
                }
            )
    return rows


@router.get("/{name}/models", dependencies=[requires("read")], response_model=None)
async def models_trained_on(
    name: DatasetName, request: Request
) -> list[dict[str, Any]] | JSONResponse:
    """Every registered model version trained on a version of this dataset, newest first."""
    upstream = upstream_of(request)
    status, groups = await upstream.get_json(request, "registry", "model-package-groups")
    if status != 200:
        return JSONResponse(groups, status_code=status)
    paths = [f"model-package-groups/{quote(group['name'], safe='')}/versions" for group in groups]
    answers = await asyncio.gather(
        *(upstream.get_json(request, "registry", path) for path in paths)
    )
    versions = [item for status, found in answers if status == 200 for item in found]
    rows = trained_on(versions, name)
    rows.sort(key=lambda row: str(row["created_at"]), reverse=True)
    return rows
