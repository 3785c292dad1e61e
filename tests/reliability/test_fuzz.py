"""Fuzz: schemathesis against every service's OpenAPI, with an admin credential and with none.

No request may get a 5xx, and no route but /healthz, /readyz and /metrics may succeed without a
credential. The default run sends a few cases per operation (well under a minute for all services);
the long variant (not in CI) sends many more, with a new random seed each run:

    CAIRN_FUZZ_EXAMPLES=50 .venv/bin/pytest -m long tests/reliability -s
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="the fuzz suite needs schemathesis (test extras)")

from tests.reliability.fuzz import (
    build_service,
    fuzz_service,
    kafka_free,
    service_names,
)

QUICK_EXAMPLES = {"admin": 2, "anonymous": 1}
SLOW_EXAMPLES = int(os.environ.get("CAIRN_FUZZ_EXAMPLES", "50"))


@pytest.fixture(scope="module")
def no_kafka() -> Iterator[None]:
    with kafka_free():
        yield


def _fuzz(name: str, credential: str, examples: int, home: Path, randomize: bool) -> None:
    service = build_service(name, home)
    report = fuzz_service(
        name, service, examples=examples, credential=credential == "admin", randomize=randomize
    )
    print(f"\n{report.summary()} [{credential}]")

    assert report.requests >= report.operations > 0
    assert report.server_errors == [], "\n".join(report.server_errors)
    assert report.open_routes == [], "\n".join(report.open_routes)


@pytest.mark.parametrize("credential", ["admin", "anonymous"])
@pytest.mark.parametrize("name", service_names())
def test_no_request_gets_a_5xx(name: str, credential: str, tmp_path: Path, no_kafka: None) -> None:
    _fuzz(name, credential, QUICK_EXAMPLES[credential], tmp_path, randomize=False)


@pytest.mark.long
@pytest.mark.parametrize("credential", ["admin", "anonymous"])
@pytest.mark.parametrize("name", service_names())
def test_no_request_gets_a_5xx_at_length(
    name: str, credential: str, tmp_path: Path, no_kafka: None
) -> None:
    _fuzz(name, credential, SLOW_EXAMPLES, tmp_path, randomize=True)
