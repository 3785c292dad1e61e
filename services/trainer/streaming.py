"""Pipe mode for XGBoost: channels streamed from the store in chunks into an external-memory matrix.

No channel is ever read whole: a Parquet file is read row group by row group through ranged GETs
(`ObjectStore.get_range`), a CSV file block by block, and each batch is handed to
`xgboost.DataIter`, which `ExtMemQuantileDMatrix` turns into quantised pages cached on disk. Peak
memory is a few batches plus XGBoost's pages, not the dataset. Features must be numeric (there is
no whole-column pass to learn categories); labels are read in a first, label-only pass.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import xgboost
from cairn.artifacts import InputColumn
from cairn.contracts.events import InputChannel, TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.trainer.algorithms import TrainedModel, TrainingContext
from services.trainer.algorithms.base import classification_metrics, regression_metrics
from services.trainer.algorithms.xgboost_algo import XGBoostHyperparameters, _params
from services.trainer.channels import ChannelFiles, resolve_channel
from services.trainer.features import DEFAULT_LABEL_COLUMN, label_key
from services.trainer.xgboost_jobs import ScaleOut, local_callbacks, packaged, resume_point

PIPE_TYPES = ("text/csv", "application/x-parquet")


class StoreStream(io.RawIOBase):
    """A seekable, read-only file over one store object, fetched in ranged reads."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        super().__init__()
        self.store, self.key, self.size = store, key, size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self.position + len(view))
        if end <= self.position:
            return 0
        data = self.store.get_range(self.key, self.position, end)
        view[: len(data)] = data
        self.position += len(data)
        return len(data)


def open_stream(store: ObjectStore, key: str, chunk_bytes: int) -> io.BufferedReader:
    """A buffered reader of one object: each underlying read is one ranged GET of a chunk."""
    return io.BufferedReader(StoreStream(store, key, store.stat(key).size), chunk_bytes)


def batches(
    store: ObjectStore,
    files: ChannelFiles,
    scale: ScaleOut,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Every file of a channel as record batches, streamed (optionally only some columns)."""
    if files.content_type not in PIPE_TYPES or any(k.endswith(".gz") for k in files.keys):
        raise InvalidInput(
            f"input_mode: Pipe streams CSV or Parquet; channel {files.name!r} is "
            f"{files.content_type}{' (gzip)' if files.keys[0].endswith('.gz') else ''}",
            field="input_mode",
        )
    for key in files.keys:
        with open_stream(store, key, scale.pipe_chunk_bytes) as stream:
            if files.content_type == "application/x-parquet":
                # pre_buffer would cache every column chunk read so far: memory grows with the file
                parquet = pq.ParquetFile(stream, pre_buffer=False)
                yield from parquet.iter_batches(batch_size=scale.pipe_batch_rows, columns=columns)
            else:
                options = pa_csv.ConvertOptions(include_columns=columns) if columns else None
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(block_size=scale.pipe_chunk_bytes),
                    convert_options=options,
                )
                yield from reader


class BatchIter(xgboost.DataIter):
    """Feeds a channel's batches to XGBoost; `reset` starts the stream again from the store."""

    def __init__(self, source: Callable[[], Iterator[pa.RecordBatch]], shape: Schema, cache: str):
        super().__init__(cache_prefix=cache, release_data=True)
        self.source, self.shape = source, shape
        self._batches: Iterator[pa.RecordBatch] | None = None

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._batches is None:
            self._batches = self.source()
        batch = next(self._batches, None)
        if batch is None:
            return False
        x, y = self.shape.encode(batch)
        input_data(data=x, label=y, feature_names=self.shape.feature_names)
        return True

    def reset(self) -> None:
        self._batches = None


@dataclass
class Schema:
    """Feature columns (numeric) and the label of a streamed channel."""

    inputs: list[InputColumn]
    label: str
    class_labels: list[str] | None

    @property
    def feature_names(self) -> list[str]:
        return [column.name for column in self.inputs]

    def encode(self, batch: pa.RecordBatch) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        x = np.empty((batch.num_rows, len(self.inputs)), dtype=np.float32)
        for index, name in enumerate(self.feature_names):
            x[:, index] = batch.column(name).to_numpy(zero_copy_only=False)
        labels = batch.column(self.label)
        if labels.null_count:
            raise InvalidInput(f"rows without a {self.label!r} label")
        if self.class_labels is None:
            return x, labels.to_numpy(zero_copy_only=False).astype(np.float64)
        index_of = {value: code for code, value in enumerate(self.class_labels)}
        keys = [label_key(value) for value in labels.to_pylist()]
        try:
            y = np.fromiter((index_of[key] for key in keys), dtype=np.float64, count=len(keys))
        except KeyError as error:
            raise InvalidInput(f"label {error.args[0]!r} is not in the train channel") from None
        return x, y


def infer_schema(
    store: ObjectStore,
    files: ChannelFiles,
    requested_label: str | None,
    classes: bool,
    scale: ScaleOut,
) -> Schema:
    """Columns from the first batch; class labels from a label-only pass over the channel."""
    first = next(batches(store, files, scale), None)
    if first is None:
        raise InvalidInput(f"channel {files.name!r} holds no rows")
    names = list(first.schema.names)
    label = requested_label or (DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in names else names[0])
    if label not in names:
        raise InvalidInput(f"label column {label!r} is not in the train channel ({names})")
    inputs = []
    for column in first.schema:
        if column.name == label:
            continue
        if pa.types.is_integer(column.type):
            inputs.append(InputColumn(name=column.name, dtype="int"))
        elif pa.types.is_floating(column.type):
            inputs.append(InputColumn(name=column.name, dtype="float"))
        else:
            raise InvalidInput(
                f"input_mode: Pipe needs numeric features; column {column.name!r} is "
                f"{column.type} (use File mode for categories)",
                field="input_mode",
            )
    class_labels = None
    if classes:
        seen: set[str] = set()
        for batch in batches(store, files, scale, columns=[label]):
            seen.update(
                label_key(v) for v in batch.column(label).unique().to_pylist() if v is not None
            )
        class_labels = sorted(seen)
        if len(class_labels) < 2:
            raise InvalidInput(f"label column {label!r} holds fewer than two classes")
    return Schema(inputs, label, class_labels)


@dataclass
class Streamed:
    """A Pipe-mode training outcome with what the manifest needs."""

    trained: TrainedModel
    inputs: list[InputColumn]
    label_column: str
    class_labels: list[str] | None
    files: list[ChannelFiles]


def train_pipe_mode(
    store: ObjectStore,
    request: TrainingJobRequested,
    train: InputChannel,
    validation: InputChannel | None,
    hp: XGBoostHyperparameters,
    ctx: TrainingContext,
    scale: ScaleOut,
) -> Streamed:
    """Train from streamed channels; metrics are scored by streaming the evaluation channel."""
    files = [resolve_channel(store, train)]
    if validation is not None:
        files.append(resolve_channel(store, validation))
    for found in files:  # the lineage records each object's etag: Pipe never holds the bytes
        for key in found.keys:
            found.checksums[key] = "etag:" + store.stat(key).etag
    schema = infer_schema(
        store, files[0], train.label_column, hp.objective != "reg:squarederror", scale
    )
    n_classes = len(schema.class_labels or [])
    if hp.objective == "binary:logistic" and n_classes != 2:
        raise InvalidInput(f"objective binary:logistic needs 2 classes; the label has {n_classes}")
    device = "cuda" if ctx.use_gpu else "cpu"
    params = _params(hp, device, n_classes)
    start, model = resume_point(scale, ctx)
    with tempfile.TemporaryDirectory(prefix="cairn-pipe-", dir=scale.scratch_dir) as cache:
        iters = [
            BatchIter(lambda f=f: batches(store, f, scale), schema, f"{cache}/{f.name}")  # type: ignore[misc]
            for f in files
        ]
        dtrain = xgboost.ExtMemQuantileDMatrix(iters[0], max_bin=hp.max_bin)
        evals: list[tuple[Any, str]] = [(dtrain, "train")]
        if len(iters) > 1:
            evals.append((xgboost.ExtMemQuantileDMatrix(iters[1], ref=dtrain), "validation"))
        ctx.log(f"xgboost {xgboost.__version__} Pipe mode (external memory) on {device}: {params}")
        booster = xgboost.train(
            params,
            dtrain,
            num_boost_round=max(0, hp.num_round - start),
            evals=evals,
            early_stopping_rounds=hp.early_stopping_rounds,
            callbacks=local_callbacks(hp, ctx, scale, start),
            verbose_eval=False,
            xgb_model=model,
        )
        del dtrain, evals
    metrics = _streamed_metrics(store, booster, files[-1], schema, hp, scale)
    scale.details["input_mode"] = "Pipe"
    trained = packaged(booster, hp, schema.class_labels, metrics, device, scale)
    return Streamed(trained, schema.inputs, schema.label, schema.class_labels, files)


def _streamed_metrics(
    store: ObjectStore,
    booster: xgboost.Booster,
    files: ChannelFiles,
    schema: Schema,
    hp: XGBoostHyperparameters,
    scale: ScaleOut,
) -> dict[str, float]:
    """The same metrics as File mode, scored batch by batch (only labels and scores are kept,
    as float32: 8 bytes a row, where the rows themselves never sit in memory together)."""
    labels, scores = [], []
    for batch in batches(store, files, scale):
        x, y = schema.encode(batch)
        labels.append(y.astype(np.float32))
        scores.append(np.asarray(booster.inplace_predict(x), dtype=np.float32))
    y_true, predicted = np.concatenate(labels), np.concatenate(scores)
    prefix = "validation" if files.name == "validation" else "train"
    if hp.objective == "reg:squarederror":
        return regression_metrics(prefix, y_true, predicted)
    return classification_metrics(prefix, y_true, predicted, len(schema.class_labels or []))
