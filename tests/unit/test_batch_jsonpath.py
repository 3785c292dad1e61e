"""DataProcessing filters: the JSONPath subset, with SageMaker's documentation examples."""

from __future__ import annotations

import pytest

from services.batch.jsonpath import InvalidJsonPath, parse_jsonpath

ROW = ["id-7", "1.5", "2.5", "3.5", "0.91"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("$", ROW, ROW),
        ("$[1:]", ROW, ["1.5", "2.5", "3.5", "0.91"]),  # drop the ID column (InputFilter)
        ("$[0,-1]", ROW, ["id-7", "0.91"]),  # keep ID and prediction (OutputFilter)
        ("$[1:-1]", ROW, ["1.5", "2.5", "3.5"]),
        ("$[:2]", ROW, ["id-7", "1.5"]),
        ("$[-2]", ROW, "3.5"),
        ("$[*]", ROW, ROW),
        ("$.features", {"id": 1, "features": [1, 2]}, [1, 2]),
        ("$['features']", {"id": 1, "features": [1, 2]}, [1, 2]),
        (
            "$['id','SageMakerOutput']",
            {"id": 1, "features": [1, 2], "SageMakerOutput": {"probability": 0.5}},
            {"id": 1, "SageMakerOutput": {"probability": 0.5}},
        ),
        ("$.SageMakerOutput.probability", {"SageMakerOutput": {"probability": 0.5}}, 0.5),
        ("$.features[1:]", {"features": [1, 2, 3]}, [2, 3]),
        ("$.*", {"a": 1, "b": 2}, [1, 2]),
        ('$["a","b"]', {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}),
        ("$[0,2][0]", [[1, 2], [3, 4], [5, 6]], [1, 5]),  # later steps apply to each element
    ],
)
def test_filters_select_what_sagemaker_selects(path: str, value: object, expected: object) -> None:
    assert parse_jsonpath(path).select(value) == expected


@pytest.mark.parametrize(
    ("path", "width", "expected"),
    [("$", 3, [0, 1, 2]), ("$[1:]", 4, [1, 2, 3]), ("$[0,-1]", 4, [0, 3]), ("$[*]", 2, [0, 1])],
)
def test_array_filters_compile_to_column_indexes(
    path: str, width: int, expected: list[int]
) -> None:
    assert parse_jsonpath(path).column_indexes(width) == expected


def test_name_filters_do_not_compile_to_columns() -> None:
    assert parse_jsonpath("$.features").column_indexes(3) is None


@pytest.mark.parametrize("path", ["features", "$[", "$[1:2:3]", "$.", "$[a]", "$['a',1]", "$..x"])
def test_malformed_paths_are_refused_naming_the_field(path: str) -> None:
    with pytest.raises(InvalidJsonPath) as raised:
        parse_jsonpath(path, field="data_processing.input_filter")
    assert raised.value.details["field"] == "data_processing.input_filter"
    assert "data_processing.input_filter" in raised.value.message


def test_a_missing_key_is_an_error_for_that_record() -> None:
    with pytest.raises(KeyError):
        parse_jsonpath("$.features").select({"id": 1})
