"""Gateway payload parsing and answers: CSV / JSON / JSON Lines in, the model's numbers out."""

from __future__ import annotations

import json

import numpy as np
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
from cairn.errors import InvalidInput
from cairn.inference.payloads import (
    CSV,
    JSON,
    JSONLINES,
    UnsupportedMediaType,
    explanation_records,
    format_response,
    media_type,
    parse_body,
)
from cairn.store import InMemoryObjectStore, ObjectStore

COLUMNS = [
    InputColumn(name="income", dtype="float"),
    InputColumn(name="age", dtype="int"),
    InputColumn(name="debt", dtype="float"),
    InputColumn(name="region", dtype="category", categories=["north", "south", "east"]),
]


def train_matrix(seed: int, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = np.column_stack(
        [
            rng.normal(50, 10, rows),
            rng.integers(18, 80, rows),
            rng.normal(5, 2, rows),
            rng.integers(0, 3, rows),
        ]
    ).astype(np.float32)
    label = (features[:, 0] / 10 - features[:, 2] + features[:, 3] + rng.normal(0, 1, rows)) > 2
    return features, label.astype(int)


def make_package(store: ObjectStore, prefix: str, seed: int = 0, trees: int = 20) -> str:
    """Train a small binary XGBoost model and store it as a Cairn model package."""
    features, label = train_matrix(seed)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "seed": seed},
        xgboost.DMatrix(features, label=label),
        trees,
    )
    manifest = ModelManifest(
        framework="xgboost",
        framework_version=xgboost.__version__,
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(inputs=COLUMNS, outputs=[OutputColumn(name="probability")]),
        lineage=Lineage(algorithm="xgboost"),
    )
    return write_model_package(store, prefix, manifest, {"model.ubj": booster.save_raw("ubj")})


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    store = InMemoryObjectStore()
    return load_model(store, make_package(store, "models/unit/"))


ROWS = [[52.5, 41, 3.2, "south"], [38.0, 23, 7.5, "north"], [61.0, 66, 1.0, "unseen"]]


def offline(model: LoadedModel) -> list[float]:
    return model.predict(model.encode_rows(ROWS)).tolist()


def test_csv_json_and_jsonlines_bodies_give_the_same_matrix(model: LoadedModel):
    csv = "\n".join(",".join(str(cell) for cell in row) for row in ROWS).encode()
    records = [dict(zip(["income", "age", "debt", "region"], row, strict=True)) for row in ROWS]
    bodies = [
        (CSV, csv + b"\n"),
        (JSON, json.dumps({"instances": ROWS}).encode()),
        (JSON, json.dumps(ROWS).encode()),
        (JSON, json.dumps(records).encode()),
        (JSON, json.dumps({"instances": [{"features": row} for row in ROWS]}).encode()),
        (JSONLINES, "\n".join(json.dumps(row) for row in ROWS).encode()),
        (JSONLINES, "\n".join(json.dumps(record) for record in records).encode()),
    ]
    expected = model.encode_rows(ROWS)
    for content_type, body in bodies:
        np.testing.assert_array_equal(parse_body(model, content_type, body), expected)
    single = parse_body(model, JSON, json.dumps(ROWS[0]).encode())
    np.testing.assert_array_equal(single, expected[:1])
    assert np.isnan(expected[2, 3])  # an unseen category is missing, not an error


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (CSV, b"52.5,41,3.2", "3 values"),
        (CSV, b"52.5,forty,3.2,south", "not a number"),
        (JSON, b"{not json", "not valid JSON"),
        (JSON, b'[{"income": 1, "age": 2}]', "missing columns"),
        (JSON, b'{"instances": 5}', "instances"),
        (CSV, b"   ", "empty"),
    ],
)
def test_bad_bodies_are_invalid_input_naming_the_problem(
    model: LoadedModel, content_type: str, body: bytes, reason: str
):
    with pytest.raises(InvalidInput, match=reason) as caught:
        parse_body(model, content_type, body)
    assert caught.value.http_status == 400


def test_unknown_content_type_is_415(model: LoadedModel):
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_body(model, "application/x-protobuf", b"abc")
    assert caught.value.http_status == 415


def test_media_type_normalises_headers():
    assert media_type("text/csv; charset=utf-8") == CSV
    assert media_type("application/x-ndjson") == JSONLINES
    assert media_type(None, default=JSON) == JSON
    assert media_type("*/*", default=CSV) == CSV


def test_answers_carry_the_models_exact_numbers_in_each_format(model: LoadedModel):
    result = model.predict(model.encode_rows(ROWS))
    csv_body, csv_type = format_response(result, model.output_names, CSV)
    assert csv_type == CSV
    assert [float(line) for line in csv_body.decode().splitlines()] == offline(model)
    json_body, _ = format_response(result, model.output_names, JSON)
    assert json.loads(json_body) == {"predictions": [{"probability": p} for p in offline(model)]}
    lines_body, _ = format_response(result, model.output_names, JSONLINES)
    assert [json.loads(line)["probability"] for line in lines_body.splitlines()] == offline(model)


def test_explanations_sum_to_the_margin_and_force_json(model: LoadedModel):
    matrix = model.encode_rows(ROWS)
    result = model.predict(matrix)
    explanations = explanation_records(model.explain(matrix), model.input_names)
    body, content_type = format_response(result, model.output_names, CSV, explanations)
    assert content_type == JSON
    document = json.loads(body)
    for probability, explanation in zip(offline(model), document["explanations"], strict=True):
        contributions = explanation["feature_contributions"]
        assert set(contributions) == {"income", "age", "debt", "region"}
        margin = sum(contributions.values()) + explanation["bias"]
        assert 1 / (1 + np.exp(-margin)) == pytest.approx(probability, abs=1e-5)


@pytest.mark.parametrize("digits", [400, 5000])
@pytest.mark.parametrize(
    "template",
    [
        '{{"instances": [[{n}, 41, 3.2, "south"]]}}',
        '[[{n}, 41, 3.2, "south"]]',
        '{{"inputs": [[{n}, 41, 3.2, "south"]]}}',
    ],
)
def test_a_huge_integer_is_a_400_not_a_500(model: LoadedModel, digits: int, template: str) -> None:
    body = template.format(n="9" * digits).encode()
    with pytest.raises(InvalidInput):
        parse_body(model, "application/json", body)
