"""The labeling work queue's rules and the consolidation of answers, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cairn.contracts.labeling_events import LabelingJobRequested
from cairn.errors import InvalidInput

from bench.labeling.consolidation import simulate
from services.labeling.consolidate import boxes, classify, multi_label
from services.labeling.domain import (
    AlreadyAnswered,
    Annotation,
    Answer,
    Box,
    Item,
    LeaseExpired,
    Member,
    Workforce,
    check_answer,
    check_request,
    check_submission,
    claim,
    new_queue,
    reconcile,
    record_answer,
    record_skip,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LEASE_S = 60.0


def request(**changes: object) -> LabelingJobRequested:
    base: dict[str, object] = {
        "job_name": "j",
        "dataset_uri": "dataset://d@1",
        "task_type": "text-classification",
        "labels": ["pos", "neg"],
        "workforce_name": "crowd",
        "workers_per_item": 2,
    }
    return LabelingJobRequested.model_validate({**base, **changes})


def workforce(size: int) -> Workforce:
    members = [Member(name=f"m{i}", key_id=f"K{i}") for i in range(size)]
    return Workforce(workforce_name="crowd", members=members)


def items(count: int, scores: list[float] | None = None) -> list[Item]:
    return [Item(item_id=str(i), score=None if scores is None else scores[i]) for i in range(count)]


def test_each_item_goes_to_n_distinct_annotators_and_never_twice_to_one() -> None:
    queue = new_queue("j", 2, items(2), "sequential")
    queue, first, _ = claim(queue, "ann", NOW, LEASE_S)
    queue, again, _ = claim(queue, "ann", NOW, LEASE_S)
    assert first == again == "0", "a held lease is given back, not a second item"
    queue = record_answer(queue, "0", "ann")
    queue, nxt, _ = claim(queue, "ann", NOW, LEASE_S)
    assert nxt == "1"
    queue = record_answer(queue, "1", "ann")
    queue, none, _ = claim(queue, "ann", NOW, LEASE_S)
    assert none is None, "ann answered everything"
    queue, bob_first, _ = claim(queue, "bob", NOW, LEASE_S)
    queue, cy_first, _ = claim(queue, "cy", NOW, LEASE_S)
    assert (bob_first, cy_first) == ("0", "1"), "item 0 is held by bob: cy gets item 1"
    queue = record_answer(queue, "0", "bob")
    assert queue.done("0") and not queue.complete()
    queue, dee, _ = claim(queue, "dee", NOW, LEASE_S)
    assert dee is None, "item 0 has its two answers and item 1 is held"


def test_an_expired_lease_returns_the_item_and_refuses_the_late_answer() -> None:
    queue = new_queue("j", 1, items(1), "sequential")
    queue, taken, _ = claim(queue, "ann", NOW, LEASE_S)
    later = NOW + timedelta(seconds=LEASE_S + 1)
    queue, retaken, _ = claim(queue, "bob", later, LEASE_S)
    assert taken == retaken == "0"
    with pytest.raises(LeaseExpired):
        check_submission(queue, "0", "ann", later)
    check_submission(queue, "0", "bob", later)
    queue = record_answer(queue, "0", "bob")
    with pytest.raises(AlreadyAnswered):
        check_submission(queue, "0", "bob", later)


def test_skip_requeues_for_others_but_not_for_the_skipper() -> None:
    queue = new_queue("j", 1, items(2), "sequential")
    queue, first, _ = claim(queue, "ann", NOW, LEASE_S)
    queue = record_skip(queue, first or "", "ann")
    queue, ann_next, _ = claim(queue, "ann", NOW, LEASE_S)
    queue, bob_next, _ = claim(queue, "bob", NOW, LEASE_S)
    assert (first, ann_next, bob_next) == ("0", "1", "0")


def test_uncertainty_order_offers_the_least_confident_first() -> None:
    queue = new_queue("j", 1, items(4, [0.9, 0.51, 0.99, 0.6]), "uncertainty")
    assert queue.order == ["1", "3", "0", "2"]


def test_reconcile_records_answers_stored_before_a_crash_once() -> None:
    queue = new_queue("j", 2, items(2), "sequential")
    queue, _, _ = claim(queue, "ann", NOW, LEASE_S)
    repaired = reconcile(queue, {"0": {"ann"}, "9": {"ghost"}})
    assert repaired.items["0"].answered == ["ann"] and repaired.items["0"].leases == []
    assert reconcile(repaired, {"0": {"ann"}}) == repaired


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"labels": ["pos", "neg", "pos"]}, "labels"),
        ({"labels": ["pos"]}, "labels"),
        ({"workers_per_item": 4}, "workers_per_item"),
        ({"task_type": "image-classification"}, "image_column"),
        ({"order": "uncertainty"}, "score_column"),
    ],
)
def test_requests_no_item_could_be_labelled_with_are_refused(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_request(request(**changes), workforce(3))
    assert refused.value.details["field"] == field


def test_answers_must_use_the_jobs_labels() -> None:
    with pytest.raises(InvalidInput, match="not in the job's labels"):
        check_answer(request(), Answer(label="meh"))
    with pytest.raises(InvalidInput, match="choose one label"):
        check_answer(request(), Answer())
    boxes_job = request(task_type="bounding-box", labels=["cat"], image_column="img")
    with pytest.raises(InvalidInput, match="'dog'"):
        check_answer(boxes_job, Answer(boxes=[Box(label="dog", x=0, y=0, width=1, height=1)]))
    multi = request(task_type="multi-label", labels=["a", "b"])
    assert check_answer(multi, Answer(labels=["b"], label="a")) == Answer(labels=["b"])


def test_dawid_skene_beats_majority_vote_when_quality_varies() -> None:
    annotations, truth = simulate(400, 3, seed=3)
    results = {method: classify(annotations, method) for method in ("majority-vote", "dawid-skene")}
    scores = {
        method: sum(result.labels[i].label == truth[i] for i in truth) / len(truth)
        for method, result in results.items()
    }
    assert scores["dawid-skene"] > scores["majority-vote"] + 0.05, scores
    quality = results["dawid-skene"].agreement
    assert quality["estimated_accuracy"]["w6"] < 0.4, "the adversarial annotator is found out"
    assert quality["estimated_accuracy"]["w0"] > 0.85


def test_boxes_most_people_drew_are_kept_as_their_mean() -> None:
    def drawn(who: str, *found: Box) -> Annotation:
        return Annotation(job_name="j", item_id="1", annotator=who, boxes=list(found))

    cat = Box(label="cat", x=10, y=10, width=50, height=50)
    shifted = cat.model_copy(update={"x": 14})
    stray = Box(label="cat", x=200, y=200, width=10, height=10)
    result = boxes([drawn("a", cat), drawn("b", shifted, stray), drawn("c")], 0.5)
    consolidated = result.labels["1"]
    assert consolidated.label.count('"label"') == 1 and '"x": 12.0' in consolidated.label
    assert consolidated.annotator_count == 3 and 0 < consolidated.confidence < 1


def test_multi_label_keeps_the_labels_most_people_chose() -> None:
    chosen = [("a", ["x", "y"]), ("b", ["x"]), ("c", ["x", "y"])]
    answers = [Annotation(job_name="j", item_id="1", annotator=w, labels=ls) for w, ls in chosen]
    assert multi_label(answers, ["x", "y", "z"]).labels["1"].label == "x|y"
