"""Data in, as a user does it: `cairn up` the ingest service and feature store, then the CLI only.

Datasets are uploaded, described and refused with `cairn datasets`; feature groups, records and
training sets go through `cairn features`; streaming records through `cairn events publish`. The
tests of the class run in order against one platform started once, and end with `cairn down`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cairn.datasets import resolve_dataset_uri
from cairn.settings import CairnSettings
from cairn.store import open_store

pytestmark = pytest.mark.e2e

CAIRN = str(Path(sys.executable).with_name("cairn"))
UPLOAD_ROWS = 60_000  # ~1.7 MB of CSV: the CLI streams it in several 1 MiB chunks
CITIES = ("paris", "oslo", "lima", "kyoto")
ENTITY_TIME = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def at(moment: datetime, **delta: float) -> str:
    return (moment + timedelta(**delta)).isoformat()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Platform:
    """One `cairn up --only ingest --only featurestore` and the CLI pointed at it."""

    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAIRN, *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def ok(self, *args: str) -> str:
        """stdout of a CLI call that must succeed."""
        result = self.cli(*args)
        assert result.returncode == 0, f"cairn {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def status(self) -> dict[str, Any]:
        """`cairn status --json` (it exits 1 while the platform is not running yet)."""
        return dict(json.loads(self.cli("status", "--json").stdout))

    def features_get(self, group: str, record_id: str) -> dict[str, Any] | None:
        result = self.cli("features", "get", group, record_id)
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None


def start(home: Path) -> Platform:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    # Wide enough that `describe` prints its table without wrapping cells.
    env.update(CAIRN_HOME=str(home), CAIRN_OTEL_EXPORTER="none", COLUMNS="250")
    log = home.parent / "up.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", "--only", "ingest", "--only", "featurestore", "--grace-period", "10"],
            env=env,
            cwd=home.parent,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Platform(home=home, env=env, process=process, log=log)


def all_healthy(platform: Platform) -> bool:
    if platform.process.poll() is not None:
        raise AssertionError(f"cairn up exited:\n{platform.log.read_text()}")
    state = platform.status()
    services = {s["name"]: s["status"] for s in state.get("services", [])}
    return bool(state.get("running")) and services == {
        "ingest": "healthy",
        "featurestore": "healthy",
    }


@pytest.fixture(scope="class")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = start(tmp_path_factory.mktemp("data-in") / "home")
    try:
        wait_for(lambda: all_healthy(running), 60, "ingest and featurestore to be healthy")
        yield running
    finally:
        if running.process.poll() is None:
            running.cli("down", "--timeout", "20")
            try:
                running.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                running.process.send_signal(signal.SIGKILL)
                running.process.wait()


def sales_csv(path: Path) -> Path:
    lines = ["id,city,amount"]
    for index in range(UPLOAD_ROWS):
        amount = "" if index % 10 == 0 else f"{index % 1000 / 10:.1f}"
        lines.append(f"{index},{CITIES[index % len(CITIES)]},{amount}")
    path.write_text("\n".join(lines) + "\n")
    return path


def profile_rows(describe_output: str) -> dict[str, list[str]]:
    """Cells of `cairn datasets describe`'s table, by column name."""
    rows: dict[str, list[str]] = {}
    for line in describe_output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 9 and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


class TestDataIn:
    def test_uploaded_csv_is_described_with_schema_and_profile(
        self, platform: Platform, tmp_path: Path
    ) -> None:
        csv = sales_csv(tmp_path / "sales.csv")

        first = platform.ok("datasets", "upload", str(csv), "--name", "sales")
        again = platform.ok("datasets", "upload", str(csv), "--name", "sales")
        described = platform.ok("datasets", "describe", "sales")

        assert first.startswith(f"dataset://sales@1 stored: {UPLOAD_ROWS} rows")
        assert again.startswith("dataset://sales@1 unchanged (identical content)")
        assert first.split("sha256 ")[1] == again.split("sha256 ")[1]
        assert f"{UPLOAD_ROWS} rows" in described
        profile = profile_rows(described)
        assert profile["id"][:2] == ["int", "yes"]
        assert profile["id"][3:5] == ["0", str(UPLOAD_ROWS - 1)]  # min, max
        assert profile["city"][0] == "string"
        assert profile["city"][7].startswith(f"kyoto ({UPLOAD_ROWS // 4}), lima")
        assert profile["amount"][0] == "float"
        assert profile["amount"][2] == "10.0%"  # every tenth amount is missing

    def test_file_breaking_the_declared_schema_is_rejected_and_nothing_is_kept(
        self, platform: Platform, tmp_path: Path
    ) -> None:
        schema = tmp_path / "schema.json"
        schema.write_text(
            json.dumps(
                [
                    {"name": "id", "dtype": "int", "nullable": False},
                    {"name": "amount", "dtype": "float", "nullable": False},
                ]
            )
        )
        bad = tmp_path / "bad.csv"
        bad.write_text("id,amount\n1,1.5\n2,2.5\n3,lots\n4,4.5\n")

        result = platform.cli(
            "datasets", "upload", str(bad), "--name", "strict", "--schema", str(schema)
        )

        assert result.returncode == 1
        assert "row 3, column 'amount': 'lots' is not float" in result.stderr
        missing = platform.cli("datasets", "describe", "strict")
        assert missing.returncode == 1 and "no dataset named 'strict'" in missing.stderr

    def test_feature_group_keeps_the_latest_record_by_event_time(self, platform: Platform) -> None:
        platform.ok(
            "features", "groups", "create", "customers",
            "--record-id", "customer_id", "--event-time", "event_time",
            "-f", "customer_id:String", "-f", "event_time:String", "-f", "spend:Fractional",
        )  # fmt: skip
        puts = [  # (event time, spend): the third arrives late, out of order
            (at(ENTITY_TIME, hours=-3), 1.0),
            (at(ENTITY_TIME, hours=-1), 2.0),
            (at(ENTITY_TIME, hours=-2), 1.5),
            (at(ENTITY_TIME, minutes=30), 1000.0),  # after the entity row's time: the future
        ]
        stored = []
        for event_time, spend in puts:
            record = {"customer_id": "c1", "event_time": event_time, "spend": spend}
            answer = json.loads(platform.ok("features", "put", "customers", json.dumps(record)))
            stored.append(answer["stored_online"])

        latest = platform.features_get("customers", "c1")

        assert stored == [True, True, False, True]  # the older event never overwrote a newer one
        assert latest is not None
        assert latest["record"]["spend"] == 1000.0
        assert latest["event_time"] == at(ENTITY_TIME, minutes=30)

    def test_streamed_records_put_event_lands_in_the_online_store(self, platform: Platform) -> None:
        data = {
            "feature_group_name": "customers",
            "records": [
                {"customer_id": "c2", "event_time": at(ENTITY_TIME, hours=-2), "spend": 5.5},
                {"customer_id": "c2", "event_time": at(ENTITY_TIME, hours=-4), "spend": 4.0},
            ],
        }

        published = platform.ok(
            "events", "publish", "FeatureRecordsPut", "--data", json.dumps(data)
        )
        record = wait_for(
            lambda: platform.features_get("customers", "c2"), 30, "the streamed record"
        )

        assert "topic=cairn.featurestore.feature-records-put" in published
        assert record["record"]["spend"] == 5.5
        assert record["event_time"] == at(ENTITY_TIME, hours=-2)

    def test_training_set_is_point_in_time_correct_and_a_dataset(
        self, platform: Platform, tmp_path: Path
    ) -> None:
        entities = tmp_path / "entities.csv"
        after_every_write = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        entities.write_text(
            "customer_id,at,label\n"
            f"c1,{at(ENTITY_TIME)},1\n"
            f"c1,{at(ENTITY_TIME, minutes=-90)},0\n"
            f"c2,{at(ENTITY_TIME)},1\n"
            f"nobody,{at(ENTITY_TIME)},0\n"
            f"c1,{after_every_write.isoformat()},1\n"
        )
        entity_uri = platform.ok("datasets", "upload", str(entities), "--name", "churn-entities")
        entity_uri = entity_uri.split()[0]

        built = {}
        for mode in ((), ("--as-of-known-time",)):
            answer = platform.ok(
                "features", "training-set", "create", f"churn{len(mode)}",
                "--entity", entity_uri, "--id-column", "customer_id", "--time-column", "at",
                "-f", "customers:spend", *mode,
            )  # fmt: skip
            built[bool(mode)] = json.loads(answer)

        store = open_store(settings=CairnSettings(home=platform.home))
        values = {}
        for known, answer in built.items():
            assert answer["dataset_uri"].startswith("dataset://churn")
            resolved = resolve_dataset_uri(store, answer["dataset_uri"])
            assert resolved.version.row_count == 5
            table = pq.read_table(platform.home / "store" / resolved.prefix)
            assert table.column("label").to_pylist() == [1, 0, 1, 0, 1]
            assert table.column("customer_id").to_pylist() == ["c1", "c1", "c2", "nobody", "c1"]
            values[known] = table.column("customers__spend").to_pylist()
            # It is a dataset like any other: the ingest service describes it.
            assert "customers__spend" in platform.ok("datasets", "describe", answer["dataset_uri"])
        # By event time: the latest value at or before each row (the late 1.5 counts by its
        # event time); the future 1000.0 only for the row after it.
        assert values[False] == [2.0, 1.5, 5.5, None, 1000.0]
        # As of known time: nothing was written yet at the past entity times.
        assert values[True] == [None, None, None, None, 1000.0]

    def test_down_stops_the_platform(self, platform: Platform) -> None:
        state = platform.status()

        result = platform.cli("down", timeout_s=60)

        assert result.returncode == 0, result.stderr
        assert platform.process.wait(timeout=20) == 0
        assert not (platform.home / "runtime.json").exists()
        assert all(not _alive(s["pid"]) for s in state["services"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"
