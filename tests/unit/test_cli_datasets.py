"""`cairn datasets`: argument errors exit 2 with the reason; uploads go to a real ingest server.

The server is the ingest app on uvicorn in a thread, over an in-memory store and the session's
Tansu broker (it publishes DatasetIngested / DatasetRejected), as a user's `cairn up` would run it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.auth.credentials import save_home_credential
from cairn.datasets import get_dataset_index, get_dataset_version
from cairn.store import InMemoryObjectStore
from cairn_cli import app
from typer.testing import CliRunner

from services.ingest.app import create_service
from services.ingest.config import IngestSettings
from tests.support.auth import auth_settings, token_for
from tests.support.http_server import served_in_thread

CSV = "id,city,amount\n1,paris,10.5\n2,oslo,\n3,paris,7\n"


@pytest.fixture(autouse=True)
def no_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No running platform and no URL from the environment unless a test sets one."""
    monkeypatch.delenv("CAIRN_INGEST_URL", raising=False)
    monkeypatch.delenv("CAIRN_API_KEY", raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore()


@pytest.fixture(scope="module")
def ingest(
    kafka_bootstrap: str, store: InMemoryObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The ingest service's URL and a token of a key that may upload and read datasets."""
    settings = auth_settings(
        home=tmp_path_factory.mktemp("ingest-home"), kafka_bootstrap_servers=kafka_bootstrap
    )
    config = IngestSettings(work_dir=tmp_path_factory.mktemp("ingest-work"))
    service = create_service(settings, store, config)
    token = token_for(store, settings, ["data", "read"], name="uploader")
    with served_in_thread(service.api, "ingest") as url:
        yield url, token


@pytest.fixture()
def ingest_url(ingest: tuple[str, str], tmp_path: Path) -> str:
    """The ingest URL; the user's credential in CAIRN_HOME, where `cairn up` would save it."""
    url, token = ingest
    save_home_credential(tmp_path / "home", token, name="uploader")
    return url


def cairn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["datasets", *args])
    return result.exit_code, result.stdout, result.stderr


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# Argument errors -------------------------------------------------------------------------------


def test_upload_without_a_name_exits_2(tmp_path: Path) -> None:
    code, _, errors = cairn("upload", str(write(tmp_path / "a.csv", CSV)))

    assert code == 2
    assert "Missing option '--name'" in errors


def test_upload_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, errors = cairn("upload", str(tmp_path / "nope.csv"), "--name", "x")

    assert code == 2
    assert "does not exist" in errors


def test_upload_of_an_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    code, _, errors = cairn("upload", str(write(tmp_path / "a.dat", CSV)), "--name", "x")

    assert code == 2
    assert "cannot tell the format; pass --format" in errors


def test_schema_file_that_is_not_json_exits_2(tmp_path: Path) -> None:
    schema = write(tmp_path / "schema.json", "id: int")

    code, _, errors = cairn(
        "upload", str(write(tmp_path / "a.csv", CSV)), "--name", "x", "--schema", str(schema)
    )

    assert code == 2
    assert "schema.json" in errors and "not valid JSON" in errors


def test_upload_with_no_running_platform_says_how_to_start_one(tmp_path: Path) -> None:
    code, _, errors = cairn("upload", str(write(tmp_path / "a.csv", CSV)), "--name", "x")

    assert code == 2
    assert "Cairn is not running" in errors and "cairn up" in errors


# Against the ingest service --------------------------------------------------------------------


def test_upload_stores_a_version_and_the_same_file_again_is_a_no_op(
    ingest_url: str, store: InMemoryObjectStore, tmp_path: Path
) -> None:
    name = new_name("sales")
    csv = write(tmp_path / "sales.csv", CSV)

    first = cairn("upload", str(csv), "--name", name, "--url", ingest_url)
    again = cairn("upload", str(csv), "--name", name, "--url", ingest_url)

    assert first[0] == 0 and first[1].startswith(f"dataset://{name}@1 stored: 3 rows")
    assert again[0] == 0 and again[1].startswith(f"dataset://{name}@1 unchanged")
    version = get_dataset_version(store, name)
    assert [c.dtype for c in version.columns] == ["int", "string", "float"]
    assert len(get_dataset_index(store, name).versions) == 1
    assert f"sha256 {version.sha256}" in first[1]


def test_rows_breaking_the_schema_are_named_and_nothing_is_stored(
    ingest_url: str, store: InMemoryObjectStore, tmp_path: Path
) -> None:
    name = new_name("strict")
    schema = write(
        tmp_path / "schema.json",
        json.dumps([{"name": "id", "dtype": "int"}, {"name": "amount", "dtype": "float"}]),
    )
    data = write(tmp_path / "bad.csv", "id,amount\n1,2.5\nx,3.0\n")

    code, _, errors = cairn(
        "upload", str(data), "--name", name, "--schema", str(schema), "--url", ingest_url
    )

    assert code == 1
    assert "error 400" in errors and "row 2, column 'id'" in errors
    assert list(store.list(f"datasets/{name}/")) == []


def test_parquet_and_jsonl_uploads_with_list_and_describe(
    ingest_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAIRN_INGEST_URL", ingest_url)  # no --url: taken from the environment
    parquet, lines = new_name("pq"), new_name("jl")
    pq.write_table(
        pa.table({"score": [0.5, 1.5, None], "tag": ["a", "b", "a"]}), tmp_path / "t.parquet"
    )
    jsonl = write(tmp_path / "t.txt", '{"n": 1, "ok": true}\n{"n": 5, "ok": false}\n')

    stored_parquet = cairn("upload", str(tmp_path / "t.parquet"), "--name", parquet)
    stored_jsonl = cairn("upload", str(jsonl), "--name", lines, "--format", "jsonl")
    listed = cairn("list")
    described = cairn("describe", f"dataset://{parquet}@1")

    assert stored_parquet[0] == 0 and "3 rows" in stored_parquet[1]
    assert stored_jsonl[0] == 0 and "2 rows" in stored_jsonl[1]
    assert listed[0] == 0 and parquet in listed[1] and lines in listed[1]
    assert described[0] == 0
    score = next(line for line in described[1].splitlines() if "score" in line)
    assert "float" in score and "33.3%" in score and "1.5" in score  # missing share, max
    assert "a (2)" in next(line for line in described[1].splitlines() if "tag" in line)


def test_describe_of_an_unknown_dataset_exits_1_with_the_reason(ingest_url: str) -> None:
    code, _, errors = cairn("describe", "never-uploaded", "--url", ingest_url)

    assert code == 1
    assert "error 404" in errors and "no dataset named 'never-uploaded'" in errors
