"""A real Docker engine for tests, and a small SageMaker-contract image built on it offline.

Fixtures: `docker_engine` (session) is the engine at DOCKER_HOST when that is set, else a
`dockerd` this fixture starts as root in a temp dir with its own socket, data root and bridge
(so it never touches another engine on the machine), torn down at the end; it skips with the
reason when neither can be had. `model_image` (session) is an image built from this machine's
own Python (no registry is reachable, so nothing is pulled): `docker import` of a root filesystem
holding the interpreter, its libraries and stdlib, and `ENTRYPOINT.py` below, which implements
SageMaker's two container contracts:

  serve   GET /ping, POST /invocations on 8080: a JSON list x answers {"predictions": [f*x+1]}
          with f read from /opt/ml/model/factor.txt (proof the model's files are there); the
          bodies "raise" (500), "refuse" (400), "hang", "exit" (code 3) and "env" (the names of
          its environment variables) drive the failure tests; with SERVE_EXIT set it exits
          (code 1) before serving
  train   reads /opt/ml/input/config/hyperparameters.json, writes factor.txt (the `factor`
          hyperparameter) and the first file of the `train` channel's line count to
          /opt/ml/model, exits 0; `--fail yes` writes /opt/ml/output/failure and exits 2

Run by hand: `python -m tests.support.docker_engine` starts an engine, builds the image, prints
both and waits for Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IMAGE = "cairn-test-sagemaker:1"
_LIBS = ("libm.so.6", "libz.so.1", "libexpat.so.1", "libc.so.6", "ld-linux-x86-64.so.2")

ENTRYPOINT = r"""
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ML = "/opt/ml"


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            self.answer(200, b"{}")
        else:
            self.answer(404, b"no such path")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/invocations":
            return self.answer(404, b"no such path")
        if self.headers.get("Content-Type") != "application/json":
            return self.answer(415, b"this model reads application/json only")
        data = json.loads(body)
        if data == "raise":
            return self.answer(500, b"ValueError: the model refuses this input", "text/plain")
        if data == "refuse":
            return self.answer(400, b"a 4xx of the model's own", "text/plain")
        if data == "hang":
            time.sleep(3600)
        if data == "exit":
            os._exit(3)
        if data == "env":
            return self.answer(200, json.dumps(sorted(os.environ)).encode())
        with open(os.path.join(ML, "model", "factor.txt")) as handle:
            factor = float(handle.read())
        out = {"predictions": [factor * x + 1 for x in data], "accept": self.headers["Accept"]}
        self.answer(200, json.dumps(out).encode())

    def log_message(self, *args):
        pass


def train(args):
    with open(os.path.join(ML, "input", "config", "hyperparameters.json")) as handle:
        hps = json.load(handle)
    print("training with", json.dumps(hps, sort_keys=True), "args", args, flush=True)
    if hps.get("fail") == "yes":
        with open(os.path.join(ML, "output", "failure"), "w") as handle:
            handle.write("the image was told to fail")
        sys.exit(2)
    channel = os.path.join(ML, "input", "data", "train")
    names = os.listdir(channel) if os.path.isdir(channel) else []
    rows = sum(len(open(os.path.join(channel, name), "rb").read().splitlines()) for name in names)
    with open(os.path.join(ML, "model", "factor.txt"), "w") as handle:
        handle.write(str(hps.get("factor", "1")))
    with open(os.path.join(ML, "model", "rows.txt"), "w") as handle:
        handle.write(str(rows))
    print(f"loss: {1.0 / (rows + 1):.4f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        if os.environ.get("SERVE_EXIT"):
            sys.exit(f"told to exit before serving ({os.environ['SERVE_EXIT']})")
        ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    elif sys.argv[1:2] == ["train"]:
        train(sys.argv[2:])
    else:
        sys.exit(f"usage: serve | train ARGS (got {sys.argv[1:]})")
"""


@dataclass(frozen=True)
class DockerEngine:
    """A running engine: `url` for DOCKER_HOST / the gateway's setting, `client` to inspect it."""

    url: str
    client: Any


def _client(url: str) -> Any:
    import docker

    client = docker.DockerClient(base_url=url, timeout=60)
    client.ping()
    return client


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(Exception):
            return _client(url)
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dockerd did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _add_bridge(name: str) -> bool:
    """A bridge of the engine's own (iproute2); False where it cannot be made."""
    if shutil.which("ip") is None:
        return False
    subnet = f"198.18.{os.getpid() % 250}.1/24"
    steps = (
        ["link", "add", name, "type", "bridge"],
        ["addr", "add", subnet, "dev", name],
        ["link", "set", name, "up"],
    )
    for step in steps:
        if subprocess.run(["ip", *step], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "delete", name], capture_output=True)
            return False
    return True


@contextlib.contextmanager
def own_engine() -> Iterator[DockerEngine]:
    """A `dockerd` of its own (root): temp data root, socket and bridge; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cairn-dockerd-"))
    bridge = f"cairn{os.getpid() % 100000}"
    args = [
        "dockerd",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "docker.pid"),
        "-H",
        f"unix://{root / 'docker.sock'}",
    ]
    own_bridge = _add_bridge(bridge)
    if own_bridge:  # not docker0: another engine on this machine may own that one
        args += ["--bridge", bridge]
    log = root / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"unix://{root / 'docker.sock'}"
        yield DockerEngine(url, _wait_for(url, process, log))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if own_bridge:
            subprocess.run(["ip", "link", "delete", bridge], check=False)
        subprocess.run(["umount", "-R", str(root / "data")], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _why_no_engine() -> str | None:
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the `docker` package is not installed (extra `docker`)"
    if os.environ.get("DOCKER_HOST"):
        return None
    if os.geteuid() != 0:
        return "no DOCKER_HOST, and starting dockerd needs root"
    if shutil.which("dockerd") is None:
        return "no DOCKER_HOST, and no dockerd on PATH (Debian: docker.io)"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """The engine at DOCKER_HOST, else a dockerd of the session's own."""
    reason = _why_no_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason}")
    url = os.environ.get("DOCKER_HOST")
    with contextlib.ExitStack() as stack:
        try:
            engine = DockerEngine(url, _client(url)) if url else stack.enter_context(own_engine())
        except Exception as error:  # nothing at DOCKER_HOST; dockerd without its privileges
            pytest.skip(f"no Docker engine ({url or 'dockerd'}): {error}")
        yield engine


def _python() -> tuple[Path, Path]:
    """The machine's Debian Python (its stdlib lives in /usr/lib, not in a venv)."""
    for python in sorted(Path("/usr/bin").glob("python3.[0-9]*")):
        if python.name.replace("python", "").replace(".", "").isdigit():
            stdlib = Path("/usr/lib") / python.name
            if stdlib.is_dir():
                return python, stdlib
    raise FileNotFoundError("no /usr/bin/python3.X with its /usr/lib/python3.X")


def image_archive() -> bytes:
    """A root filesystem holding Python and ENTRYPOINT.py, as the tar `docker import` reads."""
    python, stdlib = _python()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
        archive.add(python.resolve(), arcname=f"usr/bin/{python.name}")
        archive.add(python.resolve(), arcname="usr/bin/python3")
        for name in _LIBS:
            archive.add(Path("/usr/lib/x86_64-linux-gnu", name).resolve(), f"usr/lib/{name}")
            archive.add(
                Path("/usr/lib/x86_64-linux-gnu", name).resolve(),
                f"usr/lib/x86_64-linux-gnu/{name}",
            )
        loader = Path("/usr/lib64/ld-linux-x86-64.so.2")
        archive.add(loader.resolve(), arcname="usr/lib64/ld-linux-x86-64.so.2")

        def lean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            parts = Path(info.name).parts
            if "__pycache__" in parts or "test" in parts[3:4] or "config-3" in info.name:
                return None
            return info

        archive.add(stdlib, arcname=f"usr/lib/{stdlib.name}", filter=lean)
        entry = ENTRYPOINT.encode()
        info = tarfile.TarInfo("ENTRYPOINT.py")
        info.size, info.mode = len(entry), 0o755
        archive.addfile(info, io.BytesIO(entry))
        for empty in ("tmp", "opt", "opt/ml", "proc", "sys", "dev", "etc"):
            folder = tarfile.TarInfo(empty)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o1777 if empty == "tmp" else 0o755
            archive.addfile(folder)
    return buffer.getvalue()


def build_image(engine: DockerEngine, tag: str = IMAGE) -> str:
    """`docker import` of `image_archive()` with ENTRYPOINT python3 /ENTRYPOINT.py."""
    engine.client.api.import_image_from_data(
        image_archive(),
        repository=tag.split(":")[0],
        tag=tag.split(":")[1],
        changes=['ENTRYPOINT ["/usr/bin/python3", "-u", "/ENTRYPOINT.py"]'],
    )
    return tag


@pytest.fixture(scope="session")
def model_image(docker_engine: DockerEngine) -> str:
    """The test image's tag, built once per session."""
    try:
        tag = build_image(docker_engine)
    except FileNotFoundError as error:
        pytest.skip(f"cannot build the test image: {error}")
    try:  # an engine that answers may still be unable to run anything (storage, cgroups)
        docker_engine.client.containers.run(
            tag, entrypoint=["/usr/bin/python3", "-c", "pass"], remove=True, network_mode="none"
        )
    except Exception as error:
        pytest.skip(f"the Docker engine cannot run a container here: {error}")
    return tag


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` tears the engine down too
    with own_engine() as engine:
        print("DOCKER_HOST=" + engine.url, "image", build_image(engine), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    sys.exit(0)
