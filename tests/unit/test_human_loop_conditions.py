"""Human-loop activation conditions on model outputs: what goes to review, and why."""

from __future__ import annotations

import pytest
from cairn.contracts.review_events import HumanLoopConfig
from pydantic import ValidationError

from services.gateway.human_loop import response_document, review_reasons, sample_draw


def config(*conditions: dict, sampling: float = 0.0) -> HumanLoopConfig:
    return HumanLoopConfig.model_validate(
        {
            "labels": ["no", "yes"],
            "random_sampling_percentage": sampling,
            **({"activation_conditions": {"Conditions": list(conditions)}} if conditions else {}),
        }
    )


LOW = {"ConditionType": "ClassProbabilityBelow", "ConditionParameters": {"Threshold": 0.8}}
BAND = {"ConditionType": "DecisionBoundaryBand", "ConditionParameters": {"Margin": 0.05}}
HALF = {"ConditionType": "Sampling", "ConditionParameters": {"RandomSamplingPercentage": 50}}


def reasons(loop: HumanLoopConfig, output: str, kind: str = "text/csv", body: bytes = b"x") -> list:
    return review_reasons(loop, body, response_document(kind, output.encode()))


def test_class_probability_reads_binary_scores_multiclass_lists_and_named_outputs():
    loop = config(LOW)
    assert reasons(loop, "0.9\n0.05\n") == []
    assert reasons(loop, "0.9\n0.25\n") == ["ClassProbabilityBelow(0.8)"]  # 1 - 0.25 = 0.75
    assert reasons(loop, '{"predictions": [{"probability": 0.3}]}', "application/json") == [
        "ClassProbabilityBelow(0.8)"
    ]
    assert reasons(loop, '{"p": [0.5, 0.3, 0.2]}\n', "application/jsonlines") == [
        "ClassProbabilityBelow(0.8)"
    ]
    assert reasons(loop, "0.1,0.85,0.05\n") == []


def test_band_and_and_or_combine_like_a2i():
    both = config({"And": [LOW, BAND]})
    assert reasons(both, "0.53\n") == [
        "ClassProbabilityBelow(0.8)",
        "DecisionBoundaryBand(0.5±0.05)",
    ]
    assert reasons(both, "0.7\n") == []  # low confidence, but outside the band
    either = config(
        {
            "Or": [
                BAND,
                {
                    "ConditionType": "JsonPath",
                    "ConditionParameters": {
                        "Path": "$.predictions[*].label",
                        "Operator": "Equals",
                        "Value": "fraud",
                    },
                },
            ]
        }
    )
    document = '{"predictions": [{"label": "fraud", "score": 0.99}]}'
    assert reasons(either, document, "application/json") == [
        "JsonPath($.predictions[*].label Equals 'fraud')"
    ]
    assert reasons(either, '{"predictions": [{"label": "ok"}]}', "application/json") == []


def test_sampling_is_a_fixed_share_decided_by_the_request_body():
    loop = config(sampling=30)
    bodies = [f"{i},1.5,north".encode() for i in range(2000)]
    first = [bool(review_reasons(loop, body, None)) for body in bodies]
    assert first == [bool(review_reasons(loop, body, None)) for body in bodies]
    assert 0.26 < sum(first) / len(first) < 0.34
    gated = config({"And": [LOW, HALF]})  # half of the low-confidence answers
    low = [body for body in bodies if sample_draw(body) < 50]
    assert reasons(gated, "0.6\n", body=low[0]) == ["ClassProbabilityBelow(0.8)", "Sampling(50%)"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"Conditions": [{"ConditionType": "Nope"}]}, "activation_conditions.Conditions.0"),
        (
            {
                "Conditions": [
                    {
                        "And": [
                            {
                                "ConditionType": "ClassProbabilityBelow",
                                "ConditionParameters": {"Threshold": 2},
                            }
                        ]
                    }
                ]
            },
            "activation_conditions.Conditions.0.And.And.0.ClassProbabilityBelow."
            "ConditionParameters.Threshold",
        ),
        (
            {
                "Conditions": [
                    {
                        "ConditionType": "JsonPath",
                        "ConditionParameters": {
                            "Path": "$.a",
                            "Operator": "LessThan",
                            "Value": "x",
                        },
                    }
                ]
            },
            "activation_conditions.Conditions.0.JsonPath.ConditionParameters",
        ),
    ],
)
def test_a_bad_condition_names_its_field(bad: dict, field: str):
    with pytest.raises(ValidationError) as refused:
        HumanLoopConfig.model_validate({"labels": ["a", "b"], "activation_conditions": bad})
    locations = [".".join(map(str, error["loc"])) for error in refused.value.errors()]
    assert field in locations
