"""Human review of live predictions (SageMaker Augmented AI), and its per-endpoint config.

An endpoint's human loop (`HumanLoopConfig`, A2I's FlowDefinition) is kept by the deployer
(`PUT /endpoints/{name}/human-loop`), stored as `HumanLoopConfigView` and announced with
`HumanLoopConfigured`. Each gateway replica evaluates its activation conditions on every answer,
after the answer is sent, and publishes `HumanReviewRequested` with the captured input and output.
The labeling service keeps the review queue; a reviewer's answer is `HumanReviewCompleted` (and
`GroundTruthRecorded` for the monitor, keyed by inference id like the capture).

Activation conditions are A2I's JSON shape: `{"Conditions": [...]}` where each item is a
condition (`ConditionType` + `ConditionParameters`) or `{"And": [...]}` / `{"Or": [...]}`; the
top-level list is an `Or`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from cairn.contracts.catalogue import event
from cairn.contracts.state import state_contract

ENDPOINT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
DEFAULT_PROBABILITY_PATH = "$.predictions[*]"
MAX_CONDITION_DEPTH = 8


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_jsonpath(path: str) -> str:
    """A JSONPath the gateway can evaluate (jsonpath-ng's extended grammar, filters included)."""
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext.parser import parse

    try:
        parse(path)
    except (JsonPathLexerError, JsonPathParserError, ValueError, AttributeError) as error:
        raise ValueError(f"not a JSONPath: {error}") from None
    return path


class _PathParameters(_Data):
    Path: str = Field(
        default=DEFAULT_PROBABILITY_PATH,
        min_length=1,
        max_length=500,
        description="JSONPath selecting each row's output in the response, as JSON: a "
        "probability, a list of class probabilities, or an object holding one number.",
    )

    @field_validator("Path")
    @classmethod
    def _parsable(cls, path: str) -> str:
        return _check_jsonpath(path)


class ProbabilityParameters(_PathParameters):
    Threshold: float = Field(gt=0, le=1, description="Review when the top class's p < this.")


class BandParameters(_PathParameters):
    Boundary: float = Field(default=0.5, gt=0, lt=1, description="The decision threshold.")
    Margin: float = Field(
        gt=0,
        lt=1,
        description="Review when |p - Boundary| <= Margin (multiclass: top-two gap <= Margin).",
    )


JsonPathOperator = Literal[
    "Equals",
    "NotEquals",
    "LessThan",
    "LessThanOrEqual",
    "GreaterThan",
    "GreaterThanOrEqual",
    "Exists",
    "NotExists",
]


class JsonPathParameters(_Data):
    Path: str = Field(min_length=1, max_length=500, description="JSONPath on the response.")
    Operator: JsonPathOperator
    Value: float | int | str | bool | None = Field(
        default=None, description="Compared with every value the path selects (any may match)."
    )

    @field_validator("Path")
    @classmethod
    def _parsable(cls, path: str) -> str:
        return _check_jsonpath(path)

    @model_validator(mode="after")
    def _value_given(self) -> JsonPathParameters:
        if self.Operator not in ("Exists", "NotExists") and self.Value is None:
            raise ValueError(f"Operator {self.Operator} needs a Value")
        ordered = ("LessThan", "LessThanOrEqual", "GreaterThan", "GreaterThanOrEqual")
        if self.Operator in ordered and not isinstance(self.Value, int | float):
            raise ValueError(f"Operator {self.Operator} needs a numeric Value")
        return self


class SamplingParameters(_Data):
    RandomSamplingPercentage: float = Field(
        ge=0, le=100, description="Share of requests, chosen by a hash of the request body."
    )


class ClassProbabilityBelow(_Data):
    """The predicted class's probability is below a threshold (low confidence)."""

    ConditionType: Literal["ClassProbabilityBelow"]
    ConditionParameters: ProbabilityParameters


class DecisionBoundaryBand(_Data):
    """The score lies within a band around the decision boundary."""

    ConditionType: Literal["DecisionBoundaryBand"]
    ConditionParameters: BandParameters


class JsonPathCondition(_Data):
    """Any custom test on the response: a JSONPath and a comparison."""

    ConditionType: Literal["JsonPath"]
    ConditionParameters: JsonPathParameters


class SamplingCondition(_Data):
    """A deterministic share of requests (the same request body always gets the same draw)."""

    ConditionType: Literal["Sampling"]
    ConditionParameters: SamplingParameters


class AndCondition(_Data):
    And: list[Condition] = Field(min_length=1, max_length=50)


class OrCondition(_Data):
    Or: list[Condition] = Field(min_length=1, max_length=50)


def _kind(value: Any) -> str | None:
    """Which member a condition is, so an error names one member's fields, not all of them."""
    if isinstance(value, dict):
        for combinator in ("And", "Or"):
            if combinator in value:
                return combinator
        kind = value.get("ConditionType")
        return kind if isinstance(kind, str) else None
    if isinstance(value, AndCondition | OrCondition):
        return "And" if isinstance(value, AndCondition) else "Or"
    kind = getattr(value, "ConditionType", None)
    return kind if isinstance(kind, str) else None


Condition = Annotated[
    Annotated[ClassProbabilityBelow, Tag("ClassProbabilityBelow")]
    | Annotated[DecisionBoundaryBand, Tag("DecisionBoundaryBand")]
    | Annotated[JsonPathCondition, Tag("JsonPath")]
    | Annotated[SamplingCondition, Tag("Sampling")]
    | Annotated[AndCondition, Tag("And")]
    | Annotated[OrCondition, Tag("Or")],
    Discriminator(
        _kind,
        custom_error_type="condition_kind",
        custom_error_message="each condition needs And, Or, or a ConditionType among "
        "ClassProbabilityBelow, DecisionBoundaryBand, JsonPath, Sampling",
    ),
]
AndCondition.model_rebuild()
OrCondition.model_rebuild()


def _depth(condition: Any) -> int:
    if isinstance(condition, AndCondition):
        return 1 + max(_depth(item) for item in condition.And)
    if isinstance(condition, OrCondition):
        return 1 + max(_depth(item) for item in condition.Or)
    return 1


class ActivationConditions(_Data):
    """A2I's `HumanLoopActivationConditions`: the listed conditions are combined with Or."""

    Conditions: list[Condition] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _shallow(self) -> ActivationConditions:
        if max(_depth(item) for item in self.Conditions) > MAX_CONDITION_DEPTH:
            raise ValueError(f"conditions nest deeper than {MAX_CONDITION_DEPTH} levels")
        return self


class HumanLoopConfig(_Data):
    """One endpoint's human loop: when an answer goes to review, and what reviewers choose."""

    activation_conditions: ActivationConditions | None = Field(
        default=None, description="A2I's HumanLoopActivationConditions on the model's output."
    )
    random_sampling_percentage: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Also review this share of all requests (an audit sample), chosen "
        "deterministically by a hash of the request body.",
    )
    labels: list[str] = Field(
        min_length=2, max_length=100, description="The answers a reviewer chooses from."
    )
    instructions: str = Field(default="", max_length=10_000)
    review_dataset: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="Dataset the answers are appended to; default `<endpoint>-reviews`.",
    )
    max_reviews_per_minute: int = Field(
        default=600, ge=1, le=100_000, description="Per gateway replica; extra ones are dropped."
    )

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        seen: set[str] = set()
        for label in labels:
            if not label.strip():
                raise ValueError("a label is empty")
            if label in seen:
                raise ValueError(f"label {label!r} is listed twice")
            seen.add(label)
        return labels

    @model_validator(mode="after")
    def _activates(self) -> HumanLoopConfig:
        if self.activation_conditions is None and self.random_sampling_percentage == 0:
            raise ValueError(
                "set activation_conditions or random_sampling_percentage: this loop never activates"
            )
        return self


@event(owner="deployer", key="endpoint_name")
class HumanLoopConfigured(_Data):
    """An endpoint's human loop was set (or removed: `config` is null); newer revisions win."""

    endpoint_name: str = Field(pattern=ENDPOINT_PATTERN)
    revision: int = Field(ge=1)
    config: HumanLoopConfig | None = None


class Payload(_Data):
    """A request or response body as it was on the wire (text, or base64 for binary)."""

    content_type: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    data: str


@event(owner="gateway", key="endpoint_name")
class HumanReviewRequested(_Data):
    """An answer met its endpoint's human-loop conditions: a person should check it."""

    review_id: str = Field(pattern=r"^[A-Za-z0-9-]{8,64}$", description="The idempotency key.")
    endpoint_name: str
    variant_name: str
    inference_id: str | None = Field(
        default=None, description="X-Amzn-SageMaker-Inference-Id: joins ground truth to capture."
    )
    requested_at: datetime
    reasons: list[str] = Field(description="The conditions that fired.")
    input: Payload
    output: Payload
    labels: list[str] = Field(min_length=2)
    instructions: str = ""
    review_dataset: str


@event(owner="labeling", key="endpoint_name")
class HumanReviewCompleted(_Data):
    """A reviewer answered: the true label of each row of the reviewed request."""

    review_id: str
    endpoint_name: str
    inference_id: str | None = None
    labels: list[str] = Field(min_length=1, description="One answer per row of the request.")
    reviewer: str
    completed_at: datetime
    review_dataset: str


@state_contract(owner="deployer", prefix="deployer/human-loops/")
class HumanLoopConfigView(BaseModel):
    """An endpoint's stored human-loop config, read by the gateway when it starts."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    endpoint_name: str
    revision: int = Field(ge=1)
    config: HumanLoopConfig | None = Field(
        default=None, description="None: removed (the revision is kept so later ones outrank it)."
    )
    updated_at: datetime | None = None
