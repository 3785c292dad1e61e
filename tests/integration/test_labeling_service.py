"""The labeling service on the real broker with the ingest service: a job is queued for a
workforce, three people answer through the HTTP API, a skip goes to someone else, nobody gets an
item twice, every bad input is a 4xx with its reason, and the labels become a dataset version."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cairn.datasets import data_keys, resolve_dataset_uri
from cairn.settings import CairnSettings

from tests.support.labeling_stack import REVIEWS, LabelingStack, labeling_stack
from tests.support.tansu import unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(kafka_settings: CairnSettings, tmp_path: Path) -> AsyncIterator[LabelingStack]:
    async with labeling_stack(kafka_settings, tmp_path) as running:
        yield running


def truth_of(text: str) -> str:
    return dict(REVIEWS)[text]


async def test_three_annotators_label_a_dataset_and_bad_input_is_refused(
    stack: LabelingStack,
) -> None:
    dataset = stack.reviews_dataset()
    workforce, tokens = await stack.workforce(["ann", "bob", "cy", "dee"])
    job = unique_name("rev")
    request = {
        "job_name": job,
        "dataset_uri": dataset,
        "task_type": "text-classification",
        "labels": ["pos", "neg"],
        "workforce_name": workforce,
        "workers_per_item": 3,
    }
    async with stack.client() as admin:
        refusals = {
            "dataset_uri": {**request, "dataset_uri": "dataset://no-such-thing@1"},
            "labels": {**request, "labels": ["pos", "neg", "pos"]},
            "workers_per_item": {**request, "workers_per_item": 5},
            "workforce": {**request, "workforce_name": "nobody"},
        }
        for field, body in refusals.items():
            answer = await admin.post("/labeling-jobs", json=body)
            assert 400 <= answer.status_code < 500, (field, answer.text)
            assert answer.json()["error"], field
        duplicate_members = await admin.post(
            "/workforces", json={"workforce_name": "twice", "members": ["a", "a"]}
        )
        assert duplicate_members.status_code == 400
    await stack.create_job(**request)

    seen: dict[str, list[str]] = {}
    async with stack.client(tokens["dee"]) as dee:
        first = (await dee.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
        skipped = await dee.post(f"/labeling-jobs/{job}/tasks/{first['item_id']}/skip")
        assert skipped.status_code == 200
        seen.setdefault("dee", [])
    for name in ("ann", "bob", "cy"):
        async with stack.client(tokens[name]) as client:
            never_claimed = await client.post(
                f"/labeling-jobs/{job}/tasks/3/answer", json={"label": "pos"}
            )
            assert never_claimed.status_code == 409
            assert never_claimed.json()["code"] == "lease_expired"
            while True:
                task = (await client.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
                if task is None:
                    break
                item = task["item_id"]
                assert item not in seen.setdefault(name, []), "an item came back to its annotator"
                seen[name].append(item)
                wrong = await client.post(
                    f"/labeling-jobs/{job}/tasks/{item}/answer", json={"label": "meh"}
                )
                assert wrong.status_code == 400 and "not in the job's labels" in wrong.text
                right = await client.post(
                    f"/labeling-jobs/{job}/tasks/{item}/answer",
                    json={"label": truth_of(task["text"])},
                )
                assert right.status_code == 201, right.text
                again = await client.post(
                    f"/labeling-jobs/{job}/tasks/{item}/answer", json={"label": "pos"}
                )
                assert again.status_code == 409 and again.json()["code"] == "already_answered"
    # Dee's skipped item went to the three others; dee was never offered it again.
    assert all(len(items) == len(REVIEWS) for name, items in seen.items() if name != "dee")
    async with stack.client(tokens["ann"]) as outsider_check:
        forbidden = await outsider_check.get("/labeling-jobs")
        assert forbidden.status_code == 403

    done = await stack.wait_job(job, lambda j: j["status"] in ("Completed", "Failed"))
    assert done["status"] == "Completed", done
    assert done["label_counters"]["human_labeled"] == len(REVIEWS)
    assert done["agreement"]["krippendorff_alpha"] == 1.0
    assert set(done["agreement"]["annotators"]) == {"ann", "bob", "cy"}
    resolved = resolve_dataset_uri(stack.store, done["output_dataset_uri"])
    rows = pq.read_table(stack.store.uri(data_keys(resolved.version)[0]).removeprefix("file://"))
    labelled = rows.to_pylist()
    assert len(labelled) == len(REVIEWS)
    for row in labelled:
        assert row["label"] == row["truth"]
        assert row["labeled_by"] == "human" and row["annotator_count"] == 3
        assert row["confidence"] > 0.9


def png(width: int, height: int) -> bytes:
    """A real, plain PNG of one colour (what the page draws its boxes on)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80\xc0\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def test_bounding_boxes_on_images_from_the_store(stack: LabelingStack) -> None:
    import pyarrow as pa
    from cairn.datasets import write_dataset_version

    keys = [f"data/pets/{n}.png" for n in ("a", "b")]
    for key in keys:
        stack.store.put_bytes(key, png(64, 48), content_type="image/png")
    name = unique_name("pets")
    version, _ = write_dataset_version(stack.store, name, pa.table({"image": keys}))
    workforce, tokens = await stack.workforce(["ann", "bob"])
    job = unique_name("boxes")
    await stack.create_job(
        job_name=job,
        dataset_uri=f"dataset://{name}@{version.version}",
        task_type="bounding-box",
        labels=["cat", "dog"],
        workforce_name=workforce,
        workers_per_item=2,
        image_column="image",
    )
    _, outsider = await stack.workforce(["eve"])
    async with stack.client(outsider["eve"]) as eve:
        refused = await eve.get(f"/labeling-jobs/{job}/items/0/image")
        assert refused.status_code == 403, "only the job's workforce sees its images"
    for who, shift in (("ann", 0.0), ("bob", 2.0)):
        async with stack.client(tokens[who]) as client:
            while True:
                task = (await client.post(f"/labeling-jobs/{job}/tasks/next")).json()["task"]
                if task is None:
                    break
                image = await client.get(f"/labeling-jobs/{job}/items/{task['item_id']}/image")
                assert image.headers["content-type"] == "image/png"
                assert image.content == png(64, 48)
                box = {"label": "cat", "x": 10 + shift, "y": 8, "width": 20, "height": 16}
                given = await client.post(
                    f"/labeling-jobs/{job}/tasks/{task['item_id']}/answer", json={"boxes": [box]}
                )
                assert given.status_code == 201, given.text
    done = await stack.wait_job(job, lambda j: j["status"] in ("Completed", "Failed"))
    assert done["status"] == "Completed", done
    resolved = resolve_dataset_uri(stack.store, done["output_dataset_uri"])
    rows = pq.read_table(stack.store.uri(data_keys(resolved.version)[0]).removeprefix("file://"))
    for row in rows.to_pylist():
        (kept,) = json.loads(row["label"])
        assert kept == {"label": "cat", "x": 11.0, "y": 8.0, "width": 20.0, "height": 16.0}
        assert row["annotator_count"] == 2 and row["confidence"] == 1.0
