"""`cairn review list | describe | claim | answer | loop`: human review of live predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from cairn_sdk import review
from rich.console import Console

from cairn_cli.sdk_common import (
    EXIT_BAD_INPUT,
    HomeOption,
    JsonOption,
    TargetOption,
    client_for,
    key_value_table,
    print_json,
    service_errors,
    table,
)

review_app = typer.Typer(
    name="review",
    help="Human review of live predictions: endpoints' human loops and the review queue.",
    no_args_is_help=True,
)
loop_app = typer.Typer(name="loop", help="An endpoint's human loop (when answers go to review).")
review_app.add_typer(loop_app)


@review_app.command("list")
def list_reviews(
    status: Annotated[str | None, typer.Option("--status", help="Pending or Completed.")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="One endpoint's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Review tasks, oldest first."""
    with service_errors(), client_for(target, home) as client:
        found = review.list_reviews(client, status=status, endpoint_name=endpoint, limit=limit)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            item["review_id"],
            item["endpoint_name"],
            item.get("inference_id") or "",
            item["status"],
            ", ".join(item["reasons"]),
            item.get("reviewer") or item.get("claimed_by") or "",
            ",".join(item.get("answer") or []),
        )
        for item in found
    ]
    columns = ("review", "endpoint", "inference id", "status", "why", "reviewer", "answer")
    Console().print(table("Reviews", columns, rows))


@review_app.command("describe")
def describe(
    review_id: str,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """One task: the captured request and answer, why it was sent, and the reviewer's answer."""
    with service_errors(), client_for(target, home) as client:
        task = review.describe_review(client, review_id)
    if as_json:
        print_json(task)
        return
    request = task["request"]
    Console().print(key_value_table(f"Review {review_id}", _flat(task, request)))


def _flat(task: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoint": f"{request['endpoint_name']} ({request['variant_name']})",
        "inference id": request.get("inference_id") or "",
        "requested at": request["requested_at"],
        "why": ", ".join(request["reasons"]),
        "input": request["input"]["data"][:500],
        "output": request["output"]["data"][:500],
        "labels": ", ".join(request["labels"]),
        "status": task["status"],
        "claimed by": task.get("claimed_by") or "",
        "answer": ", ".join(task.get("answer") or []),
        "reviewer": task.get("reviewer") or "",
    }


@review_app.command("claim")
def claim(
    review_id: Annotated[str | None, typer.Argument(help="Default: the oldest waiting.")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint")] = None,
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Lease a task to yourself (your key needs `label`)."""
    with service_errors(), client_for(target, home) as client:
        task = review.claim_review(client, review_id, endpoint_name=endpoint)
    if as_json:
        print_json(task)
    elif task is None:
        Console().print("no review is waiting")
    else:
        Console().print(
            key_value_table(f"Review {task['request']['review_id']}", _flat(task, task["request"]))
        )


@review_app.command("answer")
def answer(
    review_id: str,
    labels: Annotated[list[str], typer.Argument(help="One label per row of the request.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Answer a task you hold; the answer becomes ground truth for the monitor."""
    with service_errors(), client_for(target, home) as client:
        task = review.answer_review(client, review_id, labels)
    if as_json:
        print_json(task)
    else:
        Console().print(f"review {review_id} answered: {', '.join(task['answer'])}")


@loop_app.command("put")
def put_loop(
    endpoint: str,
    config: Annotated[Path, typer.Option("--config", help="A HumanLoopConfig as JSON.")],
    as_json: JsonOption = False,
    target: TargetOption = None,
    home: HomeOption = None,
) -> None:
    """Set an endpoint's human loop from a JSON file."""
    try:
        body = json.loads(config.read_text())
    except (OSError, ValueError) as error:
        Console(stderr=True).print(f"cannot read {config}: {error}")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    with service_errors(), client_for(target, home) as client:
        stored = review.put_human_loop(client, endpoint, body)
    if as_json:
        print_json(stored)
    else:
        Console().print(f"human loop of {endpoint} is at revision {stored['revision']}")


@loop_app.command("describe")
def describe_loop(
    endpoint: str, as_json: JsonOption = False, target: TargetOption = None, home: HomeOption = None
) -> None:
    """The endpoint's human loop (its config; with --json also its revision)."""
    with service_errors(), client_for(target, home) as client:
        loop = review.describe_human_loop(client, endpoint)
    print_json(loop if as_json else loop["config"])


@loop_app.command("delete")
def delete_loop(endpoint: str, target: TargetOption = None, home: HomeOption = None) -> None:
    """Stop sending the endpoint's answers to review."""
    with service_errors(), client_for(target, home) as client:
        removed = review.delete_human_loop(client, endpoint)
    Console().print(f"human loop of {endpoint} removed (revision {removed['revision']})")


def register(app: typer.Typer) -> None:
    """Add `review` to the `cairn` app."""
    app.add_typer(review_app)
