"""Batch transform as a user runs it on `cairn up`: the demo's batch step and `cairn transform`.

Uses the shared demo platform (`cairn demo --batch` already scored the validation set).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.artifacts import load_model
from cairn.store import open_store
from cairn.store.base import ObjectStore

from tests.support.auth import home_headers
from tests.support.demo_platform import DemoPlatform

pytestmark = pytest.mark.e2e


def store_of(platform: DemoPlatform) -> ObjectStore:
    return open_store((platform.home / "store").resolve().as_uri())


def model_name(platform: DemoPlatform) -> str:
    return f"credit-risk:{platform.summary['model_version']}"


def test_the_demo_scores_the_validation_set_with_explanations(demo_platform: DemoPlatform) -> None:
    summary, store = demo_platform.summary, store_of(demo_platform)
    assert demo_platform.demo is not None
    assert "Batch: score the whole validation set" in demo_platform.demo.stdout
    batch = summary["batch"]
    validation = pd.read_csv(summary["validation_csv"])
    assert (batch["records_out"], batch["records_failed"]) == (len(validation), 0)

    [output] = batch["outputs"]
    scored = pq.read_table(pa.BufferReader(store.get_bytes(output))).to_pandas()
    features = summary["feature_columns"]
    model = load_model(store, summary["artifact_uri"])
    offline = model.predict(model.encode_rows(validation[features].values.tolist()))
    # Joined with the input, in the input's order: labels line up, predictions are the model's.
    assert scored["default"].tolist() == validation["default"].tolist()
    outputs = [c for c in scored.columns if c not in validation.columns]
    probability = next(c for c in outputs if not c.startswith("contribution_"))
    np.testing.assert_allclose(scored[probability], offline, rtol=1e-5)
    # TreeSHAP: the contributions and the bias add up to the margin (log-odds) of each row.
    contributions = scored[[f"contribution_{f}" for f in features] + ["contribution_bias"]]
    margin = np.log(offline / (1 - offline))
    np.testing.assert_allclose(contributions.sum(axis=1), margin, atol=1e-3)


def write_csv(platform: DemoPlatform, key: str, frame: pd.DataFrame) -> None:
    path = platform.home / "store" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_a_csv_with_a_header_and_a_bad_row_is_scored_with_the_error_set_aside(
    demo_platform: DemoPlatform,
) -> None:
    summary = demo_platform.summary
    frame = pd.read_csv(summary["validation_csv"]).head(300)
    frame.insert(0, "customer", [f"c{i}" for i in range(len(frame))])
    frame = frame.astype({summary["feature_columns"][0]: "object"})
    frame.iat[7, 1] = "not-a-number"
    write_csv(demo_platform, "data/e2e-batch/customers.csv", frame)

    created = demo_platform.cli(
        "transform", "create", "e2e-csv",
        "--model", model_name(demo_platform),
        "--input", "data/e2e-batch/",
        "--output", "outputs/e2e-batch/",
        "--content-type", "text/csv", "--csv-header",
        "--join-source", "Input",
        "--max-failed-records", "1",
        "--wait", "--json",
        timeout_s=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    job = json.loads(created.stdout)
    assert (job["status"], job["records_out"], job["records_failed"]) == ("Completed", 299, 1)

    store = store_of(demo_platform)
    lines = store.get_bytes("outputs/e2e-batch/customers.csv.out").decode().splitlines()
    assert len(lines) == 299
    assert [line.split(",")[0] for line in lines[:8]] == [f"c{i}" for i in range(9) if i != 7]
    manifest = json.loads(store.get_bytes(job["manifest_key"]))
    [error_key] = manifest["outputs"][0]["errors"]
    [error] = [json.loads(line) for line in store.get_bytes(error_key).decode().splitlines()]
    assert "not-a-number" in error["record"] and error["reason"]

    listed = demo_platform.cli("transform", "list", "--json")
    assert "e2e-csv" in {j["job_name"] for j in json.loads(listed.stdout)}
    again = demo_platform.cli(
        "transform", "create", "e2e-csv",
        "--model", model_name(demo_platform),
        "--input", "data/e2e-batch/", "--output", "outputs/e2e-batch/",
        "--content-type", "text/csv", "--csv-header", "--join-source", "Input",
        "--max-failed-records", "1",
    )  # fmt: skip
    assert again.returncode == 1 and "already completed" in again.stderr


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--model", "credit-risk:999"], "404", "999"),
        (["--model", "no-such-group:1"], "404", "no-such-group"),
        (["--input", "platform/keys/"], "400", "input"),
        (["--input", "data/../platform/keys/"], "400", "input"),
        (["--input", "data/nothing-here/"], "400", "input"),
        (["--content-type", "image/png"], "400", "content_type"),
        (["--input-filter", "$[1:"], "400", "input_filter"),
        (["--max-payload-mb", "60", "--max-concurrent-transforms", "2"], "400", "max_payload"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(
    demo_platform: DemoPlatform, args: list[str], status: str, says: str
) -> None:
    base = {
        "--model": model_name(demo_platform),
        "--input": "data/e2e-batch/",
        "--output": "outputs/e2e-bad/",
        "--content-type": "text/csv",
    }
    overrides = dict(zip(args[::2], args[1::2], strict=True))
    argv = [arg for item in {**base, **overrides}.items() for arg in item]
    refused = demo_platform.cli("transform", "create", "e2e-bad", *argv)
    assert refused.returncode == 1, refused.stdout
    assert f"error ({status}" in refused.stderr and says in refused.stderr, refused.stderr
    missing = demo_platform.cli("transform", "describe", "e2e-bad")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_the_batch_api_is_locked(demo_platform: DemoPlatform) -> None:
    url = f"{demo_platform.url('batch')}/transform-jobs"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    listed = httpx.get(url, headers=home_headers(demo_platform.home), timeout=10)
    assert listed.status_code == 200


def test_the_demo_output_is_where_the_manifest_says(demo_platform: DemoPlatform) -> None:
    batch = demo_platform.summary["batch"]
    manifest = json.loads(store_of(demo_platform).get_bytes(batch["manifest_key"]))
    assert [Path(entry["output"]).name for entry in manifest["outputs"]] == [
        Path(key).name for key in batch["outputs"]
    ]
    assert all(entry["records_failed"] == 0 for entry in manifest["outputs"])
