"""Who may name what in the object store: user namespaces, private prefixes, one check.

The store is split into:
- user namespaces (`USER_NAMESPACES`): data, code, uploads and outputs people put there or ask
  the platform to write; every location a user supplies must lie inside one of them;
- private prefixes: `<service>/` for each service, `platform/` (keys, audit, pools) and `_bus/`
  (processed-event ledgers) for the kernel;
- published namespaces, written by one service and read by others through a declared contract:
  `models/` (trainer: `cairn.artifacts`), `datasets/` (ingest: `cairn.datasets`) and `capture/`
  (gateway: `cairn.contracts.state`).

`confine` is the one check every service calls on a user-supplied location; anything outside the
user namespaces is an `InvalidInput` (400) naming the field.
"""

from __future__ import annotations

import posixpath
from typing import Final

from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

USER_NAMESPACES: Final[tuple[str, ...]] = ("data/", "code/", "uploads/", "outputs/")
KERNEL_PREFIXES: Final[tuple[str, ...]] = ("platform/", "_bus/")
PUBLISHED_NAMESPACES: Final[dict[str, str]] = {
    "models/": "trainer",
    "datasets/": "ingest",
    "capture/": "gateway",
}
DATASET_SCHEME: Final = "dataset://"


def confine(location: str, *, field: str, store: ObjectStore | None = None) -> str:
    """The store key a user-supplied location names, if it lies in a user namespace.

    Args:
        location: a bare key (`data/train.csv`) or a URI into this platform's store
            (`s3://bucket/data/...`, `file:///.../store/data/...`).
        field: the request field it came from, named in the error.
        store: the platform's store, to accept its own URIs; None accepts bare keys only.

    Raises:
        InvalidInput: another store, a path that escapes, or a key outside the user namespaces.
    """
    key = _store_key(location, field, store)
    normalised = posixpath.normpath(key) if key else ""
    if (
        not key
        or normalised.startswith(("/", ".."))
        or normalised != key.rstrip("/")
        or "\\" in key
    ):
        raise InvalidInput(f"{field}: {location!r} is not a valid store location", field=field)
    if not (normalised + "/").startswith(USER_NAMESPACES):
        raise InvalidInput(
            f"{field}: {location!r} is outside the user namespaces "
            f"({', '.join(USER_NAMESPACES)}); platform and service data cannot be named",
            field=field,
            allowed=list(USER_NAMESPACES),
        )
    return key


def confine_channel(location: str, *, field: str, store: ObjectStore | None = None) -> str:
    """Like `confine`, but a `dataset://name@version` reference passes through unchanged."""
    if location.startswith(DATASET_SCHEME):
        reference = location[len(DATASET_SCHEME) :]
        if not reference or "/" in reference or ".." in reference:
            raise InvalidInput(
                f"{field}: {location!r} is not dataset://name[@version]", field=field
            )
        return location
    return confine(location, field=field, store=store)


def _store_key(location: str, field: str, store: ObjectStore | None) -> str:
    location = location.strip()
    if "://" not in location:
        return location
    if store is not None:
        root = store.url.rstrip("/") + "/"
        if location.startswith(root):
            return location[len(root) :]
    raise InvalidInput(f"{field}: {location!r} is not in this platform's object store", field=field)
