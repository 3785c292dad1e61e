"""`cairn edge agent`: keep one device running what its fleet's plan says, offline first.

Three loops share one `AgentFolder`:
- desired state: long-poll the edge service; a new signed directive is downloaded (resuming a
  partial file with HTTP Range), verified (signature, every sha256 and size, no older version
  unless the directive is a rollback), loaded, self-tested, then swapped in; a refusal is kept and
  reported, never retried for the same revision;
- heartbeats: package, health, p50/p99 latency, requests and errors, the last refusal;
- uploads: sampled requests, closed into batches and sent when the server answers.

Without the server the agent serves the last package it installed and retries with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from cairn_edge import AGENT_VERSION
from cairn_edge.models import load_package, self_test
from cairn_edge.package import (
    EDGE_MANIFEST_FILE,
    Directive,
    EdgeManifest,
    PackageRefused,
    SignedDirective,
    check_version,
    open_directive,
    open_manifest,
    verify_files,
)
from cairn_edge.serve import Runtime, Serving, start_server
from cairn_edge.store import AgentFolder, Refusal, write_atomically

log = logging.getLogger("cairn.edge.agent")


class Credential(BaseModel):
    """The file `cairn edge devices register --out FILE` writes (mode 0600)."""

    fleet_name: str
    device_name: str
    token: str
    public_key: str


@dataclass
class AgentOptions:
    server: str
    folder: Path
    port: int = 0
    capture_rate: float = 0.1
    heartbeat_s: float = 5.0
    upload_s: float = 10.0
    poll_wait_s: float = 20.0
    max_backoff_s: float = 30.0


class Agent:
    def __init__(self, credential: Credential, options: AgentOptions) -> None:
        self.credential = credential
        self.options = options
        self.folder = AgentFolder(options.folder)
        self.runtime = Runtime(self.folder, options.capture_rate)
        self.state = self.folder.load_state()
        self.stop = threading.Event()
        self._beat_now = threading.Event()
        self._http = httpx.Client(
            base_url=options.server.rstrip("/"),
            headers={"Authorization": f"Bearer {credential.token}"},
            timeout=httpx.Timeout(30.0, read=options.poll_wait_s + 15.0),
            trust_env=False,
        )
        self._raw = httpx.Client(timeout=60.0, trust_env=False)  # presigned URLs: no credential
        base = f"/fleets/{credential.fleet_name}/devices/{credential.device_name}"
        self._paths = {n: f"{base}/{n}" for n in ("desired", "heartbeat", "captures")}
        self.port = 0

    # Lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve the installed package, then follow the fleet until `stop` is set."""
        self.resume()
        server = start_server(self.runtime, self.options.port)
        self.port = server.server_address[1]
        info = {"port": self.port, "pid": os.getpid(), "device": self.credential.device_name}
        write_atomically(self.folder.root / "agent.json", json.dumps(info).encode())
        threads = [
            threading.Thread(target=self._heartbeats, name="edge-heartbeat", daemon=True),
            threading.Thread(target=self._uploads, name="edge-upload", daemon=True),
        ]
        for thread in threads:
            thread.start()
        backoff = 0.5
        try:
            while not self.stop.is_set():
                try:
                    self.poll_once()
                    backoff = 0.5
                except httpx.HTTPError as error:
                    log.info("edge service unreachable (%s); retrying in %.1fs", error, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, self.options.max_backoff_s)
        finally:
            server.shutdown()
            self._beat_now.set()

    def resume(self) -> None:
        """Serve what was running before a restart (verified again), if anything was."""
        name = self.state.running
        if name is None:
            return
        folder = self.folder.package_dir(name)
        try:
            manifest = EdgeManifest.model_validate_json((folder / EDGE_MANIFEST_FILE).read_bytes())
            verify_files(folder, manifest)
            model = load_package(folder, manifest)
        except (OSError, ValueError, PackageRefused) as error:
            log.error("the installed package %s cannot be served: %s", name, error)
            return
        self.runtime.swap(Serving(name, manifest.version, model))

    # Desired state ---------------------------------------------------------------------------

    def poll_once(self) -> None:
        response = self._http.get(
            self._paths["desired"],
            params={"known": self.state.revision, "wait_s": self.options.poll_wait_s},
        )
        if response.status_code == 204:
            return
        if response.status_code >= 500:
            response.raise_for_status()  # the server is down or restarting: back off and retry
        if response.status_code >= 400:
            log.warning("desired state refused: %s %s", response.status_code, response.text)
            self.stop.wait(self.options.max_backoff_s / 3)
            return
        body = response.json()
        signed = SignedDirective.model_validate(body["signed"])
        try:
            directive = open_directive(self.credential.public_key, signed)
        except PackageRefused as refused:
            self._refuse(None, self.state.revision, refused)
            return
        if directive.revision <= self.state.revision:
            return
        self.apply(directive, body.get("files") or {})

    def apply(self, directive: Directive, urls: dict[str, str]) -> None:
        """Install the directive's package, or keep the current one and record why not."""
        name = directive.package_name
        try:
            if name is None or name == self.state.running:
                self.state = self.state.model_copy(update={"revision": directive.revision})
            else:
                manifest = open_manifest(self.credential.public_key, directive)
                check_version(manifest, self.state.running_version, rollback=directive.rollback)
                folder = self._package_folder(manifest, urls)
                self._swap(directive, manifest, folder)
        except PackageRefused as refused:
            self._refuse(name, directive.revision, refused)
            return
        self.folder.save_state(self.state)
        self._beat_now.set()

    def _package_folder(self, manifest: EdgeManifest, urls: dict[str, str]) -> Path:
        installed = self.folder.package_dir(manifest.package_name)
        if installed.exists():
            with contextlib.suppress(PackageRefused):
                verify_files(installed, manifest)
                return installed
        staged = self.folder.download_dir(manifest.package_name)
        for name, entry in sorted(manifest.files.items()):
            if name not in urls:
                raise PackageRefused(f"the server offers no download of {name}", "missing_file")
            self._download(urls[name], staged / name, entry.size_bytes)
        try:
            verify_files(staged, manifest)
        except PackageRefused:
            shutil.rmtree(staged, ignore_errors=True)  # a fresh download next time, never a mix
            raise
        (staged / EDGE_MANIFEST_FILE).write_bytes(manifest.model_dump_json().encode())
        return self.folder.install(manifest.package_name, staged)

    def _download(self, url: str, target: Path, size: int) -> None:
        """Fetch one file into `<target>`, resuming `<target>.part` with a Range request."""
        if target.exists() and target.stat().st_size == size:
            return
        part = target.with_name(target.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            absolute = url.startswith(("http://", "https://"))
            client = self._raw if absolute else self._http
            headers = {"Range": f"bytes={have}-"} if have else {}
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code not in (200, 206):
                    raise httpx.HTTPStatusError(
                        f"download of {target.name}: {response.status_code}",
                        request=response.request,
                        response=response,
                    )
                mode = "ab" if response.status_code == 206 else "wb"
                with part.open(mode) as handle:
                    for chunk in response.iter_bytes():  # as it arrives: a stall keeps it
                        handle.write(chunk)
                        handle.flush()
        os.replace(part, target)

    def _swap(self, directive: Directive, manifest: EdgeManifest, folder: Path) -> None:
        """Load and self-test the new package; only then does it replace the one serving."""
        try:
            model = load_package(folder, manifest)
            self_test(folder, model, manifest.tolerance)
        except PackageRefused:
            if manifest.package_name != self.state.running:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as error:  # a library that will not load is a refusal, not a crash
            shutil.rmtree(folder, ignore_errors=True)
            raise PackageRefused(f"the package does not load: {error}", "load_failed") from None
        self.runtime.swap(Serving(manifest.package_name, manifest.version, model))
        previous = [self.state.running] if self.state.running else []
        keep = [manifest.package_name, *previous, *self.state.previous][:3]
        self.state = self.state.model_copy(
            update={
                "revision": directive.revision,
                "installed_revision": directive.revision,
                "running": manifest.package_name,
                "running_version": manifest.version,
                "previous": keep[1:],
                "refusal": None,
            }
        )
        self.folder.save_state(self.state)
        self.folder.prune(keep)

    def _refuse(self, package: str | None, revision: int, refused: PackageRefused) -> None:
        log.warning("refused %s (revision %s): %s", package, revision, refused.reason)
        refusal = Refusal(
            package_name=package, revision=revision, code=refused.code, reason=refused.reason
        )
        self.state = self.state.model_copy(update={"revision": revision, "refusal": refusal})
        self.folder.save_state(self.state)
        self._beat_now.set()

    # Heartbeats and uploads ------------------------------------------------------------------

    def heartbeat_body(self) -> dict[str, Any]:
        serving = self.runtime.serving
        refusal = self.state.refusal
        return {
            "agent_version": AGENT_VERSION,
            "revision": self.state.revision,
            "package_name": serving.package_name if serving else None,
            "health": "Healthy" if serving else "NoModel",
            "refusal": refusal.model_dump() if refusal else None,
            "captured_pending": len(self.folder.pending_batches()),
            **self.runtime.stats(),
        }

    def _heartbeats(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                response = self._http.post(self._paths["heartbeat"], json=self.heartbeat_body())
                if response.status_code >= 400:
                    log.warning("heartbeat refused: %s %s", response.status_code, response.text)
            self._beat_now.wait(self.options.heartbeat_s)
            self._beat_now.clear()

    def _uploads(self) -> None:
        while not self.stop.wait(self.options.upload_s):
            self.upload_pending()

    def upload_pending(self) -> int:
        """Send every closed batch; each is deleted only once the server stored it."""
        self.folder.close_batch()
        sent = 0
        for batch in self.folder.pending_batches():
            try:
                response = self._http.post(
                    self._paths["captures"],
                    params={"batch": batch.stem},
                    content=batch.read_bytes(),
                    headers={"Content-Type": "application/jsonlines"},
                )
            except httpx.HTTPError:
                return sent
            if response.status_code >= 400:
                log.warning("capture upload refused: %s", response.text)
                return sent
            batch.unlink()
            sent += 1
        return sent
