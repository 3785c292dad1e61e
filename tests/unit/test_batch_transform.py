"""Batch transform of one shard: record boundaries, the shard plan, filters and join on real
records, per-record errors, Parquet."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost
from cairn.artifacts import (
    InputColumn,
    Lineage,
    LoadedModel,
    ModelManifest,
    OutputColumn,
    Signature,
    load_model,
    write_model_package,
)
from cairn.contracts.batch_events import TransformJobRequested
from cairn.errors import InvalidInput
from cairn.store import InMemoryObjectStore, ObjectStore

from services.batch.columnar import ParquetTransformer
from services.batch.domain import byte_ranges, group_row_groups
from services.batch.records import read_text_shard
from services.batch.scoring import LocalColumnScorer, LocalTextScorer
from services.batch.transform import TextTransformer
from services.batch.validation import checked

FEATURES = ["f0", "f1", "f2"]


def make_batch_model(
    store: ObjectStore, prefix: str = "models/batch-unit/", trees: int = 10
) -> str:
    """A binary XGBoost model on three numeric features, stored as a Cairn package."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 3)).astype(np.float32)
    label = (features.sum(axis=1) > 0).astype(int)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgboost.DMatrix(features, label=label),
        trees,
    )
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(
            inputs=[InputColumn(name=n, dtype="float") for n in FEATURES],
            outputs=[OutputColumn(name="probability")],
        ),
        lineage=Lineage(algorithm="xgboost"),
    )
    return write_model_package(store, prefix, manifest, {"model.ubj": booster.save_raw("ubj")})


def request(**overrides: Any) -> TransformJobRequested:
    fields: dict[str, Any] = {
        "job_name": "unit",
        "model_package_group": "g",
        "model_version": 1,
        "transform_input": {"data_source": "data/in/", "content_type": "text/csv"},
        "transform_output": {"output_path": "outputs/unit/"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = fields[key] | value
        else:
            fields[key] = value
    return TransformJobRequested(**fields)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    store = InMemoryObjectStore()
    return load_model(store, make_batch_model(store))


def csv_text(rows: int, start: int = 0) -> bytes:
    rng = np.random.default_rng(start)
    values = rng.normal(size=(rows, 3))
    return "".join(
        f"id-{start + i},{a:.4f},{b:.4f},{c:.4f}\n" for i, (a, b, c) in enumerate(values)
    ).encode()


# Record boundaries --------------------------------------------------------------------------


def test_shards_of_a_file_hold_every_record_once_even_one_straddling_a_boundary() -> None:
    data = b"aaaa\nbbbbbbbbbb\ncc\n\ndddd\n"
    # A boundary at 7 falls inside "bbbbbbbbbb" (bytes 5..15): the first shard reads it whole.
    for ranges in ([(0, 7), (7, 14), (14, len(data))], byte_ranges(len(data), 4)):
        lines: list[bytes] = []
        offsets: list[int] = []
        for start, end in ranges:
            shard = read_text_shard(io.BytesIO(data), start, end, header=False)
            lines += shard.lines
            offsets += shard.offsets
        assert lines == [b"aaaa", b"bbbbbbbbbb", b"cc", b"dddd"]
        assert offsets == [0, 5, 16, 20]


def test_a_shard_inside_one_long_record_holds_nothing_and_the_header_is_not_a_record() -> None:
    data = b"x,y\n1,2\n" + b"3" * 50 + b"\n4,5"
    assert read_text_shard(io.BytesIO(data), 10, 30, header=True).lines == []
    first = read_text_shard(io.BytesIO(data), 0, 5, header=True)
    assert first.header == ["x", "y"] and first.lines == [b"1,2"]
    assert read_text_shard(io.BytesIO(data), 59, len(data), header=True).lines == [b"4,5"]


def test_byte_ranges_cover_the_file_and_row_groups_are_grouped_by_size() -> None:
    ranges = byte_ranges(1000, 300)
    assert ranges[0][0] == 0 and ranges[-1][1] == 1000 and len(ranges) == 4
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert byte_ranges(0, 300) == [(0, 0)]
    assert group_row_groups([100, 100, 100, 50], 200) == [[0, 1], [2, 3]]


# Checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"transform_input": {"content_type": "image/gif"}}, "transform_input.content_type"),
        (  # image files are answered by the deep built-ins in JSON (or a PNG mask), not CSV
            {
                "transform_input": {"content_type": "image/png"},
                "transform_output": {"accept": "text/csv"},
            },
            "transform_output.accept",
        ),
        ({"transform_output": {"accept": "application/json"}}, "transform_output.accept"),
        (
            {
                "transform_input": {"content_type": "application/x-image"},
                "data_processing": {"join_source": "Input"},
            },
            "data_processing.join_source",
        ),
        (
            {
                "model_package_group": None,
                "model_version": None,
                "endpoint_name": "e",
                "transform_input": {"content_type": "image/jpeg"},
            },
            "transform_input.content_type",
        ),
        ({"data_processing": {"input_filter": "$[1:"}}, "data_processing.input_filter"),
        ({"max_payload_mb": 50, "max_concurrent_transforms": 3}, "max_payload_mb"),
        (
            {"transform_input": {"data_source": "data/../platform/keys"}},
            "transform_input.data_source",
        ),
        ({"transform_input": {"data_source": "batch/jobs/"}}, "transform_input.data_source"),
        ({"transform_output": {"output_path": "data/out/"}}, "transform_output.output_path"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        checked(request(**overrides), None)
    assert field in raised.value.message


# CSV -----------------------------------------------------------------------------------------


def run_text(model: LoadedModel, data: bytes, **overrides: Any) -> tuple[list[str], list[Any]]:
    plan = checked(request(**overrides), None)
    shard = read_text_shard(io.BytesIO(data), 0, len(data), header=False)
    result = TextTransformer(LocalTextScorer(model, plan), plan).run(shard)
    return [line.decode() for line in result.lines], result.errors


def test_sagemaker_csv_example_drops_the_id_joins_and_keeps_id_and_prediction(
    model: LoadedModel,
) -> None:
    data = csv_text(5)
    lines, errors = run_text(
        model,
        data,
        data_processing={
            "input_filter": "$[1:]",
            "join_source": "Input",
            "output_filter": "$[0,-1]",
        },
    )
    expected = model.predict(
        np.array([r.split(",")[1:] for r in data.decode().split()], np.float32)
    )
    assert errors == []
    assert [line.split(",")[0] for line in lines] == [f"id-{i}" for i in range(5)]
    assert np.allclose([float(line.split(",")[1]) for line in lines], expected)


def test_join_without_output_filter_appends_the_prediction_to_the_input_row(
    model: LoadedModel,
) -> None:
    data = csv_text(3)
    lines, _ = run_text(
        model, data, data_processing={"input_filter": "$[1:]", "join_source": "Input"}
    )
    assert [line.rsplit(",", 1)[0] for line in lines] == data.decode().split()


def test_a_bad_record_fails_alone_with_its_position_and_reason(model: LoadedModel) -> None:
    good = csv_text(4)
    data = good[: good.index(b"\n", 30) + 1] + b"id-x,1.0,oops,2.0\n" + b"id-y,1.0\n"
    lines, errors = run_text(model, data + good, data_processing={"input_filter": "$[1:]"})
    assert len(lines) == 6
    assert [(e.position["record_in_shard"], e.position["byte_offset"]) for e in errors] == [
        (2, len(good[: good.index(b"\n", 30) + 1])),
        (3, len(good[: good.index(b"\n", 30) + 1]) + len(b"id-x,1.0,oops,2.0\n")),
    ]
    assert "'oops' is not a number" in errors[0].reason and "has 1 values" in errors[1].reason


def test_a_record_over_max_payload_fails_alone(model: LoadedModel) -> None:
    data = csv_text(2) + b"1," + b"1" * (1024 * 1024 + 10) + b",1\n"
    lines, errors = run_text(
        model, data, data_processing={"input_filter": "$[1:]"}, max_payload_mb=1
    )
    assert len(lines) == 2 and len(errors) == 1 and "over MaxPayloadInMB 1" in errors[0].reason


def test_single_record_and_multi_record_give_the_same_predictions(model: LoadedModel) -> None:
    data = csv_text(20)
    multi, _ = run_text(model, data, data_processing={"input_filter": "$[1:]"})
    single, _ = run_text(
        model, data, data_processing={"input_filter": "$[1:]"}, batch_strategy="SingleRecord"
    )
    assert multi == single and len(multi) == 20


def test_explain_appends_contributions_that_sum_to_the_margin(model: LoadedModel) -> None:
    lines, _ = run_text(model, csv_text(3), data_processing={"input_filter": "$[1:]"}, explain=True)
    for line in lines:
        probability, *contributions = map(float, line.split(","))
        assert len(contributions) == 4  # three features and the bias
        assert probability == pytest.approx(1 / (1 + np.exp(-sum(contributions))), rel=1e-4)


def test_header_names_pick_the_model_columns_in_any_order(model: LoadedModel) -> None:
    data = b"id,f2,f0,f1\nid-0,0.3,0.1,0.2\n"
    plan = checked(request(transform_input={"csv_header": True}), None)
    shard = read_text_shard(io.BytesIO(data), 0, len(data), header=True)
    lines = TextTransformer(LocalTextScorer(model, plan), plan).run(shard).lines
    expected = model.predict(np.array([[0.1, 0.2, 0.3]], np.float32))
    assert float(lines[0]) == pytest.approx(float(expected[0]), rel=1e-6)


# JSON Lines ----------------------------------------------------------------------------------


def test_sagemaker_json_example_filters_features_and_keeps_id_and_output(
    model: LoadedModel,
) -> None:
    records = [{"id": i, "features": [0.1 * i, 0.2, -0.3]} for i in range(3)] + [{"id": 9}]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    lines, errors = run_text(
        model,
        data,
        transform_input={"content_type": "application/jsonlines"},
        data_processing={
            "input_filter": "$.features",
            "join_source": "Input",
            "output_filter": "$['id','SageMakerOutput']",
        },
    )
    out = [json.loads(line) for line in lines]
    assert [o["id"] for o in out] == [0, 1, 2] and set(out[0]) == {"id", "SageMakerOutput"}
    assert 0 < out[0]["SageMakerOutput"]["probability"] < 1
    assert len(errors) == 1 and "no key 'features'" in errors[0].reason


def test_a_csv_row_joined_to_json_output_is_wrapped(model: LoadedModel) -> None:
    lines, _ = run_text(
        model,
        b"id-0,0.1,0.2,0.3\n",
        transform_output={"accept": "application/jsonlines"},
        data_processing={"input_filter": "$[1:]", "join_source": "Input"},
    )
    out = json.loads(lines[0])
    assert out["SageMakerInput"] == ["id-0", "0.1", "0.2", "0.3"]
    assert set(out["SageMakerOutput"]) == {"probability"}


# Parquet -------------------------------------------------------------------------------------


def test_parquet_rows_are_scored_by_column_name_and_joined(model: LoadedModel) -> None:
    table = pa.table(
        {"id": [1, 2, 3], "f1": [0.2, 0.1, 0.0], "f0": [0.1, 0.5, 1.0], "f2": [0.3] * 3}
    )
    plan = checked(
        request(
            transform_input={"content_type": "application/x-parquet"},
            data_processing={"join_source": "Input", "output_filter": "$['id','probability']"},
        ),
        None,
    )
    body, rows, errors = ParquetTransformer(LocalColumnScorer(model, plan), plan).run(
        table, first_row=0
    )
    out = pq.read_table(io.BytesIO(body))
    expected = model.predict(
        np.array([[0.1, 0.2, 0.3], [0.5, 0.1, 0.3], [1.0, 0.0, 0.3]], np.float32)
    )
    assert rows == 3 and errors == [] and out.column_names == ["id", "probability"]
    assert out.column("id").to_pylist() == [1, 2, 3]
    assert np.allclose(out.column("probability").to_numpy(), expected)


def test_inputs_are_listed_under_a_prefix_with_or_without_a_slash_but_not_the_output() -> None:
    from services.batch.inputs import list_inputs

    store = InMemoryObjectStore()
    store.put_bytes("data/in/a.csv", b"1\n")
    store.put_bytes("data/in/sub/b.csv", b"2\n")
    store.put_bytes("data/in/out/a.csv.out", b"x\n")
    for location in ("data/in", "data/in/"):
        files = list_inputs(store, location, "data/in/out")
        assert [f.relative for f in files] == ["a.csv", "sub/b.csv"]
    assert [f.relative for f in list_inputs(store, "data/in/a.csv", "outputs/x")] == ["a.csv"]
    with pytest.raises(InvalidInput, match=r"transform_input\.data_source"):
        list_inputs(store, "data/none/", "outputs/x")
