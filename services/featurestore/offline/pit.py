"""Point-in-time joins and time travel over local Parquet files, in DuckDB.

The SQL here never sees the object store: `store.py` lists a group's immutable files, brings them to
local paths and hands them over as `GroupFiles`. Rules shared by every query:

- a feature row applies to an entity row when its event time is <= the entity timestamp (and, with a
  TTL, >= timestamp - TTL; with `as_of_known_time`, its write time is <= the entity timestamp too);
- among rows with the same record id and event time the latest `_write_time` wins, then the
  later file name (two processes stamping one microsecond); a write holds one row per id and event
  time, its last (ties.py), so every query picks the same row;
- a tombstone (`_deleted`) as the winning row yields nulls: tombstones are written with no feature
  columns, so their features read as null with no check per row;
- entity rows with no row at all are kept with nulls, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cairn.errors import InvalidInput

WRITE_TIME_COL = "_write_time"
DELETED_COL = "_deleted"
RESERVED_COLS = frozenset({WRITE_TIME_COL, DELETED_COL})
EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")

# Event times must fit nanoseconds since the epoch in a BIGINT (the fast ASOF key).
MIN_EVENT_TIME = datetime(1678, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2262, 1, 1, tzinfo=UTC)
_MAX_NS_TIME = "TIMESTAMPTZ '2262-01-01 00:00:00+00'"
_NS_PER_US = 1000
_MAX_RANKED_FILES = 256

_ROW_COL = "__cairn_row"
# The scanned file's path, under a name no feature can have (DuckDB's default is "filename").
FILE_COL = "__cairn_file"
_ENTITY_ID = "__cairn_id"
_ENTITY_TS = "__cairn_ts"


@dataclass(frozen=True)
class FeatureRef:
    """Which features of a feature group a training set takes, and how.

    `features=None` takes every feature column. Output columns are named `<column_prefix><feature>`;
    the prefix defaults to `<group>__`. `ttl_s` ignores rows older than the entity time minus it.
    """

    group: str
    features: tuple[str, ...] | None = None
    ttl_s: float | None = None
    column_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise InvalidInput(f"ttl_s must be positive, got {self.ttl_s}", group=self.group)

    def output_name(self, feature: str) -> str:
        prefix = f"{self.group}__" if self.column_prefix is None else self.column_prefix
        return f"{prefix}{feature}"


@dataclass(frozen=True)
class GroupFiles:
    """One group as the query sees it: its key columns, feature columns and local Parquet files."""

    record_id_col: str
    event_time_col: str
    feature_cols: tuple[str, ...]
    paths: tuple[Path, ...]
    absent_cols: frozenset[str] = frozenset()  # requested, but in none of these files: all null
    # Files sharing an event-date partition, ranked by write time (rank 0 left out): the tie-break.
    tie_ranks: Mapping[Path, int] = field(default_factory=dict)

    @property
    def present_cols(self) -> tuple[str, ...]:
        return tuple(name for name in self.feature_cols if name not in self.absent_cols)


def ident(name: str) -> str:
    """A SQL identifier, quoted so any column name is safe."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parquet_scan(paths: Sequence[Path], *, filename: bool = False) -> str:
    """`read_parquet` over exactly these files; union_by_name lets later appends add columns."""
    files = ", ".join(_literal(str(path)) for path in paths)
    extra = f", filename = {_literal(FILE_COL)}" if filename else ""
    return f"read_parquet([{files}], union_by_name = true, hive_partitioning = false{extra})"


def connect() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB whose timestamps with time zone come back in UTC."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    return con


def parquet_columns(con: duckdb.DuckDBPyConnection, paths: Sequence[Path]) -> list[str]:
    """Column names of the union of these files' schemas (reads footers only)."""
    return [
        str(row[0])
        for row in con.execute(f"DESCRIBE SELECT * FROM {parquet_scan(paths)}").fetchall()
    ]


def as_utc_timestamps(column: pa.ChunkedArray | pa.Array, what: str) -> pa.ChunkedArray | pa.Array:
    """Timestamps as microseconds in UTC; naive values are taken to be UTC already."""
    if pa.types.is_date(column.type):
        column = column.cast(pa.timestamp("us"))
    if not pa.types.is_timestamp(column.type):
        raise InvalidInput(f"{what} must hold timestamps, not {column.type}")
    if column.type.tz is None:
        column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    # Sub-microsecond precision is dropped: Parquet and DuckDB keep microseconds.
    return pc.cast(column, EVENT_TIME_TYPE, safe=False)


def file_write_time(path: Path) -> datetime:
    """When the file was appended: every row of a file carries the same `_write_time`."""
    metadata = pq.read_metadata(path)
    column = metadata.schema.to_arrow_schema().get_field_index(WRITE_TIME_COL)
    if metadata.num_row_groups and column >= 0:
        stats = metadata.row_group(0).column(column).statistics
        if stats is not None and stats.has_min_max and isinstance(stats.max, datetime):
            return as_utc(stats.max)
    values = pq.read_table(path, columns=[WRITE_TIME_COL]).column(0)
    latest = pc.max(values).as_py()
    if not isinstance(latest, datetime):
        raise InvalidInput(f"offline file {path.name} has no {WRITE_TIME_COL}")
    return as_utc(latest)


def as_utc(moment: datetime) -> datetime:
    """Aware and in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row_numbers(con: duckdb.DuckDBPyConnection, count: int) -> pa.ChunkedArray:
    return con.sql(f"SELECT range AS r FROM range({count})").to_arrow_table().column(0)


def _feature_column(expression: str, ref: FeatureRef, group: GroupFiles, name: str) -> str:
    value = "NULL" if name in group.absent_cols else expression
    return f"{value} AS {ident(ref.output_name(name))}"


def _asof_order_keys(group: GroupFiles) -> tuple[str, str, bool]:
    """The ASOF inequality's two sides (feature row, entity row), and whether filenames are needed.

    Fast form, one BIGINT per row: event time in nanoseconds plus the file's tie rank (0-999), its
    rank by write time among the files of its event-date partition. Event times are whole
    microseconds, so the rank only ever orders rows with equal event times; rows with equal event
    times are in one partition, so the rank orders them by write time. The probe adds 999 ns.
    With too many ranked files, a (event time, write time) row key does the same, ~25% slower.
    """
    et = ident(group.event_time_col)
    ranks = group.tie_ranks
    if len(ranks) > _MAX_RANKED_FILES or any(rank >= _NS_PER_US for rank in ranks.values()):
        return (
            f"row({et}, {ident(WRITE_TIME_COL)})",
            f"row(e.{_ENTITY_TS}, TIMESTAMPTZ 'infinity')",
            False,
        )
    # Not least(): it skips NULLs, and a missing entity time must match nothing, not the latest.
    ts = f"e.{_ENTITY_TS}"
    clamped = f"CASE WHEN {ts} > {_MAX_NS_TIME} THEN {_MAX_NS_TIME} ELSE {ts} END"
    probe = f"epoch_ns({clamped}) + {_NS_PER_US - 1}"
    if not ranks:
        return f"epoch_ns({et})", probe, False
    # filename is constant per scanned chunk, so this CASE runs once per chunk, not per row.
    cases = " ".join(f"WHEN {_literal(str(path))} THEN {rank}" for path, rank in ranks.items())
    return f"epoch_ns({et}) + CASE {FILE_COL} {cases} ELSE 0 END", probe, True


def _asof_select(index: int, ref: FeatureRef, group: GroupFiles) -> tuple[str, list[str]]:
    """ASOF LEFT JOIN of one group: per entity row, its latest (event time, write time) row."""
    alias = f"g{index}"
    features = ", ".join(ident(name) for name in group.present_cols)
    row_key, probe_key, with_filename = _asof_order_keys(group)
    source = (
        f"SELECT {ident(group.record_id_col)} AS k, {row_key} AS ord, "
        f"{ident(group.event_time_col)} AS et"
        f"{', ' + features if features else ''} "
        f"FROM {parquet_scan(group.paths, filename=with_filename)}"
    )
    join = (
        f"ASOF LEFT JOIN ({source}) {alias} ON e.{_ENTITY_ID} = {alias}.k "
        f"AND {probe_key} >= {alias}.ord"
    )
    columns = []
    for name in group.feature_cols:
        value = f"{alias}.{ident(name)}"
        if ref.ttl_s is not None:
            # The latest row is older than the TTL, so every row is: no value.
            too_old = f"{alias}.et < e.{_ENTITY_TS} - to_microseconds({round(ref.ttl_s * 1e6)})"
            value = f"CASE WHEN {too_old} THEN NULL ELSE {value} END"
        columns.append(_feature_column(value, ref, group, name))
    return join, columns


def _known_time_cte(index: int, ref: FeatureRef, group: GroupFiles) -> tuple[str, str, list[str]]:
    """Range join of one group restricted to rows written by the entity time, latest row kept."""
    alias = f"g{index}"
    et, wt = ident(group.event_time_col), ident(WRITE_TIME_COL)
    conditions = [
        f"e.{_ENTITY_ID} = f.{ident(group.record_id_col)}",
        f"f.{et} <= e.{_ENTITY_TS}",
        f"f.{wt} <= e.{_ENTITY_TS}",
    ]
    if ref.ttl_s is not None:
        conditions.append(f"f.{et} >= e.{_ENTITY_TS} - to_microseconds({round(ref.ttl_s * 1e6)})")
    features = "".join(f", f.{ident(name)}" for name in group.present_cols)
    cte = (
        f"{alias} AS (SELECT e.{_ROW_COL}{features} "
        f"FROM entity e JOIN {parquet_scan(group.paths, filename=True)} f "
        f"ON {' AND '.join(conditions)} "
        f"QUALIFY row_number() OVER (PARTITION BY e.{_ROW_COL} "
        f"ORDER BY f.{et} DESC, f.{wt} DESC, f.{FILE_COL} DESC) = 1)"
    )
    join = f"LEFT JOIN {alias} ON {alias}.{_ROW_COL} = e.{_ROW_COL}"
    columns = [
        _feature_column(f"{alias}.{ident(name)}", ref, group, name) for name in group.feature_cols
    ]
    return cte, join, columns


def point_in_time_join(
    entity: pa.Table,
    entity_id_col: str,
    entity_time_col: str,
    groups: Sequence[tuple[FeatureRef, GroupFiles]],
    *,
    as_of_known_time: bool = False,
) -> pa.Table:
    """The entity table, in its order and with all its columns, plus each group's features.

    Groups with no files contribute all-null columns.
    """
    for name in (entity_id_col, entity_time_col):
        if name not in entity.column_names:
            raise InvalidInput(f"entity table has no column {name!r}")
    timestamps = as_utc_timestamps(
        entity.column(entity_time_col), f"entity column {entity_time_col!r}"
    )
    con = connect()
    try:
        keys = pa.table(
            {
                _ROW_COL: _row_numbers(con, entity.num_rows),
                _ENTITY_ID: entity.column(entity_id_col),
                _ENTITY_TS: timestamps,
            }
        )
        con.register("entity", keys)
        ctes: list[str] = []
        joins: list[str] = []
        columns: list[str] = []
        for index, (ref, group) in enumerate(groups):
            if not group.paths:
                columns += [
                    f"NULL AS {ident(ref.output_name(name))}" for name in group.feature_cols
                ]
            elif as_of_known_time:
                cte, join, cols = _known_time_cte(index, ref, group)
                ctes.append(cte)
                joins.append(join)
                columns += cols
            else:
                join, cols = _asof_select(index, ref, group)
                joins.append(join)
                columns += cols
        if not columns:
            return entity
        with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
        sql = (
            f"{with_clause}SELECT {', '.join(columns)} FROM entity e {' '.join(joins)} "
            f"ORDER BY e.{_ROW_COL}"
        )
        try:
            features = con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidInput(
                f"cannot join the entity table with the feature groups: {exc}"
            ) from exc
    finally:
        con.close()
    result = entity
    for name, column in zip(features.column_names, features.columns, strict=True):
        result = result.append_column(name, column)
    return result


def state_as_of(group: GroupFiles, as_of: datetime, *, as_of_known_time: bool = False) -> pa.Table:
    """Time travel: per record id, the latest live row with event time <= `as_of`, ordered by id."""
    if not group.paths:
        return pa.table({})
    et, wt = ident(group.event_time_col), ident(WRITE_TIME_COL)
    known = f" AND {wt} <= $as_of" if as_of_known_time else ""
    sql = (
        f"SELECT * EXCLUDE ({wt}, {ident(DELETED_COL)}, {FILE_COL}) FROM ("
        f"SELECT * FROM {parquet_scan(group.paths, filename=True)} WHERE {et} <= $as_of{known} "
        f"QUALIFY row_number() OVER (PARTITION BY {ident(group.record_id_col)} "
        f"ORDER BY {et} DESC, {wt} DESC, {FILE_COL} DESC) = 1) "
        f"WHERE NOT {ident(DELETED_COL)} ORDER BY {ident(group.record_id_col)}"
    )
    con = connect()
    try:
        return con.sql(sql, params={"as_of": as_of}).to_arrow_table()
    finally:
        con.close()
