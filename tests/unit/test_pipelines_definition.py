"""Pipeline definitions: the SDK builder writes what the service accepts, and every mistake the
issue names is refused at create time, naming the spot."""

from __future__ import annotations

from typing import Any

import pytest
from cairn.errors import InvalidInput
from cairn_sdk.pipelines import And, Not, Or, Pipeline

from services.pipelines.definition import (
    dependencies,
    parse_definition,
    resolve_parameters,
    validate_definition,
)


def credit_pipeline() -> Pipeline:
    """process -> train -> evaluate -> condition -> register (else fail)."""
    pipeline = Pipeline("credit", parameters={"dataset": "dataset://credit@latest", "min_auc": 0.7})
    process = pipeline.processing(
        "process",
        builtin="train-validation-split",
        inputs=[{"input_name": "data", "source": pipeline.param("dataset")}],
        outputs=[{"output_name": "train"}, {"output_name": "validation"}],
        cache="P30D",
    )
    train = pipeline.training(
        "train",
        algorithm="xgboost",
        hyperparameters={"num_round": 10},
        input_channels=[
            {"name": "train", "uri": process.outputs["train"], "label_column": "default"},
            {"name": "validation", "uri": process.outputs["validation"], "label_column": "default"},
        ],
        cache=True,
        retry={"exception_types": ["internal"], "max_attempts": 2, "interval_s": 0},
    )
    register = pipeline.register_model(
        "register",
        model_package_group="credit",
        artifact_uri=train.model_artifact,
        training_job=train.job_name,
        metrics={"auc": train.metrics["validation-auc"]},
    )
    fail = pipeline.fail("too-weak", error_message="the model is not good enough")
    pipeline.condition(
        "good-enough",
        And(
            train.metrics["validation-auc"] >= pipeline.param("min_auc"),
            Not(train.metrics["validation-auc"] > 1.0),
        ),
        if_steps=[register],
        else_steps=[fail],
    )
    return pipeline


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(InvalidInput) as caught:
        validate_definition(parse_definition(document))
    return caught.value.message


def test_the_builders_document_is_valid_and_its_dag_follows_the_references() -> None:
    definition = parse_definition(credit_pipeline().to_dict())
    order = validate_definition(definition)
    deps = dependencies(definition)
    assert deps["train"] == {"process"}
    assert deps["register"] == {"train", "good-enough"}
    assert deps["too-weak"] == {"good-enough"}
    assert order.index("process") < order.index("train") < order.index("good-enough")
    assert order.index("good-enough") < order.index("register")


def test_yaml_and_json_round_trip_to_the_same_definition() -> None:
    import json

    import yaml

    pipeline = credit_pipeline()
    assert parse_definition(yaml.safe_load(pipeline.to_yaml())) == parse_definition(
        json.loads(pipeline.to_json())
    )


def test_a_cycle_is_refused_naming_it() -> None:
    doc = credit_pipeline().to_dict()
    process = next(s for s in doc["steps"] if s["name"] == "process")
    process["depends_on"] = ["train"]
    message = refused(doc)
    assert "cycle" in message and "train" in message and "process" in message


def test_an_unknown_step_or_property_is_refused_naming_the_spot() -> None:
    doc = credit_pipeline().to_dict()
    register = next(s for s in doc["steps"] if s["name"] == "register")
    register["arguments"]["artifact_uri"] = {"get": "steps.trian.model_artifact"}
    assert "steps.register.arguments.artifact_uri" in refused(doc)
    register["arguments"]["artifact_uri"] = {"get": "steps.train.model_artefact"}
    message = refused(doc)
    assert "steps.register.arguments.artifact_uri" in message and "model_artefact" in message
    assert "model_artifact" in message  # what it has instead
    register["arguments"]["artifact_uri"] = {"get": "steps.process.outputs.test"}
    assert "outputs.test" in refused(doc)


def test_comparing_incompatible_types_is_refused_even_deep_in_a_nested_condition() -> None:
    pipeline = credit_pipeline()
    doc = pipeline.to_dict()
    train = Pipeline("x").training("train")
    nested = Or(Not(And(train.model_artifact > 0.5)), train.metrics["auc"] < 1).node
    check = next(s for s in doc["steps"] if s["name"] == "good-enough")
    check["condition"] = nested
    message = refused(doc)
    assert "steps.good-enough.condition.or[0].not.and[0]" in message
    assert "string > float" in message


def test_bad_request_arguments_are_refused_at_create_time() -> None:
    doc = credit_pipeline().to_dict()
    train = next(s for s in doc["steps"] if s["name"] == "train")
    train["arguments"]["resources"] = {"device": "tpu"}
    assert "steps.train.arguments.resources.device" in refused(doc)
    del train["arguments"]["resources"]
    train["arguments"]["job_name"] = "mine"
    assert "steps.train.arguments.job_name" in refused(doc)


def test_parameters_are_typed_and_checked() -> None:
    definition = parse_definition(credit_pipeline().to_dict())
    assert resolve_parameters(definition, {"min_auc": "0.9"})["min_auc"] == 0.9
    with pytest.raises(InvalidInput, match="min_auc"):
        resolve_parameters(definition, {"min_auc": "high"})
    with pytest.raises(InvalidInput, match="unknown parameters"):
        resolve_parameters(definition, {"datset": "x"})
