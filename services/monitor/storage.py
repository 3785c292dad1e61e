"""Reading stored data: the monitor's own documents, training tables, captured traffic."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timedelta
from typing import TypeVar

import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from cairn.contracts.state import CAPTURE_PREFIX, capture_variant_prefix
from cairn.documents import DocumentStore
from cairn.errors import CairnError, InvalidInput
from cairn.store.base import ObjectInfo, ObjectStore, check_key
from pydantic import BaseModel

from services.monitor.capture import CapturedRow, parse_capture

log = logging.getLogger("cairn.monitor.storage")

DocT = TypeVar("DocT", bound=BaseModel)

_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".jsonl", ".json")


def readable(documents: DocumentStore[DocT], prefix: str = "") -> list[DocT]:
    """The documents under `prefix` that validate; an unreadable one is logged and skipped."""
    found: list[DocT] = []
    for key in documents.keys(prefix):
        try:
            versioned = documents.get_or_none(key)
        except CairnError:
            log.warning("skipping unreadable document %s%s", documents.prefix, key, exc_info=True)
            continue
        if versioned is not None:
            found.append(versioned.doc)
    return found


def store_key(store: ObjectStore, uri: str) -> str:
    """The store key or prefix a URI names: a store URI, a bare key or `dataset://name@v`."""
    if uri.startswith("dataset://"):
        from cairn.datasets import resolve_dataset_uri

        uri = resolve_dataset_uri(store, uri).prefix
    root = store.url.rstrip("/") + "/"
    key = uri[len(root) :] if uri.startswith(root) else uri
    if "://" in key:
        raise InvalidInput(f"{uri!r} is not in this platform's object store ({root})")
    return check_key(key.strip("/"))


def read_table(store: ObjectStore, uri: str) -> pd.DataFrame:
    """All rows of a CSV / Parquet / JSON Lines file, or of every such file under a prefix."""
    key = store_key(store, uri)
    keys = [key] if store.exists(key) else []
    if not keys:
        keys = [
            info.key
            for info in store.list(key + "/")
            if info.key.endswith(_SUFFIXES) and "/." not in info.key and "/_" not in info.key
        ]
    if not keys:
        raise InvalidInput(f"no data files at {uri!r}")
    frames = [_read_file(key, store.get_bytes(key)) for key in keys]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_file(key: str, data: bytes) -> pd.DataFrame:
    if key.endswith((".parquet", ".pq")):
        return pq.read_table(io.BytesIO(data)).to_pandas()
    if key.endswith((".jsonl", ".json")):
        return pd.read_json(io.BytesIO(data), lines=True)
    options = pa_csv.ReadOptions()
    return pa_csv.read_csv(io.BytesIO(data), read_options=options).to_pandas()


def capture_files(
    store: ObjectStore,
    endpoint: str,
    variant: str | None,
    start: datetime | None,
    end: datetime,
) -> list[ObjectInfo]:
    """Capture files of an endpoint (one variant, or all) stored in `(start, end]`.

    Folders are named after the hour of a file's first record, which precedes its write by at
    most the gateway's flush interval, so only the hour folders from an hour before `start` on
    are listed.
    """
    variants = [variant] if variant else _children(store, f"{CAPTURE_PREFIX}{endpoint}/")
    found: list[ObjectInfo] = []
    for name in variants:
        root = capture_variant_prefix(endpoint, name)
        folders = [root] if start is None else _hour_folders(root, start - timedelta(hours=1), end)
        for folder in folders:
            for info in store.list(folder):
                modified = info.last_modified
                if not info.key.endswith(".jsonl") or modified is None:
                    continue
                if (start is None or modified > start) and modified <= end:
                    found.append(info)
    return found


def captured_rows(
    store: ObjectStore,
    endpoint: str,
    variant: str | None,
    start: datetime | None,
    end: datetime,
) -> list[CapturedRow]:
    """The parsed rows of every capture file `capture_files` finds, in key order."""
    files = capture_files(store, endpoint, variant, start, end)
    rows: list[CapturedRow] = []
    for info in sorted(files, key=lambda item: item.key):
        parsed, _ = parse_capture(store.get_bytes(info.key).decode().splitlines())
        rows.extend(parsed)
    return rows


def _children(store: ObjectStore, prefix: str) -> list[str]:
    return sorted({info.key[len(prefix) :].split("/", 1)[0] for info in store.list(prefix)})


def _hour_folders(root: str, start: datetime, end: datetime) -> list[str]:
    folders = []
    moment = start.replace(minute=0, second=0, microsecond=0)
    while moment <= end:
        folders.append(f"{root}{moment:%Y/%m/%d/%H}/")
        moment += timedelta(hours=1)
    return folders
