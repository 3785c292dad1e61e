"""Deep built-in packages behind the real gateway: SageMaker's request bodies in, its shapes out.

The gateway runs in-process over ASGI and loads its endpoint from the store the way the service
does at start; the packages come from the trainer's own file-job path. Quality is tested in
test_builtin_algorithms_b.py; here the models are one epoch old and the HTTP exchange is the point.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.contracts.events import (
    EndpointUpdated,
    InputChannel,
    TrainingJobRequested,
    VariantState,
)
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.service import Service
from cairn.store import InMemoryObjectStore
from PIL import Image

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from services.trainer.algorithms import ALGORITHMS, TrainingContext
from services.trainer.file_jobs import run_file_job
from tests.support.auth import auth_settings, scoped_headers
from tests.support.deep_data import digit_images, jsonl, segmentation_channels, topic_pairs

torch = pytest.importorskip("torch")

ENDPOINT = "deep"
INVOKE = f"/endpoints/{ENDPOINT}/invocations"
JOBS: dict[str, tuple[dict[str, Any], dict[str, dict[str, bytes]]]] = {
    "object2vec": (
        {
            "enc0_max_seq_len": 8,
            "enc0_vocab_size": 40,
            "enc0_network": "pooled_embedding",
            "enc_dim": 8,
            "enc0_token_embedding_dim": 8,
            "mlp_dim": 8,
            "epochs": 1,
        },
        {"train": {"pairs.jsonl": jsonl(topic_pairs(64, 1))}},
    ),
    "image-classification": (
        {
            "num_classes": 10,
            "num_training_samples": 64,
            "image_shape": "1,16,16",
            "num_layers": 8,
            "epochs": 1,
        },
        {"train": digit_images(0, 64)[0], "train_lst": {"t.lst": digit_images(0, 64)[1]}},
    ),
    "semantic-segmentation": (
        {
            "num_classes": 3,
            "num_training_samples": 8,
            "crop_size": 16,
            "epochs": 1,
            "base_width": 4,
            "depth": 1,
        },
        dict(zip(("train", "train_annotation"), segmentation_channels(8, 16, 1), strict=True)),
    ),
}


@pytest.fixture(scope="module")
def trained_store() -> InMemoryObjectStore:
    """One package per algorithm, each a variant of one endpoint (the first takes the traffic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    store = InMemoryObjectStore()
    variants = []
    for index, (name, (hp, channels)) in enumerate(JOBS.items()):
        for channel, files in channels.items():
            for path, data in files.items():
                store.put_bytes(f"data/{name}/{channel}/{path}", data)
        request = TrainingJobRequested(
            job_name=f"{name}-job",
            algorithm=name,
            hyperparameters=hp,
            input_channels=[InputChannel(name=c, uri=f"data/{name}/{c}") for c in channels],
        )
        built_in = ALGORITHMS[name]
        result = run_file_job(
            store, request, built_in, built_in.parse(hp), f"models/{name}/", TrainingContext()
        )
        variants.append(
            VariantState(
                variant_name=name,
                model_package_group=ENDPOINT,
                model_version=index + 1,
                artifact_uri=result.artifact_uri,
                weight=1.0 if index == 0 else 0.0,
                instance_count=1,
            )
        )
    state = EndpointUpdated(
        endpoint_name=ENDPOINT, revision=1, status="InService", production_variants=variants
    )
    document = {**state.model_dump(mode="json"), "rollout": None}
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    torch.set_num_threads(threads)
    return store


@pytest.fixture
async def client(
    tmp_path: Path, trained_store: InMemoryObjectStore
) -> AsyncIterator[httpx.AsyncClient]:
    store = trained_store
    service: Service = create_service(
        auth_settings(home=tmp_path), store, GatewaySettings(capture_sample_rate=0)
    )
    gateway: Gateway = service.api.state.gateway
    handlers = GatewayHandlers(gateway, store, service.publish)
    await handlers.load_stored_endpoints()
    headers = scoped_headers(service.store, service.settings, ["invoke"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.asgi),
        base_url="http://gateway.test",
        headers=headers,
        timeout=60,
    ) as client:
        yield client
    await handlers.close(gateway)


async def test_the_gateway_answers_deep_models_in_sagemakers_shapes(
    client: httpx.AsyncClient,
) -> None:
    pair = await client.post(
        INVOKE,
        content=json.dumps({"instances": [{"in0": [1, 2], "in1": [3, 4]}]}),
        headers={"Content-Type": "application/json"},
    )
    assert pair.status_code == 200, pair.text
    scores = pair.json()["predictions"][0]["scores"]
    assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-5
    lines = await client.post(  # SageMaker's JSON Lines: a record a line, answered a line each
        INVOKE,
        content=b'{"in0": [1, 2], "in1": [3, 4]}\n{"in0": [5], "in1": [6]}\n',
        headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
    )
    assert lines.status_code == 200, lines.text
    answers = [json.loads(line) for line in lines.text.splitlines()]
    assert len(answers) == 2 and answers[0]["scores"] == pytest.approx(scores, abs=1e-5)

    image = digit_images(100, 101)[0]["img/100.png"]
    target = {"X-Amzn-SageMaker-Target-Variant": "image-classification"}
    probabilities = await client.post(
        INVOKE, content=image, headers={"Content-Type": "application/x-image", **target}
    )
    assert probabilities.status_code == 200, probabilities.text
    assert len(probabilities.json()) == 10  # SageMaker's bare list of class probabilities
    wrapped = {"instances": [{"b64": base64.b64encode(image).decode()}]}
    batch = await client.post(
        INVOKE, content=json.dumps(wrapped), headers={"Content-Type": "application/json", **target}
    )
    assert batch.json()["predictions"][0] == pytest.approx(probabilities.json(), abs=1e-5)

    scene = segmentation_channels(1, 20, 5)[0]["0.png"]
    target = {"X-Amzn-SageMaker-Target-Variant": "semantic-segmentation"}
    mask = await client.post(
        INVOKE,
        content=scene,
        headers={"Content-Type": "image/png", "Accept": "image/png", **target},
    )
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(mask.content)).size == (20, 20)  # the size of the image sent


async def test_bad_bodies_are_model_errors_not_server_errors(client: httpx.AsyncClient) -> None:
    out_of_vocabulary = await client.post(
        INVOKE,
        content=json.dumps({"instances": [{"in0": [99], "in1": [1]}]}),
        headers={"Content-Type": "application/json"},
    )
    assert out_of_vocabulary.status_code == 424, out_of_vocabulary.text
    assert "outside 0..39" in out_of_vocabulary.text
    target = {"X-Amzn-SageMaker-Target-Variant": "image-classification"}
    not_an_image = await client.post(
        INVOKE, content=b"GIF89a?", headers={"Content-Type": "image/png", **target}
    )
    assert not_an_image.status_code == 424 and "not a readable image" in not_an_image.text
    wrong_type = await client.post(
        INVOKE, content=b"1,2", headers={"Content-Type": "text/csv", **target}
    )
    assert wrong_type.status_code == 424 and wrong_type.json()["OriginalStatusCode"] == 415
