"""Every location a training request names, confined to the user namespaces by the kernel.

Channels may read any user namespace or a registered dataset; the entry point is code the trainer
runs, so it must be a store key under `code/` or `data/` (never another service's object); a
model package the user places goes under `outputs/` (the default stays the trainer's `models/`).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from cairn.auth.principal import Principal
from cairn.contracts.events import TrainingJobRequested
from cairn.errors import Forbidden, InvalidInput
from cairn.namespaces import confine, confine_channel
from cairn.store.base import ObjectStore

CODE_NAMESPACES = ("code/", "data/")
OUTPUT_NAMESPACE = "outputs/"


def confined_request(request: TrainingJobRequested, store: ObjectStore) -> TrainingJobRequested:
    """The request with its locations checked and normalised to store keys.

    Raises:
        InvalidInput: a location outside what its field may name; the message names the field.
    """
    channels = [
        channel.model_copy(
            update={
                "uri": confine_channel(
                    channel.uri, field=f"input_channels[{index}].uri", store=store
                )
            }
        )
        for index, channel in enumerate(request.input_channels)
    ]
    return request.model_copy(
        update={
            "input_channels": channels,
            "entry_point": _entry_point(request.entry_point, store),
            "output_uri": _output_uri(request.output_uri, store),
        }
    )


def _entry_point(entry_point: str | None, store: ObjectStore) -> str | None:
    """`code/train.py`, or `code/src.tar.gz#pkg/train.py` (a script inside the archive)."""
    if entry_point is None:
        return None
    location, hash_, script = entry_point.partition("#")
    key = _within(
        confine(location, field="entry_point", store=store), CODE_NAMESPACES, "entry_point"
    )
    inner = PurePosixPath(script)
    if hash_ and (not script or inner.is_absolute() or ".." in inner.parts):
        raise InvalidInput(
            f"entry_point: {script!r} is not a path inside the archive", field="entry_point"
        )
    return f"{key}#{script}" if hash_ else key


def _output_uri(output_uri: str | None, store: ObjectStore) -> str | None:
    if output_uri is None:
        return None
    key = confine(output_uri, field="output_uri", store=store)
    return _within(key, (OUTPUT_NAMESPACE,), "output_uri")


def _within(key: str, namespaces: tuple[str, ...], field: str) -> str:
    if not (key.rstrip("/") + "/").startswith(namespaces):
        raise InvalidInput(
            f"{field}: {key!r} must lie under {' or '.join(namespaces)}",
            field=field,
            allowed=list(namespaces),
        )
    return key


class ApprovalNotAllowed(Forbidden):
    """Registering a job's model as Approved is an approval: it needs the `approve` scope."""


def approval_allowed(request: TrainingJobRequested, principal: Principal) -> None:
    """Refuse `registration.approval_status: Approved` from a caller who may not approve."""
    registration = request.registration
    if registration is None or registration.approval_status != "Approved":
        return
    if principal.kind == "service" or principal.allows("approve"):
        return
    raise ApprovalNotAllowed(
        f"registration.approval_status Approved needs the approve scope; {principal.name} lacks it",
        field="registration.approval_status",
    )
