"""Feature groups and record validation: pure rules, no I/O.

A record is checked against its group's typed feature definitions before it reaches either store.
Values may come typed (JSON numbers, booleans) or as strings (SageMaker's `ValueAsString`); both
are coerced to the declared type, so the online store holds typed JSON and the offline store typed
Parquet columns. Features absent from a record are stored as null, as in SageMaker; the record
identifier and the event time are required.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
from cairn.contracts.events import (
    FeatureDefinition,
    FeatureGroupCreated,
    FeatureGroupCreationRequested,
)
from cairn.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, Field

from services.featurestore.offline import FeatureRef
from services.featurestore.offline.pit import RESERVED_COLS

FeatureType = Literal["Integral", "Fractional", "String", "Boolean", "Timestamp"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RECORD_ID_TYPES = frozenset({"Integral", "String"})
_EVENT_TIME_TYPES = frozenset({"Integral", "Fractional", "String", "Timestamp"})
_ARROW_TYPES: dict[str, pa.DataType] = {
    "Integral": pa.int64(),
    "Fractional": pa.float64(),
    "String": pa.string(),
    "Boolean": pa.bool_(),
    "Timestamp": pa.timestamp("us", tz="UTC"),
}
MAX_REASONS = 20


class FeatureGroup(BaseModel):
    """A feature group as stored at `featurestore/groups/<name>.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    feature_group_name: str
    record_identifier_feature_name: str
    event_time_feature_name: str
    feature_definitions: list[FeatureDefinition]
    online_enabled: bool = True
    offline_enabled: bool = True
    ttl_s: float | None = None
    description: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_request(cls, request: FeatureGroupCreationRequested) -> FeatureGroup:
        """A new group from its creation request; `InvalidInput` when the definition is wrong."""
        group = cls(**request.model_dump())
        check_definition(group)
        return group

    def same_definition(self, other: FeatureGroup) -> bool:
        """Whether two groups define the same thing (creation time aside)."""
        return self.model_dump(exclude={"created_at"}) == other.model_dump(exclude={"created_at"})

    def types(self) -> dict[str, str]:
        return {definition.name: definition.type for definition in self.feature_definitions}

    def value_features(self) -> list[str]:
        """Feature names other than the record identifier and event time, in definition order."""
        keys = {self.record_identifier_feature_name, self.event_time_feature_name}
        return [d.name for d in self.feature_definitions if d.name not in keys]

    def created_event(self) -> FeatureGroupCreated:
        return FeatureGroupCreated(
            **self.model_dump(exclude={"created_at", "description"}),
        )

    def arrow_schema(self) -> pa.Schema:
        """Offline columns: declared types, with the event time always a UTC timestamp."""
        fields = []
        for definition in self.feature_definitions:
            arrow_type = _ARROW_TYPES[definition.type]
            if definition.name == self.event_time_feature_name:
                arrow_type = _ARROW_TYPES["Timestamp"]
            fields.append(pa.field(definition.name, arrow_type))
        return pa.schema(fields)


def check_feature_names(group: FeatureGroup, names: Sequence[str] | None) -> None:
    """Refuse a read naming features the group does not define, rather than leave them out."""
    if names is None:
        return
    defined = group.types()
    if unknown := [name for name in names if name not in defined]:
        raise InvalidInput(
            f"feature group {group.feature_group_name!r} has no feature "
            + ", ".join(repr(name) for name in unknown),
            feature_group_name=group.feature_group_name,
            unknown_features=unknown,
        )


def check_definition(group: FeatureGroup) -> None:
    """Reject definitions that SageMaker would refuse or that the stores cannot hold."""
    names = [definition.name for definition in group.feature_definitions]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise InvalidInput(f"features defined twice: {duplicated}")
    if reserved := sorted(RESERVED_COLS & set(names)):
        raise InvalidInput(f"feature names {reserved} are reserved")
    types = group.types()
    record_id, event_time = group.record_identifier_feature_name, group.event_time_feature_name
    if record_id == event_time:
        raise InvalidInput("the record identifier and event time must be different features")
    for role, name, allowed in (
        ("record identifier", record_id, _RECORD_ID_TYPES),
        ("event time", event_time, _EVENT_TIME_TYPES),
    ):
        if name not in types:
            raise InvalidInput(f"{role} feature {name!r} is not among the feature definitions")
        if types[name] not in allowed:
            raise InvalidInput(
                f"{role} feature {name!r} must be one of {sorted(allowed)}, not {types[name]}"
            )
    if not (group.online_enabled or group.offline_enabled):
        raise InvalidInput("a feature group needs the online store, the offline store or both")


# Values ----------------------------------------------------------------------------------------


def parse_timestamp(value: Any) -> datetime:
    """A UTC datetime from ISO 8601 text, epoch seconds or a datetime (naive means UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("not a finite number of seconds")
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"{type(value).__name__} is not a time")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _integral(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not Integral")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        value = int(value)
    elif isinstance(value, str):
        value = int(value.strip())
    elif not isinstance(value, int):
        raise ValueError(f"{type(value).__name__} is not Integral")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} does not fit in 64 bits")
    return int(value)


def _fractional(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not Fractional")
    if isinstance(value, str):
        value = float(value.strip())
    elif not isinstance(value, int | float):
        raise ValueError(f"{type(value).__name__} is not Fractional")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{type(value).__name__} is not String")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{value!r} is not Boolean (true or false)")


def _timestamp(value: Any) -> str:
    return parse_timestamp(value).isoformat()


_COERCE: dict[str, Callable[[Any], Any]] = {
    "Integral": _integral,
    "Fractional": _fractional,
    "String": _string,
    "Boolean": _boolean,
    "Timestamp": _timestamp,
}


# Records ---------------------------------------------------------------------------------------


class InvalidRecord(InvalidInput):
    """A record breaks its feature group's schema."""

    code = "invalid_record"


@dataclass(frozen=True, slots=True)
class ValidRecord:
    """A record that passed validation: its key, its event time and its typed values."""

    record_id: str
    event_time: datetime
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the record at `index` of a batch was refused."""

    index: int
    reason: str


class RecordValidator:
    """Checks records of one group; built once per group and reused for every record."""

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self._coerce = {name: _COERCE[kind] for name, kind in group.types().items()}
        self._types = group.types()
        self._id_name = group.record_identifier_feature_name
        self._time_name = group.event_time_feature_name

    def validate(self, raw: Any) -> ValidRecord:
        """The coerced record; `InvalidRecord` naming the first problem otherwise."""
        if not isinstance(raw, Mapping):
            raise InvalidRecord(f"a record must be an object, not {type(raw).__name__}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            coerce = self._coerce.get(name)
            if coerce is None:
                raise InvalidRecord(
                    f"feature {name!r} is not defined in {self.group.feature_group_name!r}",
                    feature=str(name),
                )
            if value is None:
                values[name] = None
                continue
            try:
                values[name] = coerce(value)
            except (ValueError, TypeError, OverflowError) as exc:
                raise InvalidRecord(
                    f"feature {name!r} must be {self._types[name]}: {exc}", feature=name
                ) from None
        for name in (self._id_name, self._time_name):
            if values.get(name) is None:
                raise InvalidRecord(f"required feature {name!r} is missing", feature=name)
        return ValidRecord(
            record_id=str(values[self._id_name]),
            event_time=parse_timestamp(values[self._time_name]),
            values=values,
        )

    def typed_id(self, record_id: str) -> Any:
        """A record identifier from a URL, as the offline column's type holds it."""
        try:
            return self._coerce[self._id_name](record_id)
        except (ValueError, TypeError) as exc:
            raise InvalidRecord(f"record identifier {record_id!r}: {exc}") from None

    def split(self, raws: Iterable[Any]) -> tuple[list[ValidRecord], list[Rejection]]:
        """Valid records in order, and the reason for each invalid one (by position)."""
        valid: list[ValidRecord] = []
        rejected: list[Rejection] = []
        for index, raw in enumerate(raws):
            try:
                valid.append(self.validate(raw))
            except InvalidRecord as exc:
                rejected.append(Rejection(index, exc.message))
        return valid, rejected


def record_from_sagemaker(body: Mapping[str, Any]) -> dict[str, Any]:
    """`{"Record": [{"FeatureName", "ValueAsString"}]}` (SageMaker) or `{"record": {...}}`."""
    if "Record" in body:
        entries = body["Record"]
        if not isinstance(entries, list):
            raise InvalidRecord("Record must be a list of {FeatureName, ValueAsString}")
        record: dict[str, Any] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("FeatureName"), str):
                raise InvalidRecord("each Record entry needs a FeatureName and a ValueAsString")
            record[entry["FeatureName"]] = entry.get("ValueAsString")
        return record
    if isinstance(body.get("record"), Mapping):
        return dict(body["record"])
    raise InvalidRecord('the body needs "Record" (SageMaker) or "record" (an object)')


def offline_table(group: FeatureGroup, records: Sequence[ValidRecord]) -> pa.Table:
    """Typed Parquet-ready columns for the offline store; absent features are null."""
    schema = group.arrow_schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    timestamps = {n for n, kind in group.types().items() if kind == "Timestamp"}
    for record in records:
        values = record.values
        for name, column in columns.items():
            value = values.get(name)
            if name == group.event_time_feature_name:
                value = record.event_time
            elif value is not None and name in timestamps:
                value = datetime.fromisoformat(value)
            column.append(value)
    return pa.table(columns, schema=schema)


# Training sets ---------------------------------------------------------------------------------


def parse_feature_refs(
    references: Sequence[str], groups: Mapping[str, FeatureGroup]
) -> list[FeatureRef]:
    """`group` (every feature) or `group:feature` references, merged per group, in first-seen order.

    Each group's TTL applies in the join, so an expired value is null in the training set as it is
    online.
    """
    wanted: dict[str, list[str] | None] = {}
    for reference in references:
        group_name, _, feature = reference.partition(":")
        group = groups.get(group_name)
        if group is None:
            raise InvalidInput(f"no feature group {group_name!r}", reference=reference)
        if feature and feature not in group.value_features():
            raise InvalidInput(
                f"{group_name!r} has no feature {feature!r} to take", reference=reference
            )
        current = wanted.get(group_name, [])
        if not feature or current is None:
            wanted[group_name] = None
        elif feature not in current:
            wanted[group_name] = [*current, feature]
    refs = []
    for group_name, features in wanted.items():
        group = groups[group_name]
        chosen = tuple(group.value_features() if features is None else features)
        refs.append(FeatureRef(group_name, chosen, ttl_s=group.ttl_s))
    return refs


def json_value(value: Any) -> Any:
    """A value from Arrow as JSON: times as ISO 8601 text, everything else unchanged."""
    return value.isoformat() if isinstance(value, datetime) else value
