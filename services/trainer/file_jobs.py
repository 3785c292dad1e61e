"""Jobs of the built-ins that read their channels' files (images, token text, JSON Lines, none).

The channel's content type does not matter here: the algorithm knows SageMaker's formats for
itself. What every job still gets: lineage (sha256 per file), a manifest and a safe package.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from cairn.artifacts import ModelManifest, Signature, write_model_package
from cairn.contracts.events import TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.trainer.algorithms import RuntimeExceeded, TrainingContext, TrainingStopped
from services.trainer.algorithms.base import ensure_not_stopped
from services.trainer.algorithms.deep_inputs import FileAlgorithm, RawChannel
from services.trainer.channels import ChannelFiles, store_key_of
from services.trainer.domain import JobFailure, JobResult

MAX_CHANNEL_FILES = 100_000
MAX_CHANNEL_BYTES = 2 << 30


def read_raw_channel(store: ObjectStore, name: str, uri: str) -> tuple[RawChannel, ChannelFiles]:
    """Every file under the channel's key or prefix (hidden `.`/`_` names skipped)."""
    key = store_key_of(store, uri)
    if store.exists(key):
        keys = [key]
        root = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    else:
        root = key + "/"
        keys = [
            info.key
            for info in store.list(root)
            if not any(part.startswith((".", "_")) for part in info.key[len(root) :].split("/"))
        ]
    if not keys:
        raise InvalidInput(f"channel {name!r}: no files at {uri!r}")
    if len(keys) > MAX_CHANNEL_FILES:
        raise InvalidInput(f"channel {name!r} holds {len(keys)} files; at most {MAX_CHANNEL_FILES}")
    channel = RawChannel(name)
    files = ChannelFiles(name, uri, "application/octet-stream", keys)
    total = 0
    for each in keys:
        data = store.get_bytes(each)
        total += len(data)
        if total > MAX_CHANNEL_BYTES:
            raise InvalidInput(f"channel {name!r} holds more than {MAX_CHANNEL_BYTES} bytes")
        channel.files[each[len(root) :]] = data
        files.checksums[each] = hashlib.sha256(data).hexdigest()
    return channel, files


def run_file_job(
    store: ObjectStore,
    request: TrainingJobRequested,
    algorithm: FileAlgorithm[Any],
    hyperparameters: Any,
    package_prefix: str,
    ctx: TrainingContext,
) -> JobResult:
    """Read the named channels, train, write the package; errors become the job's failure."""
    from services.trainer.execution import lineage

    unknown = sorted({c.name for c in request.input_channels} - set(algorithm.channels))
    if unknown:
        wanted = list(algorithm.channels) or "no channels"
        raise InvalidInput(f"{algorithm.name} reads {wanted}; unexpected channel(s) {unknown}")
    channels: dict[str, RawChannel] = {}
    files: list[ChannelFiles] = []
    for spec in request.input_channels:
        channel, listed = read_raw_channel(store, spec.name, spec.uri)
        ctx.log(f"channel {spec.name}: {len(channel.files)} file(s), {listed.sha256}")
        channels[spec.name], files = channel, [*files, listed]
    started = time.monotonic()
    try:
        trained = algorithm.train_files(channels, hyperparameters, ctx)
    except (InvalidInput, RuntimeExceeded, TrainingStopped):
        raise
    except Exception as error:  # the algorithm's own error: the job fails, the worker lives
        raise JobFailure("algorithm_error", f"{type(error).__name__}: {error}") from error
    training_time_s = time.monotonic() - started
    ensure_not_stopped(ctx)
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm=request.algorithm,
        task=trained.task,
        signature=Signature(inputs=[], outputs=trained.outputs),
        class_labels=trained.details.get("class_labels"),
        metrics=trained.metrics,
        lineage=lineage(request, files),
        device=trained.device,
        details=trained.details,
    )
    uri = write_model_package(store, package_prefix, manifest, trained.files)
    ctx.log(f"model package written to {uri}: {trained.metrics}")
    return JobResult(uri, trained.metrics, trained.device, training_time_s, trained.details)
