"""The rollout state machine with no I/O: canary and linear steps, alarms and rollback.

Each function maps an endpoint document (and a clock reading) to the next one, so the store
layer runs it inside a conditional-write retry loop and a restart resumes where it stopped.
"""

from __future__ import annotations

from datetime import datetime

from cairn.contracts.events import (
    EndpointMetricsReported,
    RolloutPolicy,
    VariantState,
    VariantTraffic,
)

from services.deployer.documents import EndpointConfig, EndpointDoc, RollbackRecord, RolloutState

BASELINE_SUFFIX = "-previous"
WEIGHT_DIGITS = 6

Alarm = tuple[str, str]  # (reason, variant name)


def first_step_percent(policy: RolloutPolicy) -> float:
    return policy.canary_percent if policy.mode == "canary" else policy.linear_step_percent


def next_step_percent(policy: RolloutPolicy, current_percent: float) -> float:
    """Traffic share of the new variants after the next bake: canary jumps to 100, linear steps."""
    if policy.mode == "canary":
        return 100.0
    return min(100.0, current_percent + policy.linear_step_percent)


def _scaled(variants: list[VariantState], share: float) -> list[VariantState]:
    total = sum(v.weight for v in variants)
    if total <= 0:
        return [v.model_copy(update={"weight": 0.0}) for v in variants]
    return [
        v.model_copy(update={"weight": round(share * v.weight / total, WEIGHT_DIGITS)})
        for v in variants
    ]


def blend(
    baseline: list[VariantState], target: list[VariantState], percent: float
) -> list[VariantState]:
    """Serve `percent`% of traffic with the target variants and the rest with the baseline.

    A baseline variant whose name the target reuses is served as `<name>-previous` meanwhile, so
    the new model's metrics and captures carry the name it will keep.
    """
    if percent >= 100:
        return target
    names = {v.variant_name for v in target}
    old = [
        v.model_copy(update={"variant_name": v.variant_name + BASELINE_SUFFIX})
        if v.variant_name in names
        else v
        for v in baseline
    ]
    return _scaled(target, percent / 100) + _scaled(old, 1 - percent / 100)


def start(
    doc: EndpointDoc,
    config: EndpointConfig,
    target: tuple[list[VariantState], VariantState | None],
    watched: list[str],
    now: datetime,
) -> EndpointDoc:
    """The next revision of `doc` serving the first step of a rollout towards `target`."""
    production, shadow = target
    percent = first_step_percent(config.rollout)
    rollout = RolloutState(
        policy=config.rollout,
        step=1,
        traffic_percent=percent,
        started_at=now,
        phase_started_at=now,
        target_variants=production,
        target_shadow=shadow,
        watched_variants=watched,
        baseline_variants=doc.production_variants,
        baseline_shadow=doc.shadow_variant,
        baseline_config=doc.config or config,
        baseline_revision=doc.revision,
    )
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "updated_at": now,
            "config": config,
            "status": "Updating",
            "rollout": rollout,
            "production_variants": blend(doc.production_variants, production, percent),
            "shadow_variant": shadow,
        }
    )


def advance_rollout(doc: EndpointDoc, now: datetime) -> EndpointDoc:
    """The endpoint after the bake time of the current step, if it has passed: next step or done."""
    rollout = doc.rollout
    if (
        rollout is None
        or (now - rollout.phase_started_at).total_seconds() < rollout.policy.bake_time_s
    ):
        return doc
    percent = next_step_percent(rollout.policy, rollout.traffic_percent)
    base = doc.model_copy(update={"revision": doc.revision + 1, "updated_at": now})
    if percent >= 100:
        return base.model_copy(
            update={
                "status": "InService",
                "rollout": None,
                "production_variants": rollout.target_variants,
                "shadow_variant": rollout.target_shadow,
            }
        )
    step = rollout.model_copy(
        update={"step": rollout.step + 1, "traffic_percent": percent, "phase_started_at": now}
    )
    return base.model_copy(
        update={
            "rollout": step,
            "production_variants": blend(
                rollout.baseline_variants, rollout.target_variants, percent
            ),
        }
    )


def _tallied(rollout: RolloutState, watched: list[VariantTraffic]) -> RolloutState:
    p99s = (v.p99_latency_ms for v in watched if v.requests)
    return rollout.model_copy(
        update={
            "observed_requests": rollout.observed_requests + sum(v.requests for v in watched),
            "observed_errors": rollout.observed_errors + sum(v.errors for v in watched),
            "worst_p99_latency_ms": max([rollout.worst_p99_latency_ms, *p99s]),
        }
    )


def _alarm(rollout: RolloutState, watched: list[VariantTraffic], min_requests: int) -> Alarm | None:
    """The tripped alarm's reason and variant, or None while the new variants look healthy."""
    policy, requests, errors = rollout.policy, rollout.observed_requests, rollout.observed_errors
    if requests < min_requests:
        return None
    if errors / requests > policy.max_error_rate:
        variant = max(watched, key=lambda v: v.errors).variant_name
        reason = (
            f"error rate {errors / requests:.1%} over {requests} requests on the new variants "
            f"exceeds max_error_rate {policy.max_error_rate:.1%}"
        )
        return reason, variant
    limit = policy.max_p99_latency_ms
    slow = [v for v in watched if limit is not None and v.requests and v.p99_latency_ms > limit]
    if not slow or limit is None:
        return None
    reason = (
        f"p99 latency {slow[0].p99_latency_ms:.1f} ms of variant {slow[0].variant_name!r} "
        f"exceeds max_p99_latency_ms {limit:.1f}"
    )
    return reason, slow[0].variant_name


def observe_metrics(
    doc: EndpointDoc,
    report: EndpointMetricsReported,
    reported_at: datetime,
    min_requests: int,
) -> tuple[EndpointDoc, str | None, str | None]:
    """Add a traffic report to the rollout's tally; the alarm's reason and variant if it trips.

    The error-rate alarm needs at least `min_requests` requests on the new variants, so one early
    failure does not roll back a healthy model; the latency alarm fires on a window's p99.
    """
    rollout = doc.rollout
    if rollout is None or reported_at < rollout.started_at:
        return doc, None, None
    watched = [v for v in report.variants if v.variant_name in rollout.watched_variants]
    if not watched:
        return doc, None, None
    tallied = _tallied(rollout, watched)
    updated = doc.model_copy(update={"rollout": tallied})
    alarm = _alarm(tallied, watched, min_requests)
    if alarm is None:
        return updated, None, None
    return updated, alarm[0], alarm[1]


def roll_back(doc: EndpointDoc, variant_name: str, reason: str, now: datetime) -> EndpointDoc:
    """Restore the revision the rollout started from, as a new revision, recording why."""
    rollout = doc.rollout
    if rollout is None:
        return doc
    record = RollbackRecord(
        rolled_back_variant=variant_name,
        restored_revision=rollout.baseline_revision,
        reason=reason,
        at=now,
    )
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "status": "InService",
            "production_variants": rollout.baseline_variants,
            "shadow_variant": rollout.baseline_shadow,
            "config": rollout.baseline_config,
            "rollout": None,
            "last_rollback": record,
            "updated_at": now,
        }
    )
