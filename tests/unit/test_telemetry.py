"""JSON logs carry the service, the workflow's correlation id and the active trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from cairn.settings import CairnSettings
from cairn.telemetry import correlation_context, current_correlation_id, get_tracer, setup_telemetry


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _settings(**overrides: object) -> CairnSettings:
    values: dict[str, object] = {"otel_exporter": "none", "log_json": True, "log_level": "INFO"}
    return CairnSettings(**{**values, **overrides})


def _json_lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_log_line_carries_correlation_id_and_trace(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_telemetry("trainer", _settings())
    logger = logging.getLogger("cairn.test.trainer")
    with get_tracer("test").start_as_current_span("handle") as span:
        with correlation_context("corr-42"):
            logger.info("trained %s", "job-1", extra={"job_name": "job-1"})
        logger.info("after the event")
    trace_id = format(span.get_span_context().trace_id, "032x")

    inside, after = _json_lines(capsys.readouterr().err)[-2:]
    assert inside["message"] == "trained job-1"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "cairn.test.trainer"
    assert inside["service"] == "trainer"
    assert inside["correlation_id"] == "corr-42"
    assert inside["trace_id"] == trace_id
    assert inside["job_name"] == "job-1"
    assert str(inside["time"]).endswith("+00:00")
    assert after["correlation_id"] is None
    assert current_correlation_id() is None


def test_logged_exception_keeps_its_traceback(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_telemetry("registry", _settings())
    try:
        raise ValueError("bad version")
    except ValueError:
        logging.getLogger("cairn.test").exception("approval failed")

    line = _json_lines(capsys.readouterr().err)[-1]
    assert line["message"] == "approval failed"
    assert "ValueError: bad version" in str(line["exception"])
    assert "trace_id" not in line


def test_setup_twice_logs_each_line_once_at_the_new_level(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_telemetry("deployer", _settings())
    setup_telemetry("deployer", _settings(log_level="WARNING"))
    logger = logging.getLogger("cairn.test.deployer")
    logger.info("hidden at WARNING")
    logger.warning("shown once")

    lines = _json_lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == ["shown once"]


def test_text_logs_still_carry_the_correlation_id(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_telemetry("gateway", _settings(log_json=False))
    with correlation_context("corr-text"):
        logging.getLogger("cairn.test").warning("slow model")

    last = capsys.readouterr().err.splitlines()[-1]
    assert "[gateway corr-text] slow model" in last
