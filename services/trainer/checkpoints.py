"""Checkpoints in the store (SageMaker's CheckpointConfig): save every K rounds, resume later.

XGBoost boosters are saved as `xgboost-checkpoint.<rounds>.ubj` under the job's prefix; the two
newest are kept, so a save cut short by a kill leaves the previous one readable. Script jobs get a
local directory synced to and from the same prefix (SageMaker's `/opt/ml/checkpoints`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xgboost
from cairn.errors import ObjectNotFound
from cairn.store.base import ObjectStore

log = logging.getLogger(__name__)

_BOOSTER = re.compile(r"xgboost-checkpoint\.(\d{6,})\.ubj$")
KEEP = 2


class Checkpoints:
    """One job's checkpoints under a store prefix."""

    def __init__(self, store: ObjectStore, prefix: str, interval_rounds: int) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.interval_rounds = interval_rounds

    def _booster_key(self, rounds: int) -> str:
        return f"{self.prefix}/xgboost-checkpoint.{rounds:06d}.ubj"

    def _boosters(self) -> list[tuple[int, str]]:
        found = []
        for info in self.store.list(self.prefix + "/", recursive=False):
            match = _BOOSTER.search(info.key)
            if match is not None:
                found.append((int(match.group(1)), info.key))
        return sorted(found)

    def latest_booster(self) -> tuple[int, bytes] | None:
        """The newest readable booster checkpoint and its round count, or None."""
        for rounds, key in reversed(self._boosters()):
            try:
                return rounds, self.store.get_bytes(key)
            except ObjectNotFound:  # pruned by a racing save: take the next older one
                continue
        return None

    def save_booster(self, rounds: int, raw: bytes) -> None:
        """Write the new checkpoint first, then prune all but the newest `KEEP`."""
        self.store.put_bytes(self._booster_key(rounds), raw)
        for _, key in self._boosters()[:-KEEP]:
            self.store.delete(key)

    def download(self, directory: Path) -> int:
        """Script mode: copy every checkpoint file into `directory`; returns how many."""
        directory.mkdir(parents=True, exist_ok=True)
        count = 0
        for info in self.store.list(self.prefix + "/"):
            relative = info.key[len(self.prefix) + 1 :]
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self.store.get_file(info.key, target)
            count += 1
        return count


class DirectorySync:
    """Script mode: upload files of a local checkpoint dir that changed since the last pass."""

    def __init__(self, checkpoints: Checkpoints, directory: Path, every_s: float) -> None:
        self.checkpoints = checkpoints
        self.directory = directory
        self.every_s = every_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="checkpoint-sync")

    def __enter__(self) -> DirectorySync:
        self._seen = {path: mark for path, mark in self._marks().items()}  # what was downloaded
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.upload()

    def _marks(self) -> dict[str, tuple[int, int]]:
        marks = {}
        for path in self.directory.rglob("*"):
            if path.is_file():
                stat = path.stat()
                marks[str(path.relative_to(self.directory))] = (stat.st_mtime_ns, stat.st_size)
        return marks

    def upload(self) -> int:
        uploaded = 0
        for relative, mark in self._marks().items():
            if self._seen.get(relative) == mark:
                continue
            key = f"{self.checkpoints.prefix}/{relative}"
            self.checkpoints.store.put_file(key, self.directory / relative)
            self._seen[relative] = mark
            uploaded += 1
        return uploaded

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.upload()
            except Exception as error:  # the next pass (or the final one) tries again
                log.warning("checkpoint upload failed: %r", error)


class CheckpointCallback(xgboost.callback.TrainingCallback):
    """Hands the booster to `save` every `interval` rounds (counting rounds already resumed)."""

    def __init__(self, save: Callable[[int, bytes], None], interval: int, start: int) -> None:
        super().__init__()
        self.save, self.interval, self.start = save, interval, start

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        done = self.start + epoch + 1
        if done % self.interval == 0:
            self.save(done, bytes(model.save_raw("ubj")))
        return False
