"""Point-in-time training set: Cairn's `build_training_set` against a bare DuckDB ASOF JOIN.

Generates (seeded) N feature groups of `ids x timestamps` rows with 4 float features each, written
through `OfflineStore.append` to a local store (Parquet partitioned by event date), and an entity
table of ids, timestamps and a label. Entity times start 4.5 days into the feature history, so about
20% of entity rows have no earlier row in at least one group (kept with nulls by both joins).
Both joins read the same files; the values must be identical. The same rows also go to Feast's
local file offline store (`get_historical_features`, run once in its own venv, bench/.venv-feast,
created on first use by bench/feast/runner.py); its values must match Cairn's on the rows it
returns, and the rows it drops are counted. Run:

    .venv/bin/python bench/pit_join.py [--entity-rows 1000000] [--ids 200000] [--no-feast]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from cairn.store import LocalObjectStore

from services.featurestore.offline import FeatureRef, OfflineStore

sys.path.insert(0, str(Path(__file__).resolve().parent / "feast"))
import runner as feast_runner  # bench/feast is not a package

HISTORY_DAYS = 30
ENTITY_OFFSET_HOURS = 108  # 4.5 days: ~20% of entity rows predate some group's history
T0 = "TIMESTAMPTZ '2026-01-01 00:00:00+00'"
US_PER_DAY = 86_400 * 1_000_000
HISTORY_START = datetime(2026, 1, 1, tzinfo=UTC)


def feature_rows(
    con: duckdb.DuckDBPyConnection, group: int, ids: int, per_id: int, seed: int
) -> pa.Table:
    """ids x per_id rows, event times uniform over the history, 4 float features (hash-seeded)."""
    span = HISTORY_DAYS * US_PER_DAY
    event_time = f"{T0} + to_microseconds((hash(i, {group}, {seed}, 'ts') % {span})::BIGINT)"
    floats = ", ".join(f"(hash(i, {group}, {seed}, {k}) % 1000000) / 1e6 AS f{k}" for k in range(4))
    return con.sql(
        f"""SELECT (i // {per_id})::BIGINT AS id, {event_time} AS event_time, {floats}
            FROM range({ids * per_id}) t(i)"""
    ).to_arrow_table()


def entity_rows(con: duckdb.DuckDBPyConnection, rows: int, ids: int, seed: int) -> pa.Table:
    span = HISTORY_DAYS * US_PER_DAY
    return con.sql(
        f"""SELECT (hash(i, {seed}, 'id') % {ids})::BIGINT AS id,
               {T0} + INTERVAL {ENTITY_OFFSET_HOURS} HOUR
                 + to_microseconds((hash(i, {seed}, 'ts') % {span})::BIGINT) AS ts,
               (hash(i, {seed}, 'label') % 2)::INTEGER AS label
            FROM range({rows}) t(i)"""
    ).to_arrow_table()


def bare_asof_join(entity: pa.Table, root: Path, groups: list[str], *, minimal: bool) -> pa.Table:
    """What a user would write by hand: chained ASOF LEFT JOINs over the group folders.

    The default keeps the entity columns and order (a usable training set); `minimal` returns only
    the feature columns, unordered, as the floor for any join over these files.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.sql(f"SELECT range AS r FROM range({entity.num_rows})").to_arrow_table().column(0)
    con.register("entity", entity.append_column("_row", rows))
    joins = " ".join(
        f"ASOF LEFT JOIN read_parquet('{root}/offline/{g}/*/*.parquet') {g} "
        f"ON e.id = {g}.id AND e.ts >= {g}.event_time"
        for g in groups
    )
    columns = ", ".join(f"{g}.f{k} AS {g}__f{k}" for g in groups for k in range(4))
    if minimal:
        sql = f"SELECT e._row, {columns} FROM entity e {joins}"
    else:
        sql = f"SELECT e.id, e.ts, e.label, {columns} FROM entity e {joins} ORDER BY e._row"
    result = con.sql(sql).to_arrow_table()
    con.close()
    return result


def timed_rounds(
    runs: int, actions: dict[str, Callable[[], pa.Table]]
) -> dict[str, tuple[float, float]]:
    """Best wall and CPU seconds of each action over `runs` interleaved rounds.

    CPU time (all threads of this process) is reported too: on a shared 2-core machine it is far
    steadier than wall time, which other processes' load inflates.
    """
    wall: dict[str, list[float]] = {label: [] for label in actions}
    cpu: dict[str, list[float]] = {label: [] for label in actions}
    for _ in range(runs):
        for label, action in actions.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            action()
            wall[label].append(time.perf_counter() - start_wall)
            cpu[label].append(time.process_time() - start_cpu)
    for label in actions:
        print(
            f"{label:<24} wall best {min(wall[label]):5.2f} s median "
            f"{statistics.median(wall[label]):5.2f} s | cpu best {min(cpu[label]):5.2f} s median "
            f"{statistics.median(cpu[label]):5.2f} s"
        )
    return {label: (min(wall[label]), min(cpu[label])) for label in actions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--per-id", type=int, default=5)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--batches", type=int, default=1, help="appends per group (>1: files share partitions)"
    )
    parser.add_argument(
        "--known-time", action="store_true", help="also time the as_of_known_time mode"
    )
    parser.add_argument(
        "--feast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run Feast's file offline store once on the same rows",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="keep the data here (default: temp)")
    args = parser.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="cairn-pit-bench-"))
    shutil.rmtree(root / "offline", ignore_errors=True)
    # Stamped as written when the history starts, so as_of_known_time has every row to consider.
    offline = OfflineStore(LocalObjectStore(root), clock=lambda: HISTORY_START)
    groups = [f"g{g}" for g in range(args.groups)]
    con = duckdb.connect()
    start = time.perf_counter()
    group_rows: dict[str, pa.Table] = {}
    for index, group in enumerate(groups):
        offline.create_group(group, "id", "event_time")
        rows = feature_rows(con, index, args.ids, args.per_id, args.seed)
        size = -(-rows.num_rows // args.batches)
        for offset in range(0, rows.num_rows, size):
            offline.append(group, rows.slice(offset, size))
        if args.feast:
            group_rows[group] = rows
    entity = entity_rows(con, args.entity_rows, args.ids, args.seed)
    con.close()
    if args.feast:
        feast_runner.write_pit_inputs(root / "feast", entity, group_rows)
        del group_rows
    print(
        f"data: {args.groups} groups x {args.ids * args.per_id:,} rows "
        f"({args.ids:,} ids x {args.per_id}), {args.entity_rows:,} entity rows, "
        f"{sum(len(offline.files(g)) for g in groups)} files, in {root} "
        f"(generated in {time.perf_counter() - start:.1f} s)"
    )

    refs = [FeatureRef(g) for g in groups]
    actions: dict[str, Callable[[], pa.Table]] = {
        "cairn training set": lambda: offline.build_training_set(entity, "id", "ts", refs),
        "bare ASOF JOIN": lambda: bare_asof_join(entity, root, groups, minimal=False),
        "bare, keys + unordered": lambda: bare_asof_join(entity, root, groups, minimal=True),
    }
    if args.known_time:
        actions["cairn as_of_known_time"] = lambda: offline.build_training_set(
            entity, "id", "ts", refs, as_of_known_time=True
        )
    best = timed_rounds(args.runs, actions)
    cairn = offline.build_training_set(entity, "id", "ts", refs)
    bare = bare_asof_join(entity, root, groups, minimal=False)
    floor = bare_asof_join(entity, root, groups, minimal=True).sort_by("_row")
    cairn_s, bare_s, floor_s = (best[label] for label in list(actions)[:3])

    if args.known_time:
        known = offline.build_training_set(entity, "id", "ts", refs, as_of_known_time=True)
        assert known.equals(cairn), "as_of_known_time differs though every row was known"
    assert cairn.num_rows == bare.num_rows == entity.num_rows, "a join dropped or added rows"
    assert cairn.column("id").equals(entity.column("id")), "entity order not kept"
    feature_names = [f"{g}__f{k}" for g in groups for k in range(4)]
    for name in feature_names:
        assert cairn.column(name).equals(bare.column(name)), f"values differ in {name}"
        assert cairn.column(name).equals(floor.column(name)), f"values differ in {name}"
    missing = pc.sum(_any_null(cairn, groups)).as_py()
    print(
        f"identical values in all {len(feature_names)} feature columns; "
        f"{missing:,} entity rows ({missing / entity.num_rows:.1%}) lack history in some group "
        f"and are kept with nulls"
    )
    for name, (wall_s, cpu_s) in (("bare ASOF JOIN", bare_s), ("bare keys-only", floor_s)):
        print(
            f"ratio cairn / {name}: wall {cairn_s[0] / wall_s:.2f}x, cpu {cairn_s[1] / cpu_s:.2f}x"
            f" (best of {args.runs})"
        )
    if args.feast:
        lacking = _any_null(cairn, groups)
        compare_with_feast(root / "feast", cairn, lacking, feature_names, cairn_s)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


def compare_with_feast(
    data_dir: Path,
    cairn: pa.Table,
    lacking: pa.ChunkedArray,
    feature_names: list[str],
    cairn_best: tuple[float, float],
) -> None:
    """Run Feast once on the same rows; check its values on the rows it returns, count the rest.

    `lacking` flags the entity rows with no earlier row in some group: exactly those Feast drops.
    """
    report, feast = feast_runner.run_pit(data_dir)
    rows = feast.column("_row")
    returned = pc.is_in(
        pa.array(range(cairn.num_rows), pa.int64()), value_set=rows.combine_chunks()
    )
    assert pc.invert(returned).equals(lacking.combine_chunks()), (
        "Feast dropped other rows than those lacking history in some group"
    )
    same = cairn.take(rows)
    for name in feature_names:
        assert same.column(name).equals(feast.column(name).cast(pa.float64())), (
            f"Feast's values differ from Cairn's in {name}"
        )
    dropped = report["rows_in"] - report["rows_out"]
    print(
        f"feast {report['feast_version']} get_historical_features: wall {report['wall_s']:.2f} s, "
        f"cpu {report['cpu_s']:.2f} s, "
        f"returned {report['rows_out']:,} of {report['rows_in']:,} entity rows "
        f"({dropped:,} = {dropped / report['rows_in']:.1%} silently dropped); identical values "
        f"in all {len(feature_names)} feature columns on the {report['rows_out']:,} rows it returns"
    )
    print(
        f"ratio feast / cairn: wall {report['wall_s'] / cairn_best[0]:.1f}x, "
        f"cpu {report['cpu_s'] / cairn_best[1]:.1f}x (Feast once, Cairn best of runs)"
    )


def _any_null(table: pa.Table, groups: list[str]) -> pa.ChunkedArray:
    flags = pc.is_null(table.column(f"{groups[0]}__f0"))
    for group in groups[1:]:
        flags = pc.or_(flags, pc.is_null(table.column(f"{group}__f0")))
    return flags


if __name__ == "__main__":
    main()
