"""`cairn trace` building and printing: the causal tree, timings and summaries, without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cairn_cli.trace import (
    TraceEvent,
    build_tree,
    chain_document,
    chain_summary,
    format_delta,
    parse_event,
    render_tree,
    summarize_data,
    walk,
)

T0 = datetime(2026, 11, 3, 12, 0, 0, tzinfo=UTC)


def ev(
    event_id: str,
    type_: str,
    at_s: float,
    cause: str | None = None,
    source: str = "svc",
    **data: Any,
) -> TraceEvent:
    return TraceEvent(
        event_id=event_id,
        type=type_,
        source=source,
        key="k-1",
        occurred_at=T0 + timedelta(seconds=at_s),
        causation_id=cause,
        data=data,
    )


def drift_chain() -> list[TraceEvent]:
    """A retrain chain, given out of order as a multi-topic read would return it."""
    return [
        ev("c", "TrainingJobRequested", 0.5, cause="b", source="monitor", job_name="retrain-1"),
        ev("a", "DriftDetected", 0.0, source="monitor", endpoint_name="credit"),
        ev("e", "TrainingJobCompleted", 4.25, cause="c", source="trainer", job_name="retrain-1"),
        ev("b", "RetrainRequested", 0.2, cause="a", source="monitor"),
        ev("d", "TrainingJobStarted", 0.75, cause="c", source="trainer"),
    ]


def test_tree_follows_causation_and_orders_children_by_time() -> None:
    roots = build_tree(drift_chain())

    shape = [(depth, node.event.type) for depth, node in walk(roots)]
    assert shape == [
        (0, "DriftDetected"),
        (1, "RetrainRequested"),
        (2, "TrainingJobRequested"),
        (3, "TrainingJobStarted"),
        (3, "TrainingJobCompleted"),
    ]


def test_an_event_read_twice_appears_once() -> None:
    events = drift_chain()
    roots = build_tree([*events, events[2]])

    assert [node.event.event_id for _, node in walk(roots)].count("e") == 1
    assert chain_summary([*events, events[2]]).startswith("5 events from 2 sources")


def test_an_event_whose_cause_is_outside_the_chain_is_a_root_that_says_so() -> None:
    events = [
        ev("x", "ModelApprovalChanged", 1.0, cause="0123456789-outside"),
        ev("y", "DeploymentRequested", 2.0, cause="x"),
    ]
    lines = render_tree(build_tree(events))

    assert lines[0].startswith("ModelApprovalChanged")
    assert "caused by 01234567, not in this chain" in lines[0]
    assert lines[1].startswith("└─ DeploymentRequested")


def test_a_causation_cycle_loses_no_event() -> None:
    events = [ev("p", "A", 0.0, cause="q"), ev("q", "B", 1.0, cause="p")]

    printed = [node.event.event_id for _, node in walk(build_tree(events))]

    assert sorted(printed) == ["p", "q"]


def test_render_draws_branches_times_deltas_and_data() -> None:
    lines = render_tree(build_tree(drift_chain()))

    assert lines == [
        "DriftDetected  [monitor]  key=k-1  12:00:00.000  +0.000s  endpoint_name=credit",
        "└─ RetrainRequested  [monitor]  key=k-1  12:00:00.200  +0.200s",
        "   └─ TrainingJobRequested  [monitor]  key=k-1  12:00:00.500  +0.500s  job_name=retrain-1",
        "      ├─ TrainingJobStarted  [trainer]  key=k-1  12:00:00.750  +0.750s",
        "      └─ TrainingJobCompleted  [trainer]  key=k-1  12:00:04.250  +4.250s  "
        "job_name=retrain-1",
    ]
    assert "in 4.250s" in chain_summary(drift_chain())


def test_sibling_subtrees_keep_their_vertical_rule() -> None:
    events = [
        ev("r", "Root", 0.0),
        ev("c1", "First", 1.0, cause="r"),
        ev("g1", "Grandchild", 1.5, cause="c1"),
        ev("c2", "Second", 2.0, cause="r"),
    ]
    lines = render_tree(build_tree(events))

    assert [line.split("  [")[0] for line in lines] == [
        "Root",
        "├─ First",
        "│  └─ Grandchild",
        "└─ Second",
    ]


def test_json_document_nests_children_and_gives_offsets_and_duration() -> None:
    document = chain_document("wf-1", build_tree(drift_chain()))

    assert document["events"] == 5
    assert document["duration_s"] == 4.25
    root = document["tree"][0]
    assert root["type"] == "DriftDetected" and root["offset_s"] == 0.0
    job = root["children"][0]["children"][0]
    assert [child["offset_s"] for child in job["children"]] == [0.75, 4.25]
    json.dumps(document)  # everything in it is JSON-ready


def test_deltas_read_well_from_milliseconds_to_hours() -> None:
    assert format_delta(0.1234) == "+0.123s"
    assert format_delta(123.44) == "+2m03.4s"
    assert format_delta(3723.0) == "+1h02m03s"


def test_summary_shows_scalars_sizes_and_is_cut_to_width() -> None:
    summary = summarize_data(
        {"job": "j-1", "metrics": {"auc": 0.9, "f1": 0.8}, "features": ["a", "b", "c"], "p": 0.0312}
    )
    assert summary == "job=j-1, metrics={2 fields}, features=[3 items], p=0.0312"
    long = summarize_data({f"field_{i}": "x" * 20 for i in range(10)}, width=50)
    assert len(long) == 50 and long.endswith("…")


def test_parse_keeps_only_the_wanted_correlation_id() -> None:
    envelope = {
        "event_id": "e-1",
        "type": "TrainingJobStarted",
        "occurred_at": "2026-11-03T12:00:00.5Z",
        "source": "trainer",
        "correlation_id": "wf-1",
        "causation_id": "e-0",
        "schema_version": 1,
        "data": {"job_name": "j"},
    }
    value = json.dumps(envelope).encode()

    event = parse_event(value, "wf-1", topic="t", partition=1, offset=7, key="j")
    assert event is not None
    assert (event.causation_id, event.offset, event.occurred_at) == (
        "e-0",
        7,
        T0 + timedelta(seconds=0.5),
    )
    assert parse_event(value, "wf-2") is None
    # The id appearing only in the data is not the envelope's correlation id.
    other = dict(envelope, correlation_id="wf-9", data={"note": "wf-1"})
    assert parse_event(json.dumps(other).encode(), "wf-1") is None
    assert parse_event(b"not json wf-1", "wf-1") is None
