"""Gateway rules: traffic split by weight, revision order, batching, capture layout, v2 shapes."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pytest
from cairn.artifacts import load_model
from cairn.contracts.events import EndpointUpdated
from cairn.contracts.state import CaptureRecord, EndpointStateView
from cairn.errors import InvalidInput, NotFound
from cairn.store import InMemoryObjectStore

from services.gateway.batching import MicroBatcher
from services.gateway.capture import Captured, CaptureWriter, capture_key, capture_lines
from services.gateway.domain import (
    WeightedChoice,
    explanations_requested,
    is_newer,
    resolve_target_model,
    update_from_view,
)
from services.gateway.oip import InferRequest, model_metadata, output_tensors
from tests.unit.test_gateway_payloads import ROWS, make_package


def test_weighted_choice_splits_traffic_by_weight():
    choice = WeightedChoice([1.0, 3.0, 0.0])
    draws = np.random.default_rng(0).random(20_000)
    counts = Counter(choice.pick(float(draw)) for draw in draws)
    assert counts[2] == 0
    assert counts[1] / len(draws) == pytest.approx(0.75, abs=0.02)
    assert WeightedChoice([0.0, 0.0]).pick(0.5) is None


def test_only_newer_revisions_apply_and_stored_documents_parse():
    update = EndpointUpdated(endpoint_name="e", revision=3, status="InService")
    assert is_newer(None, update) and is_newer(2, update)
    assert not is_newer(3, update) and not is_newer(4, update)
    stored = {**update.model_dump(mode="json"), "rollout": {"phase": "baking"}, "history": []}
    view = EndpointStateView.model_validate_json(json.dumps(stored))
    assert update_from_view(view) == update


def test_target_model_names_only_a_package_the_endpoint_declares():
    assert explanations_requested("`true`") and explanations_requested("true")
    assert not explanations_requested("`false`") and not explanations_requested(None)
    declared = ["models/job-7/", "models/job-8/"]
    assert resolve_target_model("job-7", "credit", declared) == "models/job-7/"
    assert resolve_target_model("models/job-8/manifest.json", "credit", declared) == "models/job-8/"
    assert resolve_target_model("job-7.tar.gz", "credit", declared) == "models/job-7/"
    for undeclared in ("job-9", "../platform/keys", "models/", "7"):
        with pytest.raises(NotFound, match="serves no model"):
            resolve_target_model(undeclared, "credit", declared)
    with pytest.raises(InvalidInput, match="ambiguous"):
        resolve_target_model("m", "credit", ["a/m/", "b/m/"])


async def test_concurrent_requests_are_stacked_into_one_predict_and_split_back():
    calls: list[int] = []

    def predict(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return matrix.sum(axis=1)

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(predict, executor, max_batch_rows=64)
        matrices = [np.full((1 + i % 2, 3), i, dtype=np.float32) for i in range(10)]
        results = await asyncio.gather(*(batcher.predict(m) for m in matrices))
    for matrix, result in zip(matrices, results, strict=True):
        np.testing.assert_array_equal(result, matrix.sum(axis=1))
    assert sum(calls) == 15 and len(calls) < 10  # fewer predict calls than requests


async def test_batches_respect_the_row_limit_and_errors_reach_every_waiter():
    sizes: list[int] = []

    def predict(matrix: np.ndarray) -> np.ndarray:
        sizes.append(len(matrix))
        if (matrix < 0).any():
            raise ValueError("model failure")
        return matrix[:, 0]

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(predict, executor, max_batch_rows=4)
        await asyncio.gather(*(batcher.predict(np.ones((1, 2), np.float32)) for _ in range(12)))
        assert max(sizes) <= 4
        failing = [batcher.predict(-np.ones((1, 2), np.float32)) for _ in range(3)]
        outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)


@pytest.mark.parametrize("inline_max_rows", [0, 8])
async def test_small_batches_predict_on_the_loop_and_large_ones_in_a_thread(inline_max_rows):
    """Small batches skip the hand-over to a worker thread (the gateway's p99 at 8 clients);
    batches over the limit still leave the loop free while they predict."""
    threads: list[tuple[int, bool]] = []

    def predict(matrix: np.ndarray) -> np.ndarray:
        threads.append((len(matrix), threading.current_thread() is threading.main_thread()))
        if (matrix < 0).any():
            raise ValueError("model failure")
        return matrix[:, 0] * 2

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(
            predict, executor, max_batch_rows=64, inline_max_rows=inline_max_rows
        )
        small = [np.full((1, 2), i, np.float32) for i in range(6)]
        answers = await asyncio.gather(*(batcher.predict(m) for m in small))
        large = await batcher.predict(np.ones((30, 2), np.float32))
        failing = [batcher.predict(-np.ones((1, 2), np.float32)) for _ in range(3)]
        outcomes = await asyncio.gather(*failing, return_exceptions=True)

    assert [float(a[0]) for a in answers] == [2.0 * i for i in range(6)]
    assert large.tolist() == [2.0] * 30
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    assert all(on_loop == (rows <= inline_max_rows) for rows, on_loop in threads)
    assert any(rows > 1 for rows, _ in threads)  # requests were batched, not served one by one


async def test_capture_files_follow_sagemakers_layout_and_are_announced():
    store = InMemoryObjectStore()
    published: list = []

    async def publish(event):
        published.append(event)

    writer = CaptureWriter(store, publish, flush_records=100)
    at = datetime(2026, 11, 3, 14, 5, 9, tzinfo=UTC).timestamp()
    for index in range(3):
        writer.add(
            Captured(
                "credit", "blue", at, f"id-{index}", None, "text/csv", b"1,2", "text/csv", b"0.5\n"
            )
        )
    writer.add(
        Captured(
            "credit",
            "shadow",
            at,
            None,
            "k=v",
            "application/json",
            b"[1]",
            "application/json",
            b"{}",
        )
    )
    events = await writer.flush()

    assert sorted((e.variant_name, e.record_count) for e in events) == [("blue", 3), ("shadow", 1)]
    assert published == events
    blue = next(e for e in events if e.variant_name == "blue")
    assert blue.capture_uri.startswith("capture/credit/blue/2026/11/03/14/05-09-")
    raw_lines = store.get_bytes(blue.capture_uri).splitlines()
    assert all(CaptureRecord.model_validate_json(line) for line in raw_lines)  # the contract
    lines = [json.loads(line) for line in raw_lines]
    assert [line["eventMetadata"]["inferenceId"] for line in lines] == ["id-0", "id-1", "id-2"]
    assert lines[0]["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv",
        "mode": "INPUT",
        "data": "1,2",
        "encoding": "CSV",
    }
    assert lines[0]["captureData"]["endpointOutput"]["data"] == "0.5\n"
    assert capture_key("e", "v", at).startswith("capture/e/v/2026/11/03/14/")
    assert capture_key("e", "v", at).endswith(".jsonl")
    assert await writer.flush() == []  # nothing left: no empty files


async def test_capture_serialising_lets_requests_run_between_slices():
    """A flush builds its lines on the event loop a slice at a time: requests that arrive
    meanwhile run between slices (a thread building them held the GIL for ms at a time)."""
    at = datetime(2026, 11, 3, 14, 5, 9, tzinfo=UTC).timestamp()
    records = [
        Captured("e", "v", at, f"id-{index}", None, "text/csv", b"1,2", "text/csv", b"0.5\n")
        for index in range(2000)
    ]
    ran_meanwhile = 0
    building = asyncio.create_task(capture_lines(records))
    while not building.done():
        ran_meanwhile += 1
        await asyncio.sleep(0)
    body = await building

    assert ran_meanwhile > 1
    lines = body.decode().split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    ids = [
        CaptureRecord.model_validate_json(line).eventMetadata["inferenceId"] for line in lines[:-1]
    ]
    assert ids == [record.inference_id for record in records]


async def test_capture_lines_are_the_contracts_canonical_form():
    """Lines are formatted without a pydantic model per record; they must still be exactly what
    `CaptureRecord` writes, whatever the bodies and ids hold."""
    at = datetime(2026, 11, 3, 23, 59, 59, 999_999, tzinfo=UTC).timestamp()
    odd = 'q"uote\\back\nnew\tline\x01ctl\x7f é ✓ 🙂 </script>'
    records = [
        Captured("e", "v", at, None, None, "text/csv", b"1,2", "text/csv", b"0.5\n"),
        Captured(
            "e",
            "v",
            at + 1e-6,
            odd,
            odd,
            "application/json",
            odd.encode(),
            "application/json",
            b"[]",
        ),
        Captured(
            "e",
            "v",
            at + 0.5,
            "i",
            None,
            "application/x-npy",
            b"\x93NUMPY\xff",
            "application/json",
            b"1",
        ),
        Captured("e", "v", at + 2, None, "a=1", "text/csv", b"\xff\xfe", "text/csv", b"0"),
    ]
    lines = (await capture_lines(records)).decode().split("\n")[:-1]

    assert len(lines) == len(records)
    for record, line in zip(records, lines, strict=True):
        parsed = CaptureRecord.model_validate_json(line)
        assert parsed.model_dump_json() == line
        metadata = parsed.eventMetadata
        assert uuid.UUID(metadata["eventId"]).version == 4
        moment = datetime.strptime(metadata["inferenceTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert moment.replace(tzinfo=UTC).timestamp() == pytest.approx(record.at, abs=2e-6)
        assert metadata.get("inferenceId") == record.inference_id
        assert metadata.get("customAttributes") == record.custom_attributes
        sent = parsed.captureData["endpointInput"]
        if sent["encoding"] == "BASE64":
            assert base64.b64decode(sent["data"]) == record.input_body
        else:
            assert sent["data"].encode() == record.input_body
    assert json.loads(lines[1])["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert [json.loads(line)["captureData"]["endpointInput"]["encoding"] for line in lines] == [
        "CSV",
        "JSON",
        "BASE64",
        "BASE64",  # text/csv that is not UTF-8
    ]
    assert len({json.loads(line)["eventMetadata"]["eventId"] for line in lines}) == len(lines)


@pytest.fixture(scope="module")
def model():
    store = InMemoryObjectStore()
    return load_model(store, make_package(store, "models/v2/"))


def test_v2_tensor_forms_encode_like_csv_rows(model):
    expected = model.encode_rows(ROWS)
    flat = [cell for row in ROWS for cell in row]
    as_matrix = InferRequest(
        {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "BYTES", "data": flat}]}
    )
    np.testing.assert_array_equal(as_matrix.matrix(model), expected)
    columns = list(zip(*ROWS, strict=True))
    per_column = InferRequest(
        {
            "id": "x",
            "inputs": [
                {"name": name, "shape": [3], "datatype": dtype, "data": list(values)}
                for name, dtype, values in zip(
                    ["income", "age", "debt", "region"],
                    ["FP32", "INT64", "FP32", "BYTES"],
                    columns,
                    strict=True,
                )
            ],
        }
    )
    np.testing.assert_array_equal(per_column.matrix(model), expected)
    assert per_column.id == "x"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({}, "inputs"),
        ({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1]}]}, "needs 2"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP99", "data": [1]}]}, "datatype"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]}, "numbers"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}, 'no "data"'),
    ],
)
def test_v2_malformed_requests_are_invalid_input(document, reason):
    with pytest.raises(InvalidInput, match=reason):
        InferRequest(document)


def test_v2_outputs_and_metadata_shapes(model):
    matrix = model.encode_rows(ROWS)
    result = model.predict(matrix)
    (tensor,) = output_tensors(result, model, None)
    assert tensor == {
        "name": "probability",
        "shape": [3],
        "datatype": "FP32",
        "data": result.tolist(),
    }
    with_contributions = output_tensors(result, model, None, model.explain(matrix))
    assert with_contributions[1]["shape"] == [3, 5]
    with pytest.raises(InvalidInput, match="unknown outputs"):
        output_tensors(result, model, ["nope"])
    metadata = model_metadata("credit", ["blue"], model)
    assert metadata["inputs"][3] == {"name": "region", "datatype": "BYTES", "shape": [-1]}
    assert metadata["versions"] == ["blue"] and metadata["platform"] == "xgboost"
