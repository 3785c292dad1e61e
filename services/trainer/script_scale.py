"""Script mode beyond one process: SageMaker's multi-host environment, Pipe FIFOs, checkpoints.

- Hosts: `instance_count` copies of the script run side by side, each with its own
  `SM_CURRENT_HOST`, the shared `SM_HOSTS` and its own `resourceconfig.json`. Host names are
  loopback addresses (`127.0.0.1`, `127.0.0.2`, ...), which resolve and accept connections, so a
  script that binds to its host and dials `SM_HOSTS[0]` finds its peers. The first host's model
  dir is the job's model; the others' are discarded, as most SageMaker scripts expect.
- Pipe: each channel is a named pipe `input/data/<channel>_0` fed from the store in chunks.
- Checkpoints: `SM_CHECKPOINT_DIR` (SageMaker's `/opt/ml/checkpoints`) starts with the store's
  checkpoints and is uploaded every few seconds and at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

from cairn.store.base import ObjectStore

from services.trainer.channels import ChannelFiles

log = logging.getLogger(__name__)


def host_names(instance_count: int) -> list[str]:
    return [f"127.0.0.{index + 1}" for index in range(instance_count)]


def host_config_dir(ml: Path, hosts: list[str], host: str) -> Path:
    """The host's `input/config`: the job's own for the first host, a copy for the others."""
    config = ml / "input" / "config"
    if host == hosts[0]:
        return config
    own = ml / "hosts" / host / "input" / "config"
    own.mkdir(parents=True, exist_ok=True)
    for name in ("hyperparameters.json", "inputdataconfig.json"):
        shutil.copy(config / name, own / name)
    return own


def host_env(ml: Path, hosts: list[str], host: str) -> dict[str, str]:
    """What differs per host: its name, its config dir and (after the first) its model dir."""
    config = host_config_dir(ml, hosts, host)
    resource = {"current_host": host, "hosts": hosts, "network_interface_name": "lo"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    env = {
        "SM_CURRENT_HOST": host,
        "SM_HOSTS": json.dumps(hosts),
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_RESOURCE_CONFIG": json.dumps(resource),
        "SM_NETWORK_INTERFACE_NAME": "lo",
    }
    if host != hosts[0]:
        model = ml / "hosts" / host / "model"
        model.mkdir(parents=True, exist_ok=True)
        env["SM_MODEL_DIR"] = str(model)
    return env


class PipeFeeder:
    """Streams one channel's objects into a named pipe the script reads (SageMaker's Pipe mode)."""

    def __init__(self, store: ObjectStore, files: ChannelFiles, fifo: Path, chunk: int) -> None:
        self.store, self.files, self.fifo, self.chunk = store, files, fifo, chunk
        os.mkfifo(fifo)
        for key in files.keys:  # replaced by the sha256 once the object is streamed whole
            files.checksums[key] = "etag:" + store.stat(key).etag
        self._thread = threading.Thread(target=self._feed, daemon=True, name=f"pipe-{fifo.name}")
        self._thread.start()

    def _feed(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY)  # waits for the script to open it
        except OSError:
            return
        try:
            for key in self.files.keys:
                digest = hashlib.sha256()
                for block in self.store.iter_chunks(key, self.chunk):
                    digest.update(block)
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                self.files.checksums[key] = digest.hexdigest()
        except OSError as error:  # the script closed its end early
            log.info("pipe %s closed by the reader: %r", self.fifo.name, error)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release a feeder still waiting for a reader that never came."""
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        self._thread.join(timeout=10)
