"""Input files of a job: listing a prefix or a dataset, and reading a shard's part of one.

A shard reads only its part of a file through the store's ranged reads (`open_ranged`): a text
shard its byte range plus the bytes that finish its last record (and the header line), a Parquet
shard the footer and its row groups. A gzip file cannot be read from the middle: the worker keeps
a local copy of it (`LocalCopies`), keyed by the object's ETag and evicted oldest first past a
byte budget. The loaded model is cached too, by package URI.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from cairn.artifacts import LoadedModel, load_model
from cairn.datasets import data_keys, resolve_dataset_uri
from cairn.errors import InvalidInput
from cairn.namespaces import DATASET_SCHEME
from cairn.store.base import ObjectStore

from services.batch.domain import InputFile

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def list_inputs(store: ObjectStore, location: str, output_prefix: str) -> list[InputFile]:
    """The objects a job reads, in key order; InvalidInput (400) when there are none."""
    if location.startswith(DATASET_SCHEME):
        version = resolve_dataset_uri(store, location).version
        keys = data_keys(version)
        sizes = {item.name: item.size for item in version.files}
        files = [
            InputFile(key=key, size=sizes[key.rsplit("/", 1)[-1]], relative=key.rsplit("/", 1)[-1])
            for key in keys
        ]
    else:
        files = _under_prefix(store, location, output_prefix)
    if not files:
        raise InvalidInput(
            f"transform_input.data_source: {location!r} holds no input objects",
            field="transform_input.data_source",
        )
    return files


def _under_prefix(store: ObjectStore, location: str, output_prefix: str) -> list[InputFile]:
    if not location.endswith("/") and store.exists(location):
        info = store.stat(location)
        return [InputFile(key=info.key, size=info.size, relative=location.rsplit("/", 1)[-1])]
    prefix = location.rstrip("/") + "/"
    skip = output_prefix.rstrip("/") + "/"
    return [
        InputFile(key=info.key, size=info.size, relative=info.key[len(prefix) :])
        for info in sorted(store.list(prefix), key=lambda info: info.key)
        if not info.key.startswith(skip) and not info.key.endswith("/")
    ]


RANGE_BUFFER_BYTES = 64 * 1024


class RangedObject(io.RawIOBase):
    """A read-only, seekable file whose reads are ranged reads of one object of known size."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"cannot seek to {base + offset} in {self.key}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self.size - self.position)
        if count <= 0:
            return 0
        data = self.store.get_range(self.key, self.position, self.position + count)
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def open_ranged(store: ObjectStore, key: str, size: int) -> io.BufferedReader:
    """The object as a buffered binary file that fetches only what is read (plus one buffer)."""
    return io.BufferedReader(RangedObject(store, key, size), RANGE_BUFFER_BYTES)


class LocalCopies:
    """Local copies of store objects, one download each, oldest evicted past `budget_bytes`."""

    def __init__(self, store: ObjectStore, folder: Path | None, budget_bytes: int) -> None:
        self.store = store
        self.folder = folder or Path(tempfile.mkdtemp(prefix="cairn-batch-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._files: OrderedDict[str, tuple[Path, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._names = itertools.count()

    def path(self, key: str) -> Path:
        """A local file with the object's current bytes."""
        with self._lock:
            info = self.store.stat(key)
            cache_key = f"{key}@{info.etag}"
            found = self._files.get(cache_key)
            if found is not None and found[0].exists():
                self._files.move_to_end(cache_key)
                return found[0]
            target = self.folder / f"{os.getpid()}-{next(self._names)}"
            partial = target.with_suffix(".part")
            self.store.get_file(key, partial)
            partial.replace(target)
            self._files[cache_key] = (target, info.size)
            self._evict()
            return target

    def _evict(self) -> None:
        used = sum(size for _, size in self._files.values())
        while used > self.budget_bytes and len(self._files) > 1:
            _, (path, size) = self._files.popitem(last=False)
            path.unlink(missing_ok=True)
            used -= size


class Models:
    """Loaded models by package URI: a worker loads each once."""

    def __init__(self, store: ObjectStore, threads: int) -> None:
        self.store = store
        self.threads = threads
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, uri: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(uri)
            if model is None:
                model = self._models[uri] = load_model(self.store, uri, nthread=self.threads)
            return model
