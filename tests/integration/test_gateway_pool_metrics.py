"""A variant of two instances is two gateway processes on one port, and `GET /metrics` counts the
whole pool's requests whichever process the kernel hands the connection to."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from cairn.settings import CairnSettings
from cairn.store import open_store
from prometheus_client.mmap_dict import MmapedDict
from pydantic import SecretStr

from tests.support.auth import PLATFORM_KEY, scoped_headers
from tests.support.endpoints import store_endpoint
from tests.support.service_process import ServiceProcess
from tests.unit.test_gateway_payloads import ROWS, make_package

pytestmark = pytest.mark.integration

ENDPOINT = "pool"
REQUESTS = 40
HANG_GUARD_S = 90.0
COUNTED = re.compile(r'^cairn_gateway_invocations_total\{[^}]*endpoint="pool"[^}]*\} (\S+)$', re.M)


def deploy_two_instances(settings: CairnSettings) -> None:
    store = open_store(settings=settings)
    store_endpoint(store, ENDPOINT, make_package(store, "models/pool/"), instance_count=2)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def metrics_folder(pid: int) -> Path:
    """The pool's metrics folder: in the environment the primary gave its second process."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("the gateway runs without a metrics folder")


def served_by_process(folder: Path) -> dict[int, float]:
    """Invocations each process counted, read from its own file in the folder."""
    served: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[0] == "cairn_gateway_invocations":
                served[pid] = served.get(pid, 0.0) + value
    return served


def counted(metrics: str) -> float:
    return sum(float(value) for value in COUNTED.findall(metrics))


def test_every_process_of_the_pool_answers_metrics_for_the_whole_pool(
    kafka_settings: CairnSettings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(
        update={"platform_key": SecretStr(PLATFORM_KEY), "store_url": f"file://{tmp_path}/store"}
    )
    deploy_two_instances(settings)
    headers = scoped_headers(open_store(settings=settings), settings, ["invoke", "read"])
    gateway = ServiceProcess(
        "gateway", settings, tmp_path / "gateway.log", hang_guard_s=HANG_GUARD_S
    )
    gateway.start()
    try:
        assert gateway.process is not None
        deadline = time.monotonic() + HANG_GUARD_S
        while not children_of(gateway.process.pid):  # the primary starts the second instance
            assert time.monotonic() < deadline, "the second gateway process never started"
            time.sleep(0.1)
        body = "\n".join(",".join(str(cell) for cell in row) for row in ROWS)
        folder = metrics_folder(children_of(gateway.process.pid)[0])
        sent = 0
        # A new connection each: the kernel spreads them over the processes listening, and the
        # second one listens once it has loaded the endpoint; until both have served some.
        while sent < REQUESTS or len(served_by_process(folder)) < 2:
            assert time.monotonic() < deadline, (
                f"one process served all: {served_by_process(folder)}"
            )
            with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
                answer = http.post(
                    f"/endpoints/{ENDPOINT}/invocations",
                    content=body,
                    headers={"Content-Type": "text/csv"},
                )
                assert answer.status_code == 200, answer.text
            sent += 1
        served = served_by_process(folder)
        readings = []
        for _ in range(10):  # whichever process answers, the count is the pool's
            with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
                readings.append(counted(http.get("/metrics").text))
    finally:
        gateway.stop()

    assert len(served) == 2 and sum(served.values()) == sent, served
    assert readings == [sent] * len(readings)
