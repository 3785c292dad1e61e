"""The review queue's HTTP API (`label` scope): list, describe, claim and answer review tasks.

A reviewer is the credential's principal: a claim is theirs until its lease ends, and only the
holder of a live claim may answer.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from cairn.auth import CurrentPrincipal, requires
from cairn.contracts.review_events import HumanReviewRequested
from cairn.service import Service
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.labeling.review import ReviewTask
from services.labeling.review_handlers import DEFAULT_LEASE_S, ReviewQueue


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_name: str | None = Field(default=None, description="Only this endpoint's reviews.")


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(
        min_length=1, max_length=10_000, description="One label per row of the request."
    )


def get_reviews(request: Request) -> ReviewQueue:
    reviews: ReviewQueue = request.app.state.reviews
    return reviews


ReviewsDep = Annotated[ReviewQueue, Depends(get_reviews)]

router = APIRouter(prefix="/reviews", tags=["reviews"])


@router.get("", dependencies=[requires("label")])
async def list_reviews(
    reviews: ReviewsDep,
    status: Annotated[Literal["Pending", "Completed"] | None, Query()] = None,
    endpoint_name: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Review tasks, oldest first, without their payloads."""
    tasks = await asyncio.to_thread(reviews.find, status, endpoint_name, limit)
    return [task.summary() for task in tasks]


@router.get("/{review_id}", dependencies=[requires("label")])
async def describe_review(review_id: str, reviews: ReviewsDep) -> ReviewTask:
    return await asyncio.to_thread(reviews.get, review_id)


@router.post("/claim", dependencies=[requires("label", action="review.claim")])
async def claim_next_review(
    body: ClaimBody, reviews: ReviewsDep, principal: CurrentPrincipal
) -> ReviewTask | None:
    """The oldest waiting task, leased to the caller; null when none waits."""
    return await asyncio.to_thread(reviews.claim_next, principal.name, body.endpoint_name)


@router.post("/{review_id}/claim", dependencies=[requires("label", action="review.claim")])
async def claim_review(
    review_id: str, reviews: ReviewsDep, principal: CurrentPrincipal
) -> ReviewTask:
    return await asyncio.to_thread(reviews.claim, review_id, principal.name)


@router.post("/{review_id}/answer", dependencies=[requires("label", action="review.answer")])
async def answer_review(
    review_id: str, body: AnswerBody, reviews: ReviewsDep, principal: CurrentPrincipal
) -> ReviewTask:
    """Record the caller's answer; it becomes ground truth and rows of the review dataset."""
    return await reviews.answer(review_id, principal.name, body.labels)


def install_reviews(service: Service, lease_s: float = DEFAULT_LEASE_S) -> ReviewQueue:
    """The review queue on the labeling service: its subscription, routes and start-up repair."""
    reviews = ReviewQueue(service.store, service.publish, lease_s=lease_s)
    service.api.state.reviews = reviews
    service.on(HumanReviewRequested)(reviews.on_review_requested)
    service.background("review-completions", reviews.republish_forever)
    service.include_router(router)
    return reviews
