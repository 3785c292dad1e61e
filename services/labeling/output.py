"""Reading a job's items from a dataset version and writing its consolidated labels as Parquet.

Both sides go through the kernel's dataset contract (`cairn.datasets`): the items are read from a
committed version; the labels are written under `outputs/labeling/<job>/` and registered as a new
version of `<job>-labels` by the ingest service (`DatasetRegistrationRequested`).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import tempfile
from pathlib import Path
from typing import Any

from cairn.contracts.labeling_events import LabelingJobRequested
from cairn.datasets import download_dataset, resolve_dataset_uri
from cairn.errors import InvalidInput
from cairn.namespaces import confine
from cairn.store.base import ObjectStore

from services.labeling.consolidate import Consolidated
from services.labeling.domain import OUTPUT_PREFIX, Item

OUTPUT_COLUMNS = ("item_id", "label", "confidence", "labeled_by", "annotator_count")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_items(
    store: ObjectStore, request: LabelingJobRequested, max_items: int
) -> tuple[list[Item], list[str]]:
    """The dataset's rows as items (id, shown text, fields, image key, model score)."""
    import pyarrow.parquet as pq

    resolved = resolve_dataset_uri(store, request.dataset_uri)
    if resolved.version.row_count > max_items:
        raise InvalidInput(
            f"dataset_uri: {resolved.version.row_count} rows; a job labels at most {max_items}",
            field="dataset_uri",
        )
    columns = [column.name for column in resolved.version.columns]
    for field in ("text_column", "image_column", "id_column", "score_column"):
        name = getattr(request, field)
        if name is not None and name not in columns:
            raise InvalidInput(
                f"{field}: {request.dataset_uri} has no column {name!r} "
                f"(columns: {', '.join(columns)})",
                field=field,
            )
    with tempfile.TemporaryDirectory(prefix="cairn-labeling-") as folder:
        paths = download_dataset(store, resolved.version, Path(folder))
        rows: list[dict[str, Any]] = []
        for path in paths:
            rows.extend(pq.read_table(path).to_pylist())
    strings = [
        c.name
        for c in resolved.version.columns
        if c.dtype == "string" and c.name not in (request.image_column, request.id_column)
    ]
    text_column = request.text_column or (strings[0] if strings else None)
    items: list[Item] = []
    seen: set[str] = set()
    for number, row in enumerate(rows):
        fields = {name: _plain(value) for name, value in row.items()}
        item_id = str(fields[request.id_column]) if request.id_column else str(number)
        if item_id in seen:
            raise InvalidInput(f"id_column: item id {item_id!r} repeats", field="id_column")
        seen.add(item_id)
        image_key = None
        if request.image_column:
            raw = fields.get(request.image_column)
            if not raw:
                raise InvalidInput(
                    f"image_column: row {number} has no image key", field="image_column"
                )
            image_key = confine(str(raw), field="image_column", store=store)
        score = fields.get(request.score_column) if request.score_column else None
        items.append(
            Item(
                item_id=item_id,
                text="" if text_column is None else str(fields.get(text_column) or ""),
                fields=fields,
                image_key=image_key,
                score=float(score) if isinstance(score, int | float) else None,
            )
        )
    return items, columns


def labels_table(
    items: list[Item],
    labels: dict[str, Consolidated],
    machine: dict[str, tuple[str, float]],
) -> Any:
    """One row per labelled item: its original fields, then label, confidence, who labelled it
    (`human` or `machine`) and how many people answered."""
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for item in items:
        found = labels.get(item.item_id)
        if item.item_id in machine:
            label, confidence = machine[item.item_id]
            labeled_by, count = "machine", 0
        elif found is not None:
            label, confidence = found.label, found.confidence
            labeled_by, count = "human", found.annotator_count
        else:
            continue
        fields = {k: v for k, v in item.fields.items() if k not in OUTPUT_COLUMNS}
        rows.append(
            {
                **fields,
                "item_id": item.item_id,
                "label": label,
                "confidence": float(confidence),
                "labeled_by": labeled_by,
                "annotator_count": int(count),
            }
        )
    if not rows:
        return None
    return pa.Table.from_pylist(rows)


def write_labels(store: ObjectStore, job_name: str, export_number: int, table: Any) -> str:
    """Store the table as one Parquet file; the prefix to register."""
    import pyarrow.parquet as pq

    prefix = f"{OUTPUT_PREFIX}/{job_name}/export-{export_number:04d}/"
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    store.put_bytes(
        prefix + "part-00000.parquet", buffer.getvalue(), content_type="application/octet-stream"
    )
    return prefix
