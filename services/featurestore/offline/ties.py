"""The tie rule: which of several rows with the same record id and event time is the record.

One rule for the offline store (point-in-time joins, time travel) and the online store alike:
the later write wins, and within one write (a batch, a bulk load's batch) the later row wins.
A tombstone (DeleteRecord) is a write like any other: a put at the same event time after a delete
brings the record back, a delete after the put hides it.

Offline, "later write" is the `_write_time` an append stamps on every row of its files (strictly
increasing per process), and the same time goes to the online store as the record's `written_at`,
so both stores order the same writes the same way even when writers race or an event is
redelivered. Within a batch the later row is kept at write time: the earlier rows with the same
(record id, event time) could never be read, so they are not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from services.featurestore.offline.pit import file_write_time

_POSITION = "__cairn_position"


def last_row_per_key(table: pa.Table, record_id_col: str, event_time_col: str) -> pa.Table:
    """The table without rows that a later row with the same id and event time overrides."""
    keys = table.select([record_id_col, event_time_col])
    positions = pa.array(range(table.num_rows), pa.int64())
    last = keys.append_column(_POSITION, positions).group_by([record_id_col, event_time_col])
    winners = last.aggregate([(_POSITION, "max")]).column(f"{_POSITION}_max")
    if len(winners) == table.num_rows:
        return table
    # The winners in their batch order, so the rows written keep the order they came in.
    return table.take(pc.take(winners, pc.sort_indices(winners)))


def tie_ranks(partitions: Sequence[tuple[date, Path]]) -> dict[Path, int]:
    """Rank by write time the files that share an event-date partition (rank 0 left out).

    Only such files can hold two rows with the same record id and event time, which the later
    write must win. Write times come from Parquet footers; equal ones are ordered by file name.
    """
    by_date: dict[date, list[Path]] = {}
    for event_date, path in partitions:
        by_date.setdefault(event_date, []).append(path)
    ranks: dict[Path, int] = {}
    for partition in by_date.values():
        if len(partition) > 1:
            ordered = sorted(partition, key=lambda path: (file_write_time(path), path.name))
            ranks.update((path, rank) for rank, path in enumerate(ordered) if rank)
    return ranks
