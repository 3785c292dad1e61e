"""Read training channels from the object store into DataFrames, with a sha256 per input file.

CSV, JSON Lines and Parquet are tables; `text/plain` (BlazingText's channel) is one `text`
column, a row per non-empty line.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from cairn.contracts.events import InputChannel
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore, check_key

DATASET_SCHEME = "dataset://"
_SUFFIXES = {
    "text/csv": (".csv", ".csv.gz"),
    "application/x-parquet": (".parquet", ".pq"),
    "application/jsonlines": (".jsonl", ".json", ".jsonl.gz"),
    "text/plain": (".txt", ".txt.gz"),
}
TEXT_COLUMN = "text"


@dataclass
class ChannelFiles:
    """The store keys a channel resolved to, their sha256 and one digest over all of them."""

    name: str
    uri: str
    content_type: str
    keys: list[str]
    checksums: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for key in sorted(self.checksums):
            digest.update(f"{key}\t{self.checksums[key]}\n".encode())
        return digest.hexdigest()


def store_key_of(store: ObjectStore, uri: str) -> str:
    """The store key or prefix a channel URI names (store URI, bare key or `dataset://`)."""
    if uri.startswith(DATASET_SCHEME):
        try:
            from cairn.datasets import resolve_dataset_uri  # written with the ingest service
        except ImportError as error:
            raise InvalidInput(f"{uri}: dataset URIs need the ingest service's datasets") from error
        return store_key_of(store, resolve_dataset_uri(store, uri).prefix)
    root = store.url.rstrip("/") + "/"
    key = uri[len(root) :] if uri.startswith(root) else uri
    if "://" in key:
        raise InvalidInput(f"channel uri {uri!r} is not in this platform's object store ({root})")
    key = key.strip("/")
    check_key(key)
    return key


def resolve_channel(store: ObjectStore, channel: InputChannel) -> ChannelFiles:
    """The data files of a channel: the key itself, or every matching file under the prefix."""
    key = store_key_of(store, channel.uri)
    content_type = channel.content_type
    if channel.uri.startswith(DATASET_SCHEME):
        content_type = "application/x-parquet"  # registered datasets are stored as Parquet
    if store.exists(key):
        keys = [key]
    else:
        suffixes = _SUFFIXES[content_type]
        keys = [
            info.key
            for info in store.list(key + "/")
            if info.key.endswith(suffixes) and not _hidden(info.key)
        ]
    if not keys:
        raise InvalidInput(f"channel {channel.name!r}: no {content_type} files at {channel.uri!r}")
    return ChannelFiles(channel.name, channel.uri, content_type, keys)


def read_channel(store: ObjectStore, files: ChannelFiles) -> pd.DataFrame:
    """All files of a channel concatenated into one DataFrame; fills in their checksums."""
    frames = []
    for key in files.keys:
        data = store.get_bytes(key)
        files.checksums[key] = hashlib.sha256(data).hexdigest()
        frames.append(_parse(key, data, files.content_type))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise InvalidInput(f"channel {files.name!r} holds no rows")
    return frame


def download_channel(store: ObjectStore, files: ChannelFiles, directory: Path) -> None:
    """Copy a channel's files into `directory` (script mode), recording their checksums."""
    directory.mkdir(parents=True, exist_ok=True)
    for key in files.keys:
        target = directory / key.rsplit("/", 1)[-1]
        store.get_file(key, target)
        files.checksums[key] = hashlib.sha256(target.read_bytes()).hexdigest()


def _parse(key: str, data: bytes, content_type: str) -> pd.DataFrame:
    try:
        if content_type == "application/x-parquet":
            return pq.read_table(io.BytesIO(data)).to_pandas()
        if content_type == "application/jsonlines":
            return pd.read_json(io.BytesIO(data), lines=True, compression=_compression(key))
        if content_type == "text/plain":  # BlazingText's channel: one sentence a line
            raw = gzip.decompress(data) if key.endswith(".gz") else data
            lines = [line.strip() for line in raw.decode().splitlines() if line.strip()]
            return pd.DataFrame({TEXT_COLUMN: pd.Series(lines, dtype=object)})
        if key.endswith(".gz"):
            return pd.read_csv(io.BytesIO(data), compression="gzip")
        return pa_csv.read_csv(io.BytesIO(data)).to_pandas()
    except (ValueError, OSError, json.JSONDecodeError, EOFError) as error:
        raise InvalidInput(f"cannot read {key} as {content_type}: {error}") from error


def _compression(key: str) -> str | None:
    return "gzip" if key.endswith(".gz") else None


def _hidden(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith((".", "_"))
