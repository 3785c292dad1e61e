"""Feature group definitions and record validation: what is accepted, what is refused and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from cairn.contracts.events import FeatureDefinition, FeatureGroupCreationRequested
from cairn.errors import InvalidInput

from services.featurestore.domain import (
    FeatureGroup,
    InvalidRecord,
    RecordValidator,
    offline_table,
    parse_feature_refs,
    record_from_sagemaker,
)


def request(**overrides: Any) -> FeatureGroupCreationRequested:
    fields: dict[str, Any] = {
        "feature_group_name": "customers",
        "record_identifier_feature_name": "customer_id",
        "event_time_feature_name": "event_time",
        "feature_definitions": [
            FeatureDefinition(name="customer_id", type="String"),
            FeatureDefinition(name="event_time", type="Fractional"),
            FeatureDefinition(name="age", type="Integral"),
            FeatureDefinition(name="balance", type="Fractional"),
            FeatureDefinition(name="vip", type="Boolean"),
            FeatureDefinition(name="signup", type="Timestamp"),
            FeatureDefinition(name="segment", type="String"),
        ],
        "ttl_s": 3600.0,
    }
    return FeatureGroupCreationRequested(**(fields | overrides))


@pytest.fixture
def validator() -> RecordValidator:
    return RecordValidator(FeatureGroup.from_request(request()))


def test_typed_and_string_values_are_coerced_to_the_declared_types(
    validator: RecordValidator,
) -> None:
    typed = validator.validate(
        {"customer_id": "c1", "event_time": 1_700_000_000, "age": 42, "balance": 10, "vip": True}
    )
    as_strings = validator.validate(
        {
            "customer_id": "c1",
            "event_time": "1700000000.0",
            "age": "42",
            "balance": "10.0",
            "vip": "true",
            "signup": "2020-01-01T00:00:00",
        }
    )
    assert typed.record_id == as_strings.record_id == "c1"
    assert (
        typed.event_time == as_strings.event_time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    )
    assert as_strings.values["age"] == 42 and as_strings.values["balance"] == 10.0
    assert as_strings.values["vip"] is True
    assert as_strings.values["signup"] == "2020-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"customer_id": "c1", "event_time": 1.0, "age": "forty"}, "'age' must be Integral"),
        ({"customer_id": "c1", "event_time": 1.0, "age": 4.5}, "not a whole number"),
        ({"customer_id": "c1", "event_time": 1.0, "balance": True}, "'balance' must be Fractional"),
        ({"customer_id": "c1", "event_time": 1.0, "vip": "maybe"}, "'vip' must be Boolean"),
        ({"customer_id": "c1", "event_time": 1.0, "segment": 3}, "'segment' must be String"),
        ({"customer_id": "c1", "event_time": "yesterday"}, "'event_time' must be Fractional"),
        ({"customer_id": "c1", "event_time": 1.0, "colour": "red"}, "'colour' is not defined"),
        ({"event_time": 1.0, "age": 3}, "'customer_id' is missing"),
        ({"customer_id": "c1", "age": 3}, "'event_time' is missing"),
        ({"customer_id": "c1", "event_time": None}, "'event_time' is missing"),
        (["c1", 1.0], "must be an object"),
    ],
)
def test_records_breaking_the_schema_are_refused_with_the_reason(
    validator: RecordValidator, record: Any, reason: str
) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        validator.validate(record)


def test_a_batch_keeps_valid_records_and_names_each_invalid_one(
    validator: RecordValidator,
) -> None:
    valid, rejected = validator.split(
        [
            {"customer_id": "a", "event_time": 1.0},
            {"customer_id": "b", "event_time": 2.0, "age": "x"},
            {"customer_id": "c", "event_time": 3.0, "age": None},
        ]
    )
    assert [record.record_id for record in valid] == ["a", "c"]
    assert [(r.index, "'age'" in r.reason) for r in rejected] == [(1, True)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"record_identifier_feature_name": "nope"}, "not among the feature definitions"),
        ({"event_time_feature_name": "vip"}, "event time feature 'vip' must be one of"),
        ({"record_identifier_feature_name": "balance"}, "record identifier feature 'balance'"),
        ({"online_enabled": False, "offline_enabled": False}, "needs the online store"),
        (
            {
                "feature_definitions": [
                    FeatureDefinition(name="customer_id", type="String"),
                    FeatureDefinition(name="event_time", type="Fractional"),
                    FeatureDefinition(name="event_time", type="String"),
                ]
            },
            "defined twice",
        ),
    ],
)
def test_bad_group_definitions_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        FeatureGroup.from_request(request(**overrides))


def test_same_definition_ignores_creation_time_but_not_ttl() -> None:
    first = FeatureGroup.from_request(request())
    again = FeatureGroup.from_request(request())
    assert first.same_definition(again)
    assert not first.same_definition(FeatureGroup.from_request(request(ttl_s=60.0)))


def test_sagemaker_put_record_body_is_read_as_strings() -> None:
    body = {
        "Record": [
            {"FeatureName": "customer_id", "ValueAsString": "c9"},
            {"FeatureName": "age", "ValueAsString": "7"},
        ]
    }
    assert record_from_sagemaker(body) == {"customer_id": "c9", "age": "7"}
    assert record_from_sagemaker({"record": {"age": 7}}) == {"age": 7}
    with pytest.raises(InvalidRecord):
        record_from_sagemaker({"Record": "c9"})


def test_offline_rows_are_typed_with_a_utc_event_time(validator: RecordValidator) -> None:
    records = [
        validator.validate({"customer_id": "a", "event_time": 0, "age": 1, "signup": 0}),
        validator.validate({"customer_id": "b", "event_time": 60}),
    ]
    table = offline_table(validator.group, records)
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("age").type == pa.int64()
    assert table.column("age").to_pylist() == [1, None]
    assert table.column("signup").to_pylist()[0] == datetime(1970, 1, 1, tzinfo=UTC)


def test_feature_references_merge_per_group_and_carry_the_ttl() -> None:
    group = FeatureGroup.from_request(request())
    refs = parse_feature_refs(["customers:age", "customers:vip"], {"customers": group})
    assert [(r.group, r.features, r.ttl_s) for r in refs] == [("customers", ("age", "vip"), 3600.0)]
    everything = parse_feature_refs(["customers:age", "customers"], {"customers": group})
    assert everything[0].features == ("age", "balance", "vip", "signup", "segment")
    with pytest.raises(InvalidInput, match="no feature 'height'"):
        parse_feature_refs(["customers:height"], {"customers": group})
    with pytest.raises(InvalidInput, match="no feature group 'orders'"):
        parse_feature_refs(["orders"], {"customers": group})
