"""A newer built-in end to end: `cairn train -a ip-insights`, register, deploy, invoke over HTTP.

Proves the parts a unit test cannot: the trainer service runs a torch algorithm from the CLI, the
registry and deployer take its package, and the gateway process loads it and answers SageMaker's
shape for text inputs. It takes about a minute on two cores (torch is imported by the trainer and
the gateway), so it is a `long` test: `pytest -m long tests/e2e/test_builtin_served.py`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cairn.store import open_store

from tests.support.demo_platform import DemoPlatform
from tests.support.tansu import unique_name
from tests.unit.test_builtin_algorithms_a import ip_pairs

pytestmark = [pytest.mark.e2e, pytest.mark.long]
pytest.importorskip("torch")


@pytest.mark.timeout(900)  # the shared platform's start and demo count against the first user
def test_ip_insights_trained_with_the_cli_is_served_by_the_gateway(
    demo_platform: DemoPlatform,
) -> None:
    name = unique_name("ipi")
    frame = ip_pairs(np.random.default_rng(0), users=40, per_user=25)
    key = f"data/{name}/train.csv"
    open_store((demo_platform.home / "store").resolve().as_uri()).put_bytes(
        key, frame.to_csv(index=False).encode()
    )
    hyperparameters = {
        "num_entity_vectors": 100,
        "vector_dim": 16,
        "epochs": 12,
        "mini_batch_size": 256,
        "learning_rate": 0.02,
    }
    trained = demo_platform.cli(
        "train", name, "-a", "ip-insights", "-c", f"train={key}", "--register", name,
        *(arg for hp, value in hyperparameters.items() for arg in ("-p", f"{hp}={value}")),
        "--wait", "--json",
        timeout_s=240,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    approved = demo_platform.cli("models", "approve", name, "1")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    created = demo_platform.cli(
        "endpoints", "create", name, "-v", f"AllTraffic={name}:1", "--wait", timeout_s=180
    )
    assert created.returncode == 0, created.stdout + created.stderr
    user, address = frame.iloc[0]
    subnet = address.rsplit(".", 1)[0]
    body = {
        "instances": [
            {"entity": user, "ip": f"{subnet}.200"},  # a new address in the user's subnet
            {"entity": user, "ip": "203.0.113.9"},  # an address far from anything they use
        ]
    }
    invoked = demo_platform.cli(
        "invoke", name, "--body", json.dumps(body), "--content-type", "application/json"
    )
    assert invoked.returncode == 0, invoked.stdout + invoked.stderr
    usual, unusual = (row["dot_product"] for row in json.loads(invoked.stdout)["predictions"])
    assert usual > unusual
    bad = demo_platform.cli(
        "invoke", name, "--body", '{"instances": [["u", "not-an-ip"]]}',
        "--content-type", "application/json",
    )  # fmt: skip
    assert bad.returncode != 0 and "not an IPv4 address" in bad.stdout + bad.stderr
