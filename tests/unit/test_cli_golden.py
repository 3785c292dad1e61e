"""Argument checks of `cairn train | endpoints | invoke`: bad input exits 2 naming the flag."""

from __future__ import annotations

import pytest
from cairn_cli import app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["train", "j", "--channel", "train"], "--channel", "'train' is not NAME=VALUE"),
        (["train", "j"], "--channel", "at least one"),
        (["train", "j", "-c", "train=x", "--device", "tpu"], "--device", "'tpu'"),
        (["train", "j", "-c", "train=x", "-p", "eta"], "-p", "'eta'"),
        (["train", "j", "-c", "x=y", "--image", "i:1", "--metric", "loss"], "--metric", "'loss'"),
        (["endpoints", "create", "e", "--variant", "a=g"], "--variant", "'a=g'"),
        (["endpoints", "create", "e", "-v", "a=g:0"], "--variant", "'a=g:0'"),
        (["endpoints", "create", "e", "-v", "a=g:1", "--rollout", "fast"], "--rollout", "'fast'"),
        (["endpoints", "create", "e", "-v", "a=g:1", "-v", "a=g:2"], "--variant", "repeat"),
        (["endpoints", "weights", "e", "-w", "a=lots"], "--weight", "'lots'"),
        (["invoke", "e"], "--body", "exactly one"),
        (["invoke", "e", "--body", "1,2\n3", "--v2"], "--body", "same number"),
        (["models", "list", "g", "--status", "Maybe"], "--status", "'Maybe'"),
    ],
)
def test_bad_input_exits_2_naming_the_flag_and_value(
    args: list[str], flag: str, value: str
) -> None:
    result = runner.invoke(app, args, env={"CAIRN_TARGET": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert flag in flat and value in flat, flat


def test_a_service_that_is_down_exits_1_with_the_reason() -> None:
    result = runner.invoke(app, ["jobs", "list"], env={"CAIRN_TARGET": "http://127.0.0.1:9"})
    assert result.exit_code == 1
    assert "cannot reach the trainer service" in " ".join(result.output.split())


def test_variant_spec_parses_group_version_and_weight() -> None:
    from cairn_cli.endpoints_cmd import parse_variant

    assert parse_variant("AllTraffic=credit-risk:3:0.5", "--variant") == {
        "variant_name": "AllTraffic",
        "model_package_group": "credit-risk",
        "model_version": 3,
        "initial_weight": 0.5,
    }
